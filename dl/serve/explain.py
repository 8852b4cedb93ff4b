"""Which words drove a prediction: token attributions for a text classifier bundle.

Integrated Gradients (Sundararajan, Taly & Yan 2017) on the model's token-embedding layer, with Captum's
``LayerIntegratedGradients``: the embeddings are moved in a straight line from a baseline (every token
replaced by padding, special tokens such as MiniLM's [CLS]/[SEP] kept, the length unchanged) to the text's
own, and each token's attribution is its embedding difference times the average gradient along that line,
summed over the embedding dimensions. The function explained is the log-odds of the predicted label
(``logit_label - logsumexp(other logits)``), so a positive attribution is a token that pushed toward the
label shown and a negative one a token that pushed against it. Completeness — the attributions add up to
f(text) - f(baseline) — holds up to the integral's approximation, reported per text as ``delta``.

Works for every text family whose ids go through one ``nn.Embedding`` (bow, rnn, cnn, transformer: ``embed``;
MiniLM: ``encoder.embeddings.word_embeddings``). An int8 bundle has no gradients: export a float one."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from dl.serve.bundle import Bundle, BundleError

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "<bos>", "<eos>", "<s>", "</s>"})


@dataclass
class Explanation:
    text: str
    label: str
    probability: float         # of ``label``
    tokens: list[str]
    attributions: list[float]  # per token, toward ``label`` (log-odds units)
    explained: float           # f(text) - f(baseline): what the attributions add up to
    delta: float               # sum(attributions) - explained (Captum's convergence delta)

    def top(self, k: int = 5, sign: int = 1) -> list[tuple[str, float]]:
        """The ``k`` tokens that pushed hardest toward the label (``sign=-1``: against it)."""
        ranked = sorted(zip(self.tokens, self.attributions, strict=True), key=lambda t: -sign * t[1])
        return [(tok, a) for tok, a in ranked[:k] if sign * a > 0 and tok not in SPECIAL_TOKENS]

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_layer(model: nn.Module) -> nn.Embedding:
    """The layer that turns token ids into vectors, where the attributions are taken."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "embeddings"):
        return encoder.embeddings.word_embeddings
    embed = getattr(model, "embed", None)
    if isinstance(embed, nn.Embedding):
        return embed
    raise BundleError(f"{type(model).__name__} has no token-embedding layer to attribute to")


def explain(bundle: Bundle, texts: list[str], steps: int = 64, tolerance: float = 0.02,
            max_steps: int = 1024) -> list[Explanation]:
    """Integrated-gradient attributions of each text's predicted label to its tokens (one text at a time:
    no padding enters a text's integral). The integral starts with ``steps`` points and doubles them, up to
    ``max_steps``, until its error is within ``tolerance`` of what it explains: a sharp model (a transformer
    at log-odds 14) needs a few hundred points where a BiLSTM needs 64."""
    from captum.attr import LayerIntegratedGradients

    if bundle.meta.get("quantize", "none") != "none":
        raise BundleError(f"{bundle.path} is an int8 bundle, which has no gradients to attribute with: explain a "
                          "float bundle (`lakedl bundle export` without --quantize)")
    model = bundle.model.float().eval()
    vocabulary = bundle.tokenizer.vocabulary()
    special = torch.tensor([tok in SPECIAL_TOKENS for tok in vocabulary])
    pad = bundle.tokenizer.pad_id
    out = []
    for text in texts:
        ids, lengths = bundle.encode([text])
        with torch.no_grad():
            logits = model(ids, lengths)["sentiment"][0]
        target = int(logits.argmax())

        def log_odds(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            z = model(x, n.expand(x.shape[0]))["sentiment"]
            others = torch.cat([z[:, :target], z[:, target + 1:]], 1)
            return z[:, target] - torch.logsumexp(others, 1)

        baseline = torch.where(special[ids], ids, torch.full_like(ids, pad))
        with torch.no_grad():
            explained = float(log_odds(ids, lengths)[0] - log_odds(baseline, lengths)[0])
        ig, n = LayerIntegratedGradients(log_odds, embedding_layer(model)), steps
        while True:
            attr, delta = ig.attribute(ids, baselines=baseline, additional_forward_args=(lengths,), n_steps=n,
                                       internal_batch_size=64, return_convergence_delta=True)
            if abs(float(delta[0])) <= tolerance * abs(explained) or n >= max_steps:
                break
            n *= 2
        per_token = attr.sum(-1)[0, :ids.shape[1]].detach()  # a model may pad inside (the CNN, to its widest filter)
        out.append(Explanation(text=text, label=bundle.labels[target],
                               probability=float(torch.softmax(logits, -1)[target]),
                               tokens=[vocabulary[i] for i in ids[0].tolist()],
                               attributions=[round(float(a), 6) for a in per_token], explained=explained,
                               delta=float(delta[0])))
    return out


def _colour(a: float, scale: float) -> str:
    strength = min(abs(a) / scale, 1.0) if scale else 0.0
    rgb = (46, 160, 67) if a > 0 else (207, 34, 46)
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{strength * 0.75:.3f})"


def html_report(explanations: list[Explanation], bundle_path: str | Path) -> str:
    """One heatmap line per text (green: toward the predicted label, red: against it; the strongest token of
    each text at full colour), with the label, its probability and the top tokens."""
    rows = []
    for e in explanations:
        scale = max((abs(a) for a in e.attributions), default=0.0)
        spans = " ".join(f'<span title="{a:+.3f}" style="background:{_colour(a, scale)}">{html.escape(t)}</span>'
                         for t, a in zip(e.tokens, e.attributions, strict=True))
        top = ", ".join(f"{html.escape(t)} {a:+.2f}" for t, a in e.top(5))
        against = ", ".join(f"{html.escape(t)} {a:+.2f}" for t, a in e.top(3, sign=-1))
        rows.append(f"<tr><td><b>{html.escape(e.label)}</b> {e.probability:.3f}</td><td class=t>{spans}</td>"
                    f"<td>{top}</td><td>{against or '—'}</td><td>{e.delta:+.3f} of {e.explained:+.2f}</td></tr>")
    return f"""<!doctype html><meta charset="utf-8"><title>lakedl explain</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{padding:.4em .6em;vertical-align:top;border-bottom:1px solid #ddd}}
td.t span{{padding:1px 2px;border-radius:3px;line-height:1.9}}</style>
<h1>Token attributions</h1>
<p>Bundle <code>{html.escape(str(bundle_path))}</code>. Integrated gradients on the embedding layer toward each
text's predicted label (its log-odds): <span style="background:rgba(46,160,67,.6)">green</span> pushed toward it,
<span style="background:rgba(207,34,46,.6)">red</span> against it; hover a token for its value. The last column is
the integral's error: the attributions add up to the log-odds change from an all-padding baseline, up to it.</p>
<table><tr><th>prediction</th><th>text</th><th>toward</th><th>against</th><th>error</th></tr>
{''.join(rows)}</table>
"""
