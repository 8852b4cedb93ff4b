"""Word-vector evaluation as gensim's ``KeyedVectors`` does it, on the files from gensim's wheel:
WordSim-353 and SimLex-999 (Spearman ρ of cosine similarity against human scores, pairs with a word
outside the vocabulary skipped) and the Google analogies (3CosAdd over unit vectors, restricted to the N
most frequent words, questions with a word outside them skipped). Words are compared lower-cased.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from etl.core.errors import LakedlError, MissingInput


class NotInVocabulary(LakedlError, KeyError):
    """A queried word the vectors do not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

PAIR_FILES = {"ws353": "wordsim353.tsv", "simlex": "simlex999.txt"}
ANALOGY_FILE = "questions-words.txt"


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)


def read_pairs(path: Path) -> list[tuple[str, str, float]]:
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        a, b, score = line.split("\t")[:3]
        pairs.append((a.lower(), b.lower(), float(score)))
    return pairs


def word_pairs(words: list[str], vectors: np.ndarray, path: Path) -> dict:
    """Spearman ρ between cosine similarities and the file's human scores, over the pairs in vocabulary."""
    from scipy.stats import spearmanr

    index = {w: i for i, w in enumerate(words)}
    u = unit(vectors)
    pairs = read_pairs(path)
    known = [(index[a], index[b], s) for a, b, s in pairs if a in index and b in index]
    if len(known) < 2:
        return {"spearman": float("nan"), "pairs": len(known), "oov_ratio": 1.0}
    sims = [float(u[i] @ u[j]) for i, j, _ in known]
    rho = spearmanr(sims, [s for _, _, s in known]).statistic
    return {"spearman": round(float(rho), 4), "pairs": len(known), "oov_ratio": round(1 - len(known) / len(pairs), 4)}


def read_analogies(path: Path) -> list[tuple[str, str, str, str, str]]:
    """(section, a, b, c, expected) for each question line."""
    section, out = "", []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
        elif line.strip():
            a, b, c, d = line.lower().split()
            out.append((section, a, b, c, d))
    return out


def analogies(words: list[str], vectors: np.ndarray, path: Path, restrict_vocab: int = 30_000,
              counts: np.ndarray | None = None, batch: int = 1024) -> dict:
    """Accuracy of ``b - a + c ≈ d`` among the ``restrict_vocab`` most frequent words (``counts`` order;
    the given order when None), excluding a, b and c from the answers, as gensim's
    ``evaluate_word_analogies``."""
    order = np.argsort(-counts, kind="stable") if counts is not None else np.arange(len(words))
    top = order[:restrict_vocab]
    index = {words[i]: k for k, i in enumerate(top)}
    u = unit(vectors[top])
    questions = read_analogies(path)
    known = [(s, index[a], index[b], index[c], index[d]) for s, a, b, c, d in questions
             if a in index and b in index and c in index and d in index]
    correct_by_section: dict[str, list[int]] = {}
    for lo in range(0, len(known), batch):
        part = known[lo:lo + batch]
        q = np.asarray([k[1:] for k in part], np.int64)
        target = u[q[:, 1]] - u[q[:, 0]] + u[q[:, 2]]
        scores = unit(target) @ u.T
        rows = np.arange(len(part))
        for col in range(3):
            scores[rows, q[:, col]] = -np.inf
        hit = scores.argmax(1) == q[:, 3]
        for (section, *_), h in zip(part, hit, strict=True):
            tally = correct_by_section.setdefault(section, [0, 0])
            tally[0] += int(h)
            tally[1] += 1
    correct = sum(c for c, _ in correct_by_section.values())
    return {"accuracy": round(correct / len(known), 4) if known else float("nan"), "questions": len(known),
            "skipped": len(questions) - len(known),
            "sections": {s: round(c / n, 4) for s, (c, n) in correct_by_section.items()}}


def evaluate(words: list[str], vectors: np.ndarray, eval_dir: str | Path, restrict_vocab: int = 30_000,
             counts: np.ndarray | None = None) -> dict:
    """All three benchmarks; the missing files are named in the error (``lakedl data fetch --source gensim_eval``)."""
    eval_dir = Path(eval_dir)
    missing = [f for f in (*PAIR_FILES.values(), ANALOGY_FILE) if not (eval_dir / f).is_file()]
    if missing:
        raise MissingInput(f"{eval_dir} lacks {', '.join(missing)}: run `lakedl data fetch --source gensim_eval`")
    out: dict = {}
    for key, fname in PAIR_FILES.items():
        r = word_pairs(words, vectors, eval_dir / fname)
        out.update({f"{key}_spearman": r["spearman"], f"{key}_pairs": r["pairs"], f"{key}_oov_ratio": r["oov_ratio"]})
    a = analogies(words, vectors, eval_dir / ANALOGY_FILE, restrict_vocab, counts)
    out.update({"analogy_accuracy": a["accuracy"], "analogy_questions": a["questions"], "analogy_skipped": a["skipped"],
                "analogy_sections": a["sections"]})
    return out


# ------------------------------------------------------------------------------------------------
# Queries (lakedl w2v neighbors / analogy)
# ------------------------------------------------------------------------------------------------
def _index_of(words: list[str], word: str) -> int:
    import difflib

    lowered = word.lower()
    try:
        return words.index(lowered)
    except ValueError:
        close = difflib.get_close_matches(lowered, words, n=5)
        hint = f"; close spellings: {', '.join(close)}" if close else ""
        raise NotInVocabulary(f"{word!r} is not in the vocabulary ({len(words):,} words){hint}") from None


def nearest(words: list[str], vectors: np.ndarray, query: np.ndarray, k: int, exclude: set[int]) -> list[tuple[str, float]]:
    """The ``k`` words of highest cosine similarity to ``query``, leaving out the ``exclude`` ids."""
    scores = unit(vectors) @ (query / (np.linalg.norm(query) or 1.0))
    scores[list(exclude)] = -np.inf
    top = np.argpartition(-scores, min(k, len(words) - 1))[:k]
    top = top[np.argsort(-scores[top])]
    return [(words[i], round(float(scores[i]), 4)) for i in top if np.isfinite(scores[i])]


def neighbors(words: list[str], vectors: np.ndarray, word: str, k: int = 10) -> list[tuple[str, float]]:
    i = _index_of(words, word)
    return nearest(words, vectors, unit(vectors[i:i + 1])[0], k, {i})


def analogy(words: list[str], vectors: np.ndarray, a: str, b: str, c: str, k: int = 10) -> list[tuple[str, float]]:
    """``a`` is to ``b`` as ``c`` is to ...: the words nearest ``b - a + c`` (unit vectors, 3CosAdd)."""
    ia, ib, ic = (_index_of(words, w) for w in (a, b, c))
    u = unit(vectors[[ia, ib, ic]])
    return nearest(words, vectors, u[1] - u[0] + u[2], k, {ia, ib, ic})
