"""The batch (Arrow) word encoder gives the per-row Python path's ``text_norm`` and ids on every row of every real
corpus (the four VADER sets, SST with its phrases, GCIDE's definitions) and on generated edge cases: characters
whose NFKC or lower case is context-dependent, HTML entities that turn into them, control characters, placeholders,
apostrophes and the words that border them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from etl.sources.sst import labelled_nodes, parse_tree
from etl.text.fastword import encode_arrow, normalize_arrow, tokens_arrow
from etl.text.textprep import UNK, WORD_SPECIALS, Normalizer, TextTokenizer, word_tokens

EDGE = [
    "", "   ", "ΟΔΟΣ ΣΟΦΟΣ", "&Sigma;ΑΣ &amp;amp; ＆amp; ﹠lt;", "a\x01b \x01", "İstanbul", "HTTP://Example.COM/x?q=1 www.A.b",
    "ﬁne ｆｕｌｌ ②½² x²", "don't don'' it’s ’tis o'", "e\u0301 ु क्षि", "tab\tnew\nline\u2009thin\x1cfs\u3000",
    "<url> <Foo> <a1> <>", "<a>b> <ab'c> <<a> <a<b> a<b>c <>x> <a", "a''b 'a a' ’’x x’ y’z q'’r 1'2 _'_", "😀👍🏽 ok!!", "_under_ score__", "ẞ ß ǅ ǈ", "\u0130\u0131 \u03a3\u03c2", "a" * 3000,
]


def corpora(raw: Path, sst: Path) -> list[str]:
    texts = []
    for path in sorted([*(raw / "reviews").glob("vader_*.jsonl"), *(raw / "text").glob("*.jsonl")]):
        for line in path.read_text(encoding="utf-8").splitlines():
            text = json.loads(line).get("text")
            texts.append(text if isinstance(text, str) else "")
    for split in ("train", "dev", "test"):
        for line in (sst / f"{split}.txt").read_text(encoding="utf-8").splitlines():
            texts.extend(" ".join(node.tokens) for _, node in labelled_nodes(parse_tree(line), phrases=True))
    return texts


@pytest.fixture(scope="module")
def texts(raw_data, sst_dir) -> list[str]:
    found = corpora(raw_data, sst_dir)
    assert len(found) > 500_000  # 23,703 VADER rows, ~254k GCIDE definitions, ~240k SST phrases
    return found + EDGE


def python_ids(tok: TextTokenizer, norm: list[str], max_len: int) -> list[list[int]]:
    index = {t: i for i, t in enumerate(json.loads(tok.payload))}
    return [[index.get(t, UNK) for t in word_tokens(text)][:max_len] for text in norm]


@pytest.mark.parametrize("settings", [{}, {"lowercase": False, "nfkc": False}, {"url_token": None, "html_unescape": False},
                                      {"number_token": "<num>"}], ids=["default", "cased_raw", "no_url_no_html", "numbers"])
def test_batch_normalizer_equals_the_python_one(texts, settings):
    """The default settings on every row; the other settings on every 7th row and the edge cases."""
    normalizer = Normalizer(**settings)
    texts = texts if not settings else texts[::7] + EDGE
    arrow = normalize_arrow(pa.array(texts, pa.string()), normalizer).to_pylist()
    python = [normalizer(t) for t in texts]
    differ = [(t, a, p) for t, a, p in zip(texts, arrow, python) if a != p]
    assert not differ, differ[:5]


def test_batch_encoder_equals_the_python_one_on_every_row(texts):
    normalizer = Normalizer()
    norm = [normalizer(t) for t in texts]
    tokens = tokens_arrow(pa.array(norm, pa.string())).to_pylist()
    differ = [(n, a, word_tokens(n)) for n, a in zip(norm, tokens) if a != word_tokens(n)]
    assert not differ, differ[:5]
    counts = Counter(t for text in norm[::3] for t in word_tokens(text))  # a third of the rows: unknown words too
    tok = TextTokenizer("word", json.dumps([*WORD_SPECIALS, *(t for t, c in counts.most_common(40_000) if c >= 2)]))
    for max_len in (8, 4096):
        offsets, ids = encode_arrow(pa.array(norm, pa.string()), tok.payload, max_len, UNK)
        arrow = np.split(ids, offsets[1:-1])
        expected = python_ids(tok, norm, max_len)
        assert len(arrow) == len(expected) and offsets[-1] == sum(map(len, expected))
        differ = [(n, list(a), e) for n, a, e in zip(norm, arrow, expected) if list(a) != e]
        assert not differ, differ[:5]
    assert any(UNK in e for e in expected) and any(len(e) == 8 for e in python_ids(tok, norm, 8))


def test_vocabulary_lookup_keeps_the_first_of_duplicates_and_reads_non_ascii_tokens():
    """The hash table's edge cases: a word listed twice keeps its first id (as a list index would), a word
    that shares a hash slot's neighbourhood still finds its own id, an empty vocabulary knows no word."""
    payload = json.dumps([*WORD_SPECIALS, "a", "ça", "a", "naïve", "<url>", "’"])
    offsets, ids = encode_arrow(pa.array(["a ça naïve <url> ’ b", ""], pa.string()), payload, 16, UNK)
    assert offsets.tolist() == [0, 6, 6]
    assert ids.tolist() == [4, 5, 7, 8, 9, UNK]
    offsets, ids = encode_arrow(pa.array(["a b"], pa.string()), json.dumps([]), 16, UNK)
    assert ids.tolist() == [UNK, UNK]
