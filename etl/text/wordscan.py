"""The word tokenizer's and normalizer's inner loops over an Arrow string batch's UTF-8 bytes, compiled by numba
(as word2vec's are, dl/w2v/kernels.py): one pass per batch, no Python object per row or token.

``scan`` finds ``TOKEN_PATTERN``'s matches (etl/text/fastword.py) as Python's ``re.findall`` does, leftmost-first:
at each position a ``<[a-z]+>`` placeholder, else a word (``\\w`` characters, joined across a single ``'`` or
``’`` between two of them), else one character that is neither ``\\w`` nor ``\\s``; ``\\w`` and ``\\s`` are
this interpreter's (``word``/``space``: one flag per code point, from fastword's tables). It copies each token's
bytes out, or looks them up in the hash table ``build_table`` makes of a vocabulary (FNV-1a, linear probing; the
first of duplicate entries keeps its id, as a list index would). ``collapse`` is the normalizer's last steps on
rows of ASCII bytes: lower case, each run of whitespace made one space, the ends trimmed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)
# Python's str.isspace on ASCII (re's \s for str patterns): \t \n \v \f \r, the separators \x1c-\x1f and space
ASCII_SPACE = np.array([chr(c).isspace() for c in range(128)], np.bool_)


@njit(inline="always")
def _decode(data, i):
    """The code point starting at byte ``i`` of valid UTF-8 and its length in bytes."""
    c = np.int64(data[i])
    if c < 0x80:
        return c, 1
    if c < 0xE0:
        return ((c & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F), 2
    if c < 0xF0:
        return ((c & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6) | (np.int64(data[i + 2]) & 0x3F), 3
    return (((c & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12) | ((np.int64(data[i + 2]) & 0x3F) << 6)
            | (np.int64(data[i + 3]) & 0x3F)), 4


@njit(cache=True, nogil=True)
def scan(data, offsets, word, space, max_tokens, table, keys, key_offsets, unk, ids, out, token_offsets, counts):
    """The tokens of each row ``offsets[r]:offsets[r + 1]`` of ``data``, at most ``max_tokens`` per row (< 0: all);
    ``counts[r]`` = the row's tokens. With a vocabulary ``table`` (``build_table``; empty: none) each token's id
    goes to ``ids`` (``unk`` when absent), else its bytes to ``out`` and its end to ``token_offsets[t + 1]``
    (``token_offsets[0]`` = 0). ``ids``/``out``/``token_offsets`` are sized for the worst case (one token per
    byte). Returns the number of tokens."""
    n = 0
    with_ids = table.shape[0] > 0
    mask = np.uint64(table.shape[0] - 1)
    for r in range(offsets.shape[0] - 1):
        i, end = np.int64(offsets[r]), np.int64(offsets[r + 1])
        found = 0
        while i < end and found != max_tokens:
            cp, size = _decode(data, i)
            if space[cp]:
                i += size
                continue
            j = i + size
            if cp == 60:  # '<': a placeholder when [a-z]+ and '>' follow
                k = j
                while k < end and 97 <= data[k] <= 122:
                    k += 1
                if k > j and k < end and data[k] == 62:
                    j = k + 1
            elif word[cp]:
                while j < end:
                    cq, sq = _decode(data, j)
                    if word[cq]:
                        j += sq
                    elif (cq == 39 or cq == 0x2019) and j + sq < end and word[_decode(data, j + sq)[0]]:
                        j += sq  # an apostrophe between two word characters joins them
                    else:
                        break
            if with_ids:
                ids[n] = _lookup(data, i, j, table, mask, keys, key_offsets, unk)
            else:
                at = token_offsets[n]
                for b in range(i, j):
                    out[at + b - i] = data[b]
                token_offsets[n + 1] = at + j - i
            n += 1
            found += 1
            i = j
        counts[r] = found
    return n


@njit(inline="always")
def _hash(data, start, end):
    h = _FNV_OFFSET
    for i in range(start, end):
        h = (h ^ np.uint64(data[i])) * _FNV_PRIME
    return h


@njit(inline="always")
def _equal(data, start, end, keys, key_start, key_end):
    if end - start != key_end - key_start:
        return False
    for i in range(end - start):
        if data[start + i] != keys[key_start + i]:
            return False
    return True


@njit(cache=True, nogil=True)
def build_table(keys, key_offsets):
    """The hash table of the vocabulary ``keys`` (UTF-8 bytes, entry ``v`` = ``key_offsets[v]:key_offsets[v + 1]``):
    int32 slots holding an entry's id or -1, at most half full."""
    size = 1
    while size < 2 * (key_offsets.shape[0] - 1) + 2:
        size *= 2
    table = np.full(size, -1, np.int32)
    mask = np.uint64(size - 1)
    for v in range(key_offsets.shape[0] - 1):
        s, e = np.int64(key_offsets[v]), np.int64(key_offsets[v + 1])
        slot = _hash(keys, s, e) & mask
        while table[slot] >= 0:
            if _equal(keys, s, e, keys, key_offsets[table[slot]], key_offsets[table[slot] + 1]):
                break  # a duplicate entry: the first one keeps the slot
            slot = (slot + np.uint64(1)) & mask
        if table[slot] < 0:
            table[slot] = v
    return table


@njit(inline="always")
def _lookup(data, start, end, table, mask, keys, key_offsets, unk):
    """The vocabulary id of ``data[start:end]``, ``unk`` when absent."""
    slot = _hash(data, start, end) & mask
    while table[slot] >= 0:
        v = table[slot]
        if _equal(data, start, end, keys, key_offsets[v], key_offsets[v + 1]):
            return v
        slot = (slot + np.uint64(1)) & mask
    return unk


@njit(cache=True, nogil=True)
def collapse(data, offsets, lower, space, out, out_offsets, other):
    """Each row of ASCII bytes lower-cased (when ``lower``; A-Z only, as ``str.lower`` on ASCII), its runs of
    ``space`` bytes made one space and the ends trimmed, into ``out``/``out_offsets``; a row holding a byte
    ≥ 0x80 is left empty and flagged in ``other`` (the caller normalizes it another way)."""
    pos = 0
    for r in range(offsets.shape[0] - 1):
        start, end = np.int64(offsets[r]), np.int64(offsets[r + 1])
        row_start = pos
        pending = False
        for i in range(start, end):
            c = data[i]
            if c >= 0x80:
                other[r] = True
                pos = row_start
                break
            if space[c]:
                pending = pos > row_start
                continue
            if pending:
                out[pos] = 32
                pos += 1
                pending = False
            if lower and 65 <= c <= 90:
                c += 32
            out[pos] = c
            pos += 1
        out_offsets[r + 1] = pos
