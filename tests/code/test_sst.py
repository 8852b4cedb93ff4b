"""SST tree parsing and conversion, on the real treebank and on malformed lines."""

from __future__ import annotations

import json
import re

import pytest

from etl.sources.sst import TreeError, binary_label, convert_sst, parse_tree


def test_parse_tree_labels_tokens_and_subtrees():
    root = parse_tree("(3 (2 (2 The) (2 Rock)) (4 (3 is) (4 great)))")
    assert root.label == 3
    assert root.tokens == ("The", "Rock", "is", "great")
    assert [n.label for n in root.subtrees()] == [3, 2, 2, 2, 4, 3, 4]


def test_leaves_keep_punctuation_and_escaped_brackets():
    root = parse_tree("(2 (2 -LRB-) (2 (2 it) (2 's)) (2 -RRB-))")
    assert root.tokens == ("-LRB-", "it", "'s", "-RRB-")


@pytest.mark.parametrize("line, where", [
    ("(3 (2 The) (2 Rock)", "expected ')'"),
    ("(7 word)", "label '7'"),
    ("(x word)", "label 'x'"),
    ("(2 )", "empty leaf"),
    ("(2 a) (2 b)", "unexpected text"),
    ("2 a", "expected '('"),
])
def test_malformed_trees_are_rejected_with_position(line, where):
    with pytest.raises(TreeError, match=re.escape(where)):
        parse_tree(line)


def test_binary_label_mapping():
    assert [binary_label(i) for i in range(5)] == [0, 0, None, 1, 1]


def test_bad_lines_are_quarantined_with_reason_and_counts_reconcile(tmp_path):
    src = tmp_path / "sst"
    src.mkdir()
    (src / "train.txt").write_text("(3 (2 fine) (3 line))\n(3 (2 broken)\n\n(9 bad)\n(1 (1 held) (2 out))\n")
    (src / "dev.txt").write_text("(1 (1 held) (2 out))\n")
    (src / "test.txt").write_text("(4 (4 good) (2 test))\n")
    report = convert_sst(src, tmp_path / "out")
    assert report["sst_train"]["read"] == 4
    assert report["sst_train"]["sentences"] == 1
    assert report["sst_train"]["quarantined"] == 3
    assert report["sst_train"]["reasons"] == {"malformed_tree": 2, "held_out_duplicate": 1}
    rejected = [json.loads(x) for x in (tmp_path / "out" / "_quarantine" / "sst_train.jsonl").open()]
    assert [r["line"] for r in rejected] == [2, 4, 5]
    assert "train.txt:2: expected ')'" in rejected[0]["detail"]
    assert rejected[0]["raw"] == "(3 (2 broken)"
    assert "dev.txt:1" in rejected[2]["detail"]
    assert report["sst_dev"] == {"read": 1, "sentences": 1, "phrases": 0, "quarantined": 0, "reasons": {}}
    assert not (tmp_path / "out" / "_quarantine" / "sst_dev.jsonl").exists()


def test_real_sst_converts_with_published_split_sizes(sst_dir, tmp_path):
    report = convert_sst(sst_dir, tmp_path)
    # The shared copy's train.txt is the 8,544 training trees followed by all 1,101 dev trees. Those,
    # and 4 short training sentences that SST itself repeats in dev ("Hey Arnold !") or test
    # ("No. .", "What 's next ?" twice), are quarantined: no held-out sentence is trained on.
    assert report["sst_train"]["read"] == 9645
    assert report["sst_train"]["reasons"] == {"held_out_duplicate": 1105}
    assert {k: v["sentences"] for k, v in report.items()} == {"sst_train": 8540, "sst_dev": 1101, "sst_test": 2210}
    binary = {}
    for split in ("train", "dev", "test"):
        rows = [json.loads(line) for line in (tmp_path / f"sst_{split}.jsonl").open()]
        binary[split] = sum(r["label"] is not None for r in rows)
        assert {r["split"] for r in rows} == {split}
        assert all(1 <= r["stars"] <= 5 and r["text"] for r in rows)
        assert len({r["review_id"] for r in rows}) == len(rows)
    # SST-2 sizes from the README (6,920 train less the 3 non-neutral sentences shared with test)
    assert binary == {"train": 6917, "dev": 872, "test": 1821}
    first = json.loads((tmp_path / "sst_train.jsonl").open().readline())
    assert first["text"].startswith("The Rock is destined to be the 21st Century 's new")
    assert first["stars"] == 4 and first["label"] == 1 and first["source"] == "sst"


def test_phrase_level_adds_distinct_labelled_subtrees_of_train_only(sst_dir, tmp_path):
    report = convert_sst(sst_dir, tmp_path, phrases=True)
    assert report["sst_dev"]["phrases"] == 0 and report["sst_test"]["phrases"] == 0
    assert report["sst_train"]["phrases"] > 100_000  # ~150k distinct labelled phrases in train
    phrases = [json.loads(line) for line in (tmp_path / "sst_train.jsonl").open()]
    assert sum(r["source"] == "sst" for r in phrases) == 8540
    assert sum(r["source"] == "sst_phrase" for r in phrases) == report["sst_train"]["phrases"]
    assert len({r["review_id"] for r in phrases}) == len(phrases)


def test_not_an_sst_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing train.txt, dev.txt, test.txt"):
        convert_sst(tmp_path, tmp_path / "out")
