"""Every model family: output shapes, padding never changes the result, a tiny batch is learned to
~100%, and a checkpoint rebuilds a model with identical outputs."""

from __future__ import annotations

import pytest
import torch

from dl.engine.checkpoint import read_checkpoint, save_checkpoint
from dl.models import build_model, describe, rebuild

VOCAB = 50
FAMILIES = {
    "bow": {},
    "rnn": {"cell": "lstm", "layers": 2, "bidirectional": True, "pooling": "max", "embed_dim": 16, "hidden": 16},
    "rnn_gru_last": {"cell": "gru", "bidirectional": True, "pooling": "last", "embed_dim": 16, "hidden": 16},
    "rnn_vanilla_mean": {"cell": "rnn", "bidirectional": False, "pooling": "mean", "embed_dim": 16, "hidden": 16},
    "cnn": {"embed_dim": 16, "filters": 8, "widths": [2, 3, 4]},
    "cnn_edges": {"embed_dim": 16, "filters": 8, "widths": [2, 3, 4], "edge_padding": True},
    "transformer": {"d_model": 32, "heads": 4, "layers": 2, "ff": 64, "pooling": "cls"},
    "transformer_sin_mean": {"d_model": 32, "heads": 2, "layers": 1, "ff": 64, "positions": "sinusoidal",
                             "pooling": "mean"},
    "transformer_max": {"d_model": 32, "heads": 4, "layers": 1, "ff": 64, "pooling": "max"},
    # a BERT of random weights (MiniLM's architecture, tiny sizes): the pretrained MiniLM is tested in test_bert.py
    "bert": {"encoder": {"model_type": "bert", "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
                         "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}},
}


def make(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    family = name.split("_")[0]
    return family, build_model(family, VOCAB, {**FAMILIES[name], **extra})


def batch(seed: int = 0, n: int = 16, longest: int = 12):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, longest + 1, (n,), generator=g)
    ids = torch.randint(1, VOCAB, (n, longest), generator=g)
    ids[torch.arange(longest)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


@pytest.mark.parametrize("name", FAMILIES)
def test_output_shapes(name):
    _, model = make(name)
    out = model(*batch())
    assert out["sentiment"].shape == (16, 2) and out["rating"].shape == (16, 5) and out["rating_reg"].shape == (16,)


@pytest.mark.parametrize("name", FAMILIES)
def test_padding_does_not_change_the_outputs(name):
    _, model = make(name)
    model.eval()
    ids, lengths = batch()
    padded = torch.cat([ids, torch.zeros(len(ids), 7, dtype=ids.dtype)], 1)  # 7 more pad columns
    padded_garbage = padded.clone()
    padded_garbage[:, ids.shape[1]:] = 5  # even non-pad ids beyond the length are never read
    with torch.no_grad():
        a, b, c = model(ids, lengths), model(padded, lengths), model(padded_garbage, lengths)
    for head in a:
        torch.testing.assert_close(a[head], b[head], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[head], c[head], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_overfits_a_tiny_batch(name):
    _, model = make(name, dropout=0.0) if name != "bow" else make(name)
    ids, lengths = batch(n=32)
    labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(1))  # random: must memorize
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(ids, lengths)["sentiment"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(ids, lengths)["sentiment"].argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.97, accuracy


@pytest.mark.parametrize("name", FAMILIES)
def test_checkpoint_rebuilds_identical_logits(name, tmp_path):
    family, model = make(name)
    model.eval()
    save_checkpoint(tmp_path / "m.pt", model=model, config=describe(family, model))
    state = read_checkpoint(tmp_path / "m.pt")
    again = rebuild(state["config"])
    again.load_state_dict(state["model"])
    again.eval()
    ids, lengths = batch(3)
    with torch.no_grad():
        for head, value in model(ids, lengths).items():
            assert torch.equal(value, again(ids, lengths)[head])


def test_unknown_options_and_families_are_refused():
    with pytest.raises(ValueError, match="has no option\\(s\\) hiden"):
        build_model("rnn", VOCAB, {"hiden": 3})
    with pytest.raises(ValueError, match="one of bow, rnn, cnn, transformer"):
        build_model("resnet", VOCAB)
    with pytest.raises(ValueError, match="rnn cell 'tcn'"):
        build_model("rnn", VOCAB, {"cell": "tcn"})
    with pytest.raises(ValueError, match="not divisible"):
        build_model("transformer", VOCAB, {"d_model": 30, "heads": 4})


def test_frozen_embeddings_stay_put():
    _, model = make("rnn", freeze_embeddings=True)
    before = model.embed.weight.detach().clone()
    out = model(*batch())
    out["sentiment"].sum().backward()
    assert model.embed.weight.grad is None
    assert torch.equal(before, model.embed.weight)


def test_cnn_word_vectors_can_start_uniform_with_padding_zero():
    _, default = make("cnn")
    _, kim = make("cnn", embed_init_range=0.25)
    assert float(default.embed.weight.detach().abs().max()) > 1.0  # N(0, 1)
    w = kim.embed.weight.detach()
    assert float(w.abs().max()) <= 0.25 and float(w[1:].std()) > 0.1 and not w[0].any()


@pytest.mark.parametrize(("edge_padding", "columns_trained"), [(False, [0]), (True, [0, 1, 2])])
def test_cnn_edge_padding_trains_every_filter_column_on_a_one_word_text(edge_padding, columns_trained):
    # narrow windows start inside the text, so a one-word phrase only reaches a filter's first column;
    # with edge padding the word sits at every offset of the window
    _, model = make("cnn", widths=[3], edge_padding=edge_padding, dropout=0.0)
    model(torch.tensor([[7, 0, 0]]), torch.tensor([1]))["sentiment"].sum().backward()
    grad = model.convs[0].weight.grad  # (filters, embed_dim, width)
    assert [col for col in range(3) if grad[:, :, col].abs().sum() > 0] == columns_trained
