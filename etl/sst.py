"""Stanford Sentiment Treebank: labelled PTB trees → canonical review records.

A tree line looks like ``(3 (2 The) (2 Rock) ...)``; every node carries a label 0..4 and the root's
label is the sentence's. SST-5 uses the root label; SST-2 drops 2 and maps 0,1 → 0 and 3,4 → 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from etl.fetch import write_jsonl_atomic

SPLITS = ("train", "dev", "test")


class TreeError(ValueError):
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


def _record(review_id: str, node: Node, split: str, source: str) -> dict:
    return {"review_id": review_id, "business_id": source, "user_id": None, "stars": node.label + 1,
            "text": " ".join(node.tokens), "date": None, "source": source,
            "label": binary_label(node.label), "score": float(node.label), "split": split}


def sst_records(path: Path, split: str, phrases: bool = False) -> Iterator[dict]:
    """Canonical records of one SST file: one per sentence, plus (``phrases``) one per distinct
    labelled subtree that is not the whole sentence."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                root = parse_tree(line)
            except TreeError as exc:
                raise TreeError(f"{path}:{lineno}: {exc}") from None
            yield _record(f"sst-{split}-{lineno}", root, split, "sst")
            if phrases:
                seen = {root.tokens}
                for j, sub in enumerate(root.subtrees()):
                    if sub.tokens in seen:
                        continue
                    seen.add(sub.tokens)
                    yield _record(f"sst-{split}-{lineno}-p{j}", sub, split, "sst_phrase")


def convert_sst(sst_dir: str | os.PathLike, out_dir: str | os.PathLike, phrases: bool = False) -> dict[str, int]:
    """Write ``out_dir/sst_<split>.jsonl`` for train/dev/test; ``phrases`` adds train's subtrees."""
    src = Path(sst_dir)
    missing = [s for s in SPLITS if not (src / f"{s}.txt").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{src} is not an SST directory: missing {', '.join(f'{s}.txt' for s in missing)}")
    return {f"sst_{split}": write_jsonl_atomic(sst_records(src / f"{split}.txt", split, phrases and split == "train"),
                                               Path(out_dir) / f"sst_{split}.jsonl")
            for split in SPLITS}
