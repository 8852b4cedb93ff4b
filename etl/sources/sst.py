"""Stanford Sentiment Treebank: labelled PTB trees → canonical review records.

A tree line looks like ``(3 (2 The) (2 Rock) ...)``; every node carries a label 0..4 and the root's
label is the sentence's. SST-5 uses the root label; SST-2 drops 2 and maps 0,1 → 0 and 3,4 → 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from etl.core.errors import LakedlError, MissingInput
from etl.sources.fetch import write_jsonl_atomic

SPLITS = ("train", "dev", "test")


class TreeError(LakedlError, ValueError):
    """A line that is not a well-formed labelled tree; the message gives file, line and position."""


@dataclass(frozen=True)
class Node:
    label: int
    tokens: tuple[str, ...]
    children: tuple[Node, ...]

    def subtrees(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.subtrees()


def parse_tree(line: str) -> Node:
    """Parse one labelled binary tree; raises TreeError with the offending position."""
    pos = 0
    text = line.strip()

    def skip_ws() -> None:
        nonlocal pos
        while pos < len(text) and text[pos] == " ":
            pos += 1

    def node() -> Node:
        nonlocal pos
        skip_ws()
        if pos >= len(text) or text[pos] != "(":
            raise TreeError(f"expected '(' at column {pos}")
        pos += 1
        start = pos
        while pos < len(text) and text[pos] not in " ()":
            pos += 1
        raw = text[start:pos]
        if not raw.isdigit() or not 0 <= int(raw) <= 4:
            raise TreeError(f"label {raw!r} at column {start} is not 0..4")
        skip_ws()
        if pos < len(text) and text[pos] == "(":
            kids = []
            while pos < len(text) and text[pos] == "(":
                kids.append(node())
                skip_ws()
            tokens = tuple(t for k in kids for t in k.tokens)
            result = Node(int(raw), tokens, tuple(kids))
        else:
            start = pos
            while pos < len(text) and text[pos] != ")":
                pos += 1
            word = text[start:pos].strip()
            if not word:
                raise TreeError(f"empty leaf at column {start}")
            result = Node(int(raw), (word,), ())
        if pos >= len(text) or text[pos] != ")":
            raise TreeError(f"expected ')' at column {pos}")
        pos += 1
        return result

    root = node()
    skip_ws()
    if pos != len(text):
        raise TreeError(f"unexpected text after the tree at column {pos}")
    return root


def binary_label(fine: int) -> int | None:
    """SST-2 label of an SST-5 label: 0,1 → 0; 3,4 → 1; 2 (neutral) → None."""
    return 0 if fine < 2 else 1 if fine > 2 else None


def labelled_nodes(root: Node, phrases: bool) -> Iterator[tuple[str, Node]]:
    """The sentence (id suffix ``""``) and, with ``phrases``, each distinct labelled subtree that is not
    the whole sentence (id suffix ``-p<j>``)."""
    yield "", root
    if phrases:
        seen = {root.tokens}
        for j, sub in enumerate(root.subtrees()):
            if sub.tokens not in seen:
                seen.add(sub.tokens)
                yield f"-p{j}", sub


def sst_record(review_id: str, node: Node, split: str, source: str) -> dict:
    """The canonical review record of one labelled (sub)tree."""
    return {"review_id": review_id, "business_id": source, "user_id": None, "stars": node.label + 1,
            "text": " ".join(node.tokens), "date": None, "source": source,
            "label": binary_label(node.label), "score": float(node.label), "split": split}


QUARANTINE_DIR = "_quarantine"  # leading '_': Spark's file sources skip it when reading the reviews dir


@dataclass
class SplitReport:
    """Reconciliation of one split: lines read = sentences written + lines quarantined."""

    read: int = 0
    sentences: int = 0
    phrases: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def sst_records(path: Path, split: str, phrases: bool = False, held_out: dict[str, str] | None = None,
                report: SplitReport | None = None, quarantine: list[dict] | None = None) -> Iterator[dict]:
    """Canonical records of one SST file: one per sentence, plus (``phrases``) one per distinct
    labelled subtree that is not the whole sentence. A malformed line, or a line that also appears
    in ``held_out`` (tree line → where it was seen), goes to ``quarantine`` with its reason."""
    report = report if report is not None else SplitReport()
    quarantine = quarantine if quarantine is not None else []

    def reject(lineno: int, line: str, kind: str, detail: str) -> None:
        report.quarantined += 1
        report.reasons[kind] = report.reasons.get(kind, 0) + 1
        quarantine.append({"file": str(path), "line": lineno, "reason": kind, "detail": detail, "raw": line})

    with path.open(encoding="utf-8", errors="strict") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            report.read += 1
            if held_out and line.strip() in held_out:
                reject(lineno, line, "held_out_duplicate",
                       f"identical to {held_out[line.strip()]}: a held-out sentence must not be trained on")
                continue
            try:
                root = parse_tree(line)
            except TreeError as exc:
                reject(lineno, line, "malformed_tree", f"{path}:{lineno}: {exc}")
                continue
            report.sentences += 1
            for suffix, node in labelled_nodes(root, phrases):
                report.phrases += bool(suffix)
                yield sst_record(f"sst-{split}-{lineno}{suffix}", node, split, "sst_phrase" if suffix else "sst")


def _held_out_lines(src: Path) -> dict[str, str]:
    seen: dict[str, str] = {}
    for split in ("dev", "test"):
        with (src / f"{split}.txt").open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    seen.setdefault(line.strip(), f"{split}.txt:{lineno}")
    return seen


def convert_sst(sst_dir: str | os.PathLike, out_dir: str | os.PathLike, phrases: bool = False) -> dict[str, dict]:
    """Write ``out_dir/sst_<split>.jsonl`` for train/dev/test (``phrases`` adds train's subtrees).

    Train lines identical to a dev or test line are quarantined (the copy of SST on the developer
    machines has dev.txt appended to train.txt), as are malformed lines; each quarantined line is kept
    with its reason in ``out_dir/_quarantine/sst_<split>.jsonl``. Returns a reconciliation per split."""
    src = Path(sst_dir)
    out = Path(out_dir)
    missing = [s for s in SPLITS if not (src / f"{s}.txt").is_file()]
    if missing:
        raise MissingInput(
            f"{src} is not an SST directory: missing {', '.join(f'{s}.txt' for s in missing)}")
    held_out = _held_out_lines(src)
    result: dict[str, dict] = {}
    for split in SPLITS:
        report, rejected = SplitReport(), []
        records = sst_records(src / f"{split}.txt", split, phrases and split == "train",
                              held_out if split == "train" else None, report, rejected)
        write_jsonl_atomic(records, out / f"sst_{split}.jsonl")
        qfile = out / QUARANTINE_DIR / f"sst_{split}.jsonl"
        if rejected:
            write_jsonl_atomic(rejected, qfile)
        else:
            qfile.unlink(missing_ok=True)
        if report.read != report.sentences + report.quarantined:
            raise RuntimeError(f"SST {split}: counts do not reconcile: {report}")
        result[f"sst_{split}"] = asdict(report)
    return result


def run_data_sst(cfg) -> dict[str, int]:
    """Convert SST trees to canonical review JSON lines (rows written per split)."""
    from etl.sources.fetch import REVIEWS_DIR

    out = cfg.sst.out_dir or str(Path(cfg.paths.raw_dir) / REVIEWS_DIR)
    return convert_sst(cfg.sst.dir, out, cfg.sst.phrases)
