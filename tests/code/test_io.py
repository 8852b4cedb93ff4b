"""etl/core/io.py: input paths checked before Spark starts, and local globs handed to Spark as files."""

from __future__ import annotations

import pytest

from etl.core.errors import MissingInput
from etl.core.io import check_paths, expand_globs


def test_local_globs_become_their_files_and_the_rest_stays_as_given(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.txt"):
        (tmp_path / name).write_text("{}\n")
    assert expand_globs([f"{tmp_path}/*.jsonl", str(tmp_path), "s3://bucket/x*.json"]) == [
        str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), str(tmp_path), "s3://bucket/x*.json"]
    assert expand_globs([f"file://{tmp_path}/c.*"]) == [str(tmp_path / "c.txt")]
    check_paths([f"{tmp_path}/*.jsonl"], "input.paths")
    with pytest.raises(MissingInput, match=r"input.also\[0\].paths: .*\*.csv matches no file"):
        check_paths([f"{tmp_path}/*.csv"], "input.also[0].paths")
