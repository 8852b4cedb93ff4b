"""Token attributions for any text model of this package: Integrated Gradients (Sundararajan, Taly & Yan 2017)
on its token-embedding layer, with Captum's ``LayerIntegratedGradients``.

The embeddings move in a straight line from a baseline (every token replaced by padding, special tokens such as
MiniLM's [CLS]/[SEP] kept, the length unchanged) to the text's own; a token's attribution is its embedding
difference times the average gradient along that line, summed over the embedding dimensions. The function
explained is the log-odds of the target class (``logit_target - logsumexp(other logits)``): a positive value
pushed toward it. Completeness — the values add up to f(text) - f(baseline) — holds up to the integral's error,
returned as ``delta``. Used by ``lakedl explain`` (dl/serve/explain.py) and the worst examples of report.html."""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch
from torch import nn

SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "<bos>", "<eos>", "<s>", "</s>"})


@dataclass
class TokenAttribution:
    target: int                # the class explained
    probability: float         # of ``target``
    values: list[float]        # per token, toward ``target`` (log-odds units)
    explained: float           # f(text) - f(baseline): what the values add up to
    delta: float               # sum(values) - explained (Captum's convergence delta)


def log_odds(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the log-odds of class ``target[row]``: its logit minus the log-sum-exp of the others."""
    picked = logits.gather(1, target[:, None])[:, 0]
    others = logits.masked_fill(torch.nn.functional.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return picked - torch.logsumexp(others, 1)


def converged(attribute, explained: torch.Tensor, steps: int = 64, tolerance: float = 0.02,
              max_steps: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients until the integral is accurate: ``attribute(n_steps)`` returns Captum's
    ``(attributions, delta)``; the points start at ``steps`` and double, up to ``max_steps``, until every row's
    error is within ``tolerance`` of what it explains (``explained``, per row). How many points suffice depends
    on the trained model (a small transformer at log-odds 14 needs a few hundred where a BiLSTM needs 64), so a
    fixed count would make completeness depend on the run."""
    n = steps
    while True:
        attr, delta = attribute(n)
        if bool((delta.abs() <= tolerance * explained.abs()).all()) or n >= max_steps:
            return attr, delta
        n *= 2


def embedding_layer(model: nn.Module) -> nn.Embedding:
    """The layer that turns token ids into vectors, where the attributions are taken."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None and hasattr(encoder, "embeddings"):
        return encoder.embeddings.word_embeddings
    embed = getattr(model, "embed", None)
    if isinstance(embed, nn.Embedding):
        return embed
    raise TypeError(f"{type(model).__name__} has no token-embedding layer to attribute to")


def integrated_gradients(model: nn.Module, ids: torch.Tensor, pad_id: int, special: torch.Tensor,
                         head: str = "sentiment", target: int | None = None, steps: int = 64,
                         tolerance: float = 0.02, max_steps: int = 1024) -> TokenAttribution:
    """Attributions of one text (``ids`` of shape (T,), no padding) to the ``target`` class of ``head`` (default:
    the predicted one). ``special[id]`` is True for ids the baseline keeps; the integral's points follow
    ``converged``."""
    from captum.attr import LayerIntegratedGradients

    model = model.eval()
    x, lengths = ids[None, :], torch.tensor([ids.shape[0]])
    with torch.no_grad():
        logits = model(x, lengths)[head][0].float()
    target = int(logits.argmax()) if target is None else target

    def target_log_odds(batch: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        z = model(batch, n.expand(batch.shape[0]))[head].float()
        return log_odds(z, torch.full((z.shape[0],), target))

    baseline = torch.where(special[x], x, torch.full_like(x, pad_id))
    with torch.no_grad():
        explained = float(target_log_odds(x, lengths)[0] - target_log_odds(baseline, lengths)[0])
    ig = LayerIntegratedGradients(target_log_odds, embedding_layer(model))
    attr, delta = converged(lambda n: ig.attribute(x, baselines=baseline, additional_forward_args=(lengths,),
                                                   n_steps=n, internal_batch_size=64,
                                                   return_convergence_delta=True),
                            torch.tensor([explained]), steps, tolerance, max_steps)
    per_token = attr.sum(-1)[0, :ids.shape[0]].detach()  # a model may pad inside (the CNN, to its widest filter)
    return TokenAttribution(target=target, probability=float(torch.softmax(logits, -1)[target]),
                            values=[round(float(a), 6) for a in per_token], explained=explained,
                            delta=float(delta[0]))


def special_mask(vocabulary: list[str]) -> torch.Tensor:
    return torch.tensor([tok in SPECIAL_TOKENS for tok in vocabulary])


def heat_spans(tokens: list[str], values: list[float]) -> str:
    """The tokens as HTML spans on a green (toward) / red (against) background, the strongest at full colour;
    hovering shows the value."""
    scale = max((abs(v) for v in values), default=0.0)
    spans = []
    for token, v in zip(tokens, values, strict=True):
        strength = min(abs(v) / scale, 1.0) if scale else 0.0
        rgb = "46,160,67" if v > 0 else "207,34,46"
        spans.append(f'<span title="{v:+.3f}" style="background:rgba({rgb},{strength * 0.75:.3f});padding:1px 2px;'
                     f'border-radius:3px">{html.escape(token)}</span>')
    return " ".join(spans)
