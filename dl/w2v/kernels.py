"""word2vec's inner loops (skip-gram and CBOW with negative sampling), compiled by numba.

They follow word2vec.c and gensim's Cython (``word2vec_inner.pyx``) step by step, so the two are
comparable: frequent words are subsampled as the sentence is read, each position draws a reduced window
``b`` in ``[0, window)`` and uses the ``window - b`` words on each side, negatives are drawn from the
unigram^0.75 table (``cum``, cumulative integer weights) and skipped when they hit the target, dot
products outside ±6 are skipped (gensim's MAX_EXP), the sigmoid and the log loss come from 1000-entry
tables over [-6, 6] (gensim's EXP_TABLE and LOG_TABLE), and the learning rate decays linearly with the
words processed. Updates are written straight into ``syn0``/``syn1`` (Hogwild, like both originals).

``syn0`` (input vectors) and ``syn1`` (output vectors) are float32 ``(V, D)`` arrays — the memory of the
model's torch tensors, so torch.distributed can average them in place between calls.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_EXP = 6.0
TABLE_SIZE = 1000
_X = (np.arange(TABLE_SIZE, dtype=np.float64) / TABLE_SIZE * 2 - 1) * MAX_EXP
SIGMOID_TABLE = (1.0 / (1.0 + np.exp(-_X))).astype(np.float32)
LOG_SIGMOID_TABLE = np.log(SIGMOID_TABLE.astype(np.float64))  # log σ(x); log(1 - σ(x)) = log σ(-x)
_MUL, _ADD, _MASK48 = np.uint64(25214903917), np.uint64(11), np.uint64(2**48 - 1)


@njit(inline="always")
def _rand32(state):
    """The 32 random bits of word2vec.c's and gensim's linear congruential generator (48-bit state in
    ``state[0]``); much cheaper per draw than a Mersenne twister in the inner loop."""
    value = (state[0] >> np.uint64(16)) & np.uint64(0xFFFFFFFF)
    state[0] = (state[0] * _MUL + _ADD) & _MASK48
    return value


@njit(cache=True, nogil=True)
def _sentence(tokens, start, end, keep, buf, state):
    """Copy the words of ``tokens[start:end]`` that survive subsampling into ``buf``; returns how many.
    ``keep``: each word's keep probability × 2**32 (uint64), as gensim's ``sample_int``."""
    n = 0
    for t in range(start, end):
        w = tokens[t]
        if keep[w] < np.uint64(2**32) and keep[w] < _rand32(state):
            continue
        buf[n] = w
        n += 1
    return n


@njit(cache=True, nogil=True, fastmath=True)
def _predict(inp, syn1, word, cum, negative, alpha, work, state):
    """Logistic steps of the input vector ``inp`` predicting ``word`` against ``negative`` noise words;
    updates ``syn1`` and accumulates the input's error in ``work`` (zeroed here). A dot product outside
    ±MAX_EXP is skipped, as gensim does. Returns (log loss sum, terms)."""
    dim = inp.shape[0]
    for k in range(dim):
        work[k] = 0.0
    loss = 0.0
    terms = 0
    for d in range(negative + 1):
        if d == 0:
            target, label = word, 1.0
        else:
            target = np.searchsorted(cum, np.int64(_rand32(state) % np.uint64(cum[-1])), side="right")
            if target == word:
                continue
            label = 0.0
        f = np.float32(0.0)  # float32 throughout the vector loops: no conversions, twice the SIMD width
        for k in range(dim):
            f += inp[k] * syn1[target, k]
        if f <= -MAX_EXP or f >= MAX_EXP:
            continue
        at = int((f + MAX_EXP) * (TABLE_SIZE / MAX_EXP / 2))
        g = np.float32((label - SIGMOID_TABLE[at]) * alpha)
        for k in range(dim):
            work[k] += g * syn1[target, k]
            syn1[target, k] += g * inp[k]
        loss -= LOG_SIGMOID_TABLE[at] if label > 0.5 else LOG_SIGMOID_TABLE[TABLE_SIZE - 1 - at]
        terms += 1
    return loss, terms


@njit(cache=True, nogil=True, fastmath=True)
def train_chunk(syn0, syn1, tokens, offsets, sentences, keep, cum, cbow, window, negative, alpha0, min_alpha,
                done, total, seed):
    """Train on ``sentences`` (indices into ``offsets``). ``done``/``total``: this process's words processed
    before the chunk and over the whole run (for the learning-rate decay).

    Returns (words read, words trained after subsampling, loss sum, loss terms)."""
    state = np.full(1, np.uint64(seed) & _MASK48, np.uint64)
    dim = syn0.shape[1]
    work = np.zeros(dim, np.float32)
    neu1 = np.zeros(dim, np.float32)
    longest = 1
    for s in sentences:
        longest = max(longest, offsets[s + 1] - offsets[s])
    buf = np.empty(longest, np.int32)
    read = 0
    trained = 0
    loss = 0.0
    terms = 0
    for s in sentences:
        start, end = offsets[s], offsets[s + 1]
        n = _sentence(tokens, start, end, keep, buf, state)
        alpha = max(min_alpha, alpha0 - (alpha0 - min_alpha) * (done + read) / total)
        for i in range(n):
            b = np.int64(_rand32(state) % np.uint64(window))  # reduced window: window - b words each side
            lo = max(0, i - window + b)
            hi = min(n, i + window + 1 - b)
            if cbow:  # the mean of the context vectors predicts the centre word; each gets the full error
                count = 0
                for k in range(dim):
                    neu1[k] = 0.0
                for j in range(lo, hi):
                    if j != i:
                        count += 1
                        for k in range(dim):
                            neu1[k] += syn0[buf[j], k]
                if count == 0:
                    continue
                inv = np.float32(1.0 / count)
                for k in range(dim):
                    neu1[k] *= inv
                step_loss, step_terms = _predict(neu1, syn1, buf[i], cum, negative, alpha, work, state)
                loss += step_loss
                terms += step_terms
                for j in range(lo, hi):
                    if j != i:
                        for k in range(dim):
                            syn0[buf[j], k] += work[k]
            else:  # skip-gram: each context word's input vector predicts the centre word (as gensim)
                for j in range(lo, hi):
                    if j != i:
                        row = syn0[buf[j]]  # a view: updated in place
                        step_loss, step_terms = _predict(row, syn1, buf[i], cum, negative, alpha, work, state)
                        loss += step_loss
                        terms += step_terms
                        for k in range(dim):
                            row[k] += work[k]
        read += end - start
        trained += n
    return read, trained, loss, terms


@njit(cache=True)
def draw_noise(cum, n, seed):
    """``n`` draws from the noise table, as the kernel draws them (for tests and plots)."""
    state = np.full(1, np.uint64(seed) & _MASK48, np.uint64)
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = np.searchsorted(cum, np.int64(_rand32(state) % np.uint64(cum[-1])), side="right")
    return out


@njit(cache=True)
def draw_kept(tokens, keep, seed):
    """How many of ``tokens`` subsampling keeps, per word id (for tests)."""
    state = np.full(1, np.uint64(seed) & _MASK48, np.uint64)
    kept = np.zeros(keep.shape[0], np.int64)
    buf = np.empty(tokens.shape[0], np.int32)
    n = _sentence(tokens, 0, tokens.shape[0], keep, buf, state)
    for i in range(n):
        kept[buf[i]] += 1
    return kept
