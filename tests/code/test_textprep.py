"""Normalization and tokenization rules (pure Python parts of the text ETL)."""

from __future__ import annotations

import pytest

from etl.text.textprep import BOS, PAD, UNK, Normalizer, TextTokenizer, load_minilm, train_subword, word_tokens


@pytest.mark.parametrize("raw, expected", [
    ("Ｆｕｌｌｗｉｄｔｈ ﬁne", "fullwidth fine"),                          # NFKC
    ("Fish &amp; Chips &lt;3", "fish & chips <3"),                       # HTML unescape, then lowercase
    ("see https://x.example/a?b=1 now", "see <url> now"),                 # URL placeholder
    ("  lots\tof \n space ", "lots of space"),
])
def test_default_normalizer(raw, expected):
    assert Normalizer()(raw) == expected


def test_number_placeholder_and_case_kept_when_asked():
    norm = Normalizer(lowercase=False, number_token="<num>")
    assert norm("Paid 3,50 for 2 Beers in 2019") == "Paid <num> for <num> Beers in <num>"
    assert Normalizer(url_token=None)("www.site.org") == "www.site.org"


@pytest.mark.parametrize("text, tokens", [
    ("don't stop, it's great!", ["don't", "stop", ",", "it's", "great", "!"]),
    ("see <url> :)", ["see", "<url>", ":", ")"]),
    ("café naïve 10x", ["café", "naïve", "10x"]),
    ("", []),
])
def test_word_tokens(text, tokens):
    assert word_tokens(text) == tokens


def test_word_tokenizer_maps_unknown_words_and_truncates():
    tok = TextTokenizer("word", '["<pad>", "<unk>", "<bos>", "<eos>", "good", "film"]')
    assert tok.encode(["good film", "bad film good"], max_len=2) == [[4, 5], [UNK, 5]]
    assert tok.pad_id == PAD and BOS == 2 and tok.vocab_size == 6


def test_artifact_round_trip_checks_its_content_hash(tmp_path):
    tok = TextTokenizer("word", '["<pad>", "<unk>", "<bos>", "<eos>", "a"]')
    path = tok.save(tmp_path / "t.json")
    assert TextTokenizer.load(path) == tok
    path.write_text(path.read_text().replace('\\"a\\"', '\\"b\\"'))
    with pytest.raises(ValueError, match="content hash mismatch"):
        TextTokenizer.load(path)


def test_minilm_tokenizer_from_the_fetched_package(raw_data):
    tok = load_minilm(raw_data / "minilm" / "model")
    assert tok.encode(["hello world"], max_len=16) == [[101, 7592, 2088, 102]]
    long = tok.encode(["word " * 100], max_len=8)[0]
    assert len(long) == 8 and long[0] == 101 and long[-1] == 102  # truncation keeps [CLS] ... [SEP]
    assert tok.pad_id == 0 and tok.vocab_size == 30522


def test_subword_training_and_its_pinned_artifact(raw_data, tmp_path):
    """HF's WordPiece/BPE trainers are not deterministic across runs (huggingface/tokenizers#1794:
    hash-map order breaks merge ties), so the trained tokenizer is built once and pinned as an artifact."""
    import json

    texts = [json.loads(line)["text"].lower() for line in (raw_data / "reviews" / "vader_tweets.jsonl").open()]
    wordpiece = train_subword(iter(texts), "wordpiece", 800)
    assert 700 <= wordpiece.vocab_size <= 800
    pinned = TextTokenizer.load(wordpiece.save(tmp_path / "tokenizer-wordpiece.json"))
    assert pinned.sha256 == wordpiece.sha256
    assert pinned.encode(["i love this phone"], 32) == wordpiece.encode(["i love this phone"], 32)
    bpe = train_subword(iter(texts), "bpe", 800)
    assert bpe.encode(["love this"], 32)[0] and bpe.sha256 != wordpiece.sha256
    with pytest.raises(ValueError, match="not trainable"):
        train_subword(iter(texts), "minilm", 800)


def test_encode_batch_normalizes_truncates_and_pads():
    from etl.text.textprep import encode_batch

    tok = TextTokenizer("word", '["<pad>", "<unk>", "<bos>", "<eos>", "good", "film"]')
    out = encode_batch(["Good FILM!", "", "film film film film film"], Normalizer(), tok, 4, fixed=True)
    assert out["text_norm"].tolist() == ["good film!", "", "film film film film film"]
    assert [list(x) for x in out["ids"]] == [[4, 5, UNK], [], [5, 5, 5, 5]]
    assert out["length"].tolist() == [3, 0, 4]
    assert [list(x) for x in out["input_ids"]] == [[4, 5, UNK, PAD], [PAD] * 4, [5, 5, 5, 5]]
    assert "input_ids" not in encode_batch(["x"], Normalizer(), tok, 4, fixed=False)
