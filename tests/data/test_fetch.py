"""Registry data acquisition: real downloads, checksums, idempotence, no half files on failure."""

from __future__ import annotations

import dataclasses
import gzip
import json
import struct

import pytest

from etl.sources.fetch import (
    MANIFEST,
    SOURCES,
    Artifact,
    FetchError,
    fetch_all,
    fetch_source,
    is_complete,
    label_from_score,
    stars_from_score,
)


def test_vader_corpora_have_their_published_sizes(raw_data):
    counts = {}
    for path in sorted((raw_data / "reviews").glob("vader_*.jsonl")):
        rows = [json.loads(line) for line in path.open(encoding="utf-8")]
        counts[path.stem] = len(rows)
        assert len({r["review_id"] for r in rows}) == len(rows)
        assert all(-4.0 <= r["score"] <= 4.0 and 1 <= r["stars"] <= 5 and r["text"] for r in rows)
        assert set(rows[0]) == {"review_id", "business_id", "user_id", "stars", "text", "date", "source",
                                "label", "score", "split"}
    assert counts == {"vader_amazon": 3708, "vader_movie": 10605, "vader_nyt": 5190, "vader_tweets": 4200}


def test_vader_first_movie_row_keeps_original_score(raw_data):
    first = json.loads((raw_data / "reviews" / "vader_movie.jsonl").open(encoding="utf-8").readline())
    assert first["review_id"] == "vader_movie-1"
    assert first["score"] == pytest.approx(2.26666666667)
    assert first["stars"] == 4 and first["label"] == 1
    assert first["text"].startswith("The Rock is destined to be the 21st Century's new")


def test_fashion_mnist_idx_headers(raw_data):
    expected = {"train-images-idx3-ubyte.gz": (2051, 60000), "train-labels-idx1-ubyte.gz": (2049, 60000),
                "t10k-images-idx3-ubyte.gz": (2051, 10000), "t10k-labels-idx1-ubyte.gz": (2049, 10000)}
    for name, (magic, n) in expected.items():
        with gzip.open(raw_data / "fashion_mnist" / name) as fh:
            assert struct.unpack(">II", fh.read(8)) == (magic, n)


def test_gcide_gensim_and_minilm_files(raw_data):
    with gzip.open(raw_data / "gcide" / "gcide.dict.dz", "rt", encoding="utf-8", errors="replace") as fh:
        assert len(fh.read(1_000_000)) == 1_000_000
    ws = (raw_data / "gensim_eval" / "wordsim353.tsv").read_text().splitlines()
    assert sum(1 for line in ws if line and not line.startswith("#")) == 353
    assert ": capital-common-countries" in (raw_data / "gensim_eval" / "questions-words.txt").read_text()
    config = json.loads((raw_data / "minilm" / "model" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and config["hidden_size"] == 384
    assert (raw_data / "minilm" / "model" / "model.safetensors").stat().st_size > 80_000_000


def test_second_fetch_only_verifies(raw_data):
    report = fetch_all(["vader", "gensim_eval"], raw_data)
    assert report["vader"]["fetched"] is False and report["gensim_eval"]["fetched"] is False
    assert report["vader"]["reviews"]["vader_movie"] == 10605


def test_a_damaged_output_is_noticed_and_refetched(tmp_path):
    src = SOURCES["gensim_eval"]
    out, fetched = fetch_source(src, tmp_path)
    assert fetched and is_complete(out, src.artifact)
    (out / "simlex999.txt").write_text("tampered")
    assert not is_complete(out, src.artifact)
    out, fetched = fetch_source(src, tmp_path)
    assert fetched and is_complete(out, src.artifact)
    assert json.loads((out / MANIFEST).read_text())["version"] == "4.4.0"


def test_missing_package_is_one_clear_error_and_leaves_nothing(tmp_path):
    bogus = dataclasses.replace(SOURCES["vader"], artifact=Artifact(
        "pypi-sdist", "vaderSentiment", "0.0.999", "vaderSentiment-0.0.999.tar.gz", "0" * 64))
    with pytest.raises(FetchError) as err:
        fetch_source(bogus, tmp_path)
    assert "could not fetch PyPI sdist vaderSentiment==0.0.999" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no temp dir, no partial output


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path):
    wrong = dataclasses.replace(SOURCES["vader"], artifact=dataclasses.replace(SOURCES["vader"].artifact,
                                                                              sha256="f" * 64))
    with pytest.raises(FetchError, match="checksum mismatch for vaderSentiment-3.3.2.tar.gz"):
        fetch_source(wrong, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(FetchError, match="unknown source 'imagenet'"):
        fetch_all(["imagenet"], tmp_path)


@pytest.mark.parametrize("score, stars, label", [(-4, 1, 0), (-3.1, 1, 0), (-2, 2, 0), (-0.2, 3, 0), (0, 3, None),
                                                 (0.9, 3, 1), (1.0, 4, 1), (2.3, 4, 1), (3.0, 5, 1), (4, 5, 1)])
def test_score_to_stars_and_label(score, stars, label):
    assert stars_from_score(score) == stars
    assert label_from_score(score) == label
