"""Which words drove a prediction: token attributions for a text classifier bundle (``lakedl explain``).

Integrated gradients on the model's token-embedding layer toward each text's predicted label
(dl/models/attribution.py: method, baseline, completeness); here they are taken for bundles — texts normalized and
tokenized as the ETL did — and drawn as an HTML heatmap. Works for every text family (bow, rnn, cnn,
transformer, MiniLM). An int8 bundle has no gradients: export a float one."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from dl.models.attribution import SPECIAL_TOKENS, heat_spans, integrated_gradients, special_mask
from dl.serve.bundle import Bundle, BundleError


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


def explain(bundle: Bundle, texts: list[str], steps: int = 64, max_steps: int = 1024) -> list[Explanation]:
    """Attributions of each text's predicted label to its tokens, one text at a time (no padding enters a
    text's integral); the integral doubles its ``steps`` up to ``max_steps`` until it is within 2%."""
    refuse_quantized(bundle.meta, bundle.path)
    model = bundle.model.float()
    vocabulary = bundle.tokenizer.vocabulary()
    special = special_mask(vocabulary)
    out = []
    for text in texts:
        ids, _ = bundle.encode([text])
        a = integrated_gradients(model, ids[0], bundle.tokenizer.pad_id, special, steps=steps, max_steps=max_steps)
        out.append(Explanation(text=text, label=bundle.labels[a.target], probability=a.probability,
                               tokens=[vocabulary[i] for i in ids[0].tolist()], attributions=a.values,
                               explained=a.explained, delta=a.delta))
    return out


def refuse_quantized(meta: dict, path) -> None:
    if meta.get("quantize", "none") != "none":
        raise BundleError(f"{path} is an int8 bundle, which has no gradients to attribute with: explain a "
                          "float bundle (`lakedl bundle export` without --quantize)")


def top_tokens(bundle: Bundle, texts: list[str], k: int, steps: int = 32, max_steps: int = 256) -> list[str]:
    """Per text, its ``k`` tokens that pushed hardest toward the predicted label, as JSON ``[[token, value],
    ...]`` (the scoring column ``top_tokens``, ``lakedl score --explain K``): a coarser integral than
    ``lakedl explain`` (from 32 points, at most 256), since it runs on every scored row."""
    return [json.dumps([[t, round(a, 4)] for t, a in e.top(k)])
            for e in explain(bundle, texts, steps=steps, max_steps=max_steps)]


def html_report(explanations: list[Explanation], bundle_path: str | Path) -> str:
    """One heatmap line per text (green: toward the predicted label, red: against it; the strongest token of
    each text at full colour), with the label, its probability and the top tokens."""
    rows = []
    for e in explanations:
        spans = heat_spans(e.tokens, e.attributions)
        top = ", ".join(f"{html.escape(t)} {a:+.2f}" for t, a in e.top(5))
        against = ", ".join(f"{html.escape(t)} {a:+.2f}" for t, a in e.top(3, sign=-1))
        rows.append(f"<tr><td><b>{html.escape(e.label)}</b> {e.probability:.3f}</td><td class=t>{spans}</td>"
                    f"<td>{top}</td><td>{against or '—'}</td><td>{e.delta:+.3f} of {e.explained:+.2f}</td></tr>")
    return f"""<!doctype html><meta charset="utf-8"><title>lakedl explain</title>
<style>body{{font-family:sans-serif;margin:2em}} td{{padding:.4em .6em;vertical-align:top;border-bottom:1px solid #ddd}}
td.t{{line-height:1.9}}</style>
<h1>Token attributions</h1>
<p>Bundle <code>{html.escape(str(bundle_path))}</code>. Integrated gradients on the embedding layer toward each
text's predicted label (its log-odds): <span style="background:rgba(46,160,67,.6)">green</span> pushed toward it,
<span style="background:rgba(207,34,46,.6)">red</span> against it; hover a token for its value. The last column is
the integral's error: the attributions add up to the log-odds change from an all-padding baseline, up to it.</p>
<table><tr><th>prediction</th><th>text</th><th>toward</th><th>against</th><th>error</th></tr>
{''.join(rows)}</table>
"""
