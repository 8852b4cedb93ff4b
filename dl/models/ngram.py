"""Interpolated Kneser–Ney trigram language model: the baseline the nanoGPT-style LM is compared with.

Events are the same as the neural LM's (dl/models/gpt.py): every token of a text and then ``<eos>``,
each predicted from the two before it, with ``<bos>`` filling the context at the start. With absolute
discount D (Chen & Goodman's interpolated form, one D per order):

    P3(w | u v) = max(c(u v w) − D, 0) / c(u v ·) + D · N1+(u v ·) / c(u v ·) · P2(w | v)
    P2(w | v)   = max(N1+(· v w) − D, 0) / N1+(· v ·) + D · N1+(v ·) / N1+(· v ·) · P1(w)
    P1(w)       = max(N1+(· w) − D, 0) / N1+(· ·) + D · |{w : N1+(· w) > 0}| / N1+(· ·) · 1 / V

where the lower orders use continuation counts (how many distinct words precede), and an unseen
context falls back to the next order entirely. Every distribution sums to one over the V ids."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence


class KneserNeyTrigram:
    def __init__(self, vocab_size: int, bos_id: int = 2, eos_id: int = 3, discount: float = 0.75) -> None:
        if not 0 < discount < 1:
            raise ValueError(f"discount {discount}: must be in (0, 1)")
        self.V, self.bos, self.eos, self.D = vocab_size, bos_id, eos_id, discount
        self.tri: Counter = Counter()  # c(u v w)
        self.ctx2: Counter = Counter()  # c(u v ·)
        self.ctx2_types: Counter = Counter()  # N1+(u v ·)
        self.cont2: Counter = Counter()  # N1+(· v w)
        self.cont2_ctx: Counter = Counter()  # N1+(· v ·) = Σ_w N1+(· v w)
        self.ctx1_types: Counter = Counter()  # N1+(v ·) over the distinct (v w) seen after some u
        self.cont1: Counter = Counter()  # N1+(· w)
        self.bigram_types = 0  # N1+(· ·)

    def events(self, ids: Sequence[int]) -> Iterable[tuple[int, int, int]]:
        seq = [self.bos, self.bos, *ids, self.eos]
        return zip(seq, seq[1:], seq[2:])

    def fit(self, texts: Iterable[Sequence[int]]) -> KneserNeyTrigram:
        for ids in texts:
            self.tri.update(self.events(ids))
        bigrams: set[tuple[int, int]] = set()
        for (u, v, w), c in self.tri.items():
            self.ctx2[(u, v)] += c
            self.ctx2_types[(u, v)] += 1
            self.cont2[(v, w)] += 1
            bigrams.add((v, w))
        for (v, w), n in self.cont2.items():
            self.cont2_ctx[v] += n
            self.ctx1_types[v] += 1
        # unigram continuation counts: distinct left neighbours of w among the bigrams (v, w)
        for (v, w) in bigrams:
            self.cont1[w] += 1
        self.bigram_types = len(bigrams)
        self._p1_cache: dict[int, float] = {}
        return self

    def p1(self, w: int) -> float:
        if w not in self._p1_cache:
            n = self.bigram_types
            self._p1_cache[w] = (max(self.cont1.get(w, 0) - self.D, 0) / n
                                 + self.D * len(self.cont1) / n / self.V)
        return self._p1_cache[w]

    def p2(self, w: int, v: int) -> float:
        total = self.cont2_ctx.get(v, 0)
        if total == 0:
            return self.p1(w)
        return (max(self.cont2.get((v, w), 0) - self.D, 0) / total
                + self.D * self.ctx1_types[v] / total * self.p1(w))

    def prob(self, w: int, u: int, v: int) -> float:
        total = self.ctx2.get((u, v), 0)
        if total == 0:
            return self.p2(w, v)
        return (max(self.tri.get((u, v, w), 0) - self.D, 0) / total
                + self.D * self.ctx2_types[(u, v)] / total * self.p2(w, v))

    def evaluate(self, texts: Iterable[Sequence[int]]) -> dict:
        """Mean negative log-likelihood per event (nats), perplexity and the event count."""
        nll, n = 0.0, 0
        for ids in texts:
            for u, v, w in self.events(ids):
                nll -= math.log(self.prob(w, u, v))
                n += 1
        loss = nll / max(n, 1)
        return {"lm_loss": loss, "lm_perplexity": math.exp(loss), "lm_tokens": n}
