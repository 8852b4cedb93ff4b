"""Word-level normalization and encoding of a whole Arrow batch at once, with the ids and ``text_norm`` of the
per-row Python path (etl/text/textprep.py ``Normalizer`` + ``TOKEN_PATTERN`` + vocabulary lookup), exactly.

Normalizing: Arrow's kernels do NFKC (utf8proc) and the URL placeholder (RE2) for the batch; a compiled pass over
the bytes (etl/text/wordscan.py) lower-cases, collapses whitespace and trims the rows that are ASCII by then —
nearly all of a real corpus — and Arrow's kernels do the few others (utf8proc's lower case, RE2 with ``\\s``
spelled out as the code points Python's ``re`` uses). What has no C++ equivalent runs through the Python
normalizer, only on the rows that need it: rows holding ``&`` or a character NFKC turns into one
(``html.unescape``), and rows holding a character where utf8proc's NFKC or lower case could differ from Python's
(found by comparing both on every code point, once per process: another Unicode version, the context-dependent
final sigma); every row when ``number_token`` is set (its look-behind has no RE2 form).
Tokenizing and the vocabulary lookup: one compiled pass over each batch's UTF-8 bytes (``wordscan.scan``) follows
``TOKEN_PATTERN``'s alternatives leftmost-first, as Python's ``findall`` does, with this interpreter's ``\\w`` and
``\\s`` as one flag per code point, and looks each token up in a hash table of the vocabulary.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# a placeholder (<url>, <num>), a word with optional inner apostrophes, or any other single non-space character;
# etl/text/textprep.py (the per-row path) uses it from here, so that this module imports nothing of that one
TOKEN_PATTERN = r"<[a-z]+>|\w+(?:['’]\w+)*|[^\w\s]"


def _ranges(codes: np.ndarray) -> str:
    """Sorted code points as an RE2 character-class body of ``\\x{..}`` ranges."""
    if len(codes) == 0:
        return ""
    breaks = np.flatnonzero(np.diff(codes) != 1)
    starts = np.concatenate([[codes[0]], codes[breaks + 1]])
    ends = np.concatenate([codes[breaks], [codes[-1]]])
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in zip(starts, ends))


@functools.lru_cache(maxsize=1)
def _unicode_tables() -> dict[str, str]:
    """RE2 class bodies for Python's ``\\w`` and ``\\s``, the characters whose NFKC or lower case under utf8proc
    is not Python's (plus ``Σ``, whose Python lower case depends on its neighbours), and those NFKC
    turns into ``&``. They depend on this interpreter's and pyarrow's Unicode data only: computed once (~2 s) and
    kept in the user's cache directory (``$LAKEDL_CACHE_DIR``, else ``~/.cache/lakedl``), so each Spark Python
    worker reads them."""
    import pyarrow

    key = f"unicode-2-{sys.version_info[0]}.{sys.version_info[1]}-{unicodedata.unidata_version}-{pyarrow.__version__}"
    root = Path(os.environ.get("LAKEDL_CACHE_DIR") or Path.home() / ".cache" / "lakedl")
    path = root / f"{key}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    tables = _compute_tables()
    with contextlib.suppress(OSError):  # a read-only home: computed again by the next process
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(tables))
        tmp.replace(path)
    return tables


def _position(code: int) -> int:
    """The index of a code point in the table (surrogates left out)."""
    return code - 0x800 if code >= 0xE000 else code


def _compute_tables() -> dict[str, str]:
    codes = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x110000)]).astype(np.uint32)
    chars = codes.view("<U1")
    word = np.char.isalnum(chars) | (chars == "_")
    space = np.char.isspace(chars)
    listed = list(map(chr, codes.tolist()))  # (not chars.tolist(): NumPy drops a trailing NUL)
    listed[ord("\n")] = "a"  # the separator below ("\n" itself: NFKC and lower case leave it as it is)
    joined = "\n".join(listed)  # one call each for every character: "\n" stops composition and reordering
    py_nfkc = pa.array(unicodedata.normalize("NFKC", joined).split("\n"), pa.string())
    py_lower = pa.array(joined.lower().split("\n"), pa.string())
    arr = pa.array(listed, pa.string())
    odd = ~np.asarray(pc.equal(py_nfkc, pc.utf8_normalize(arr, "NFKC")), bool)
    odd |= ~np.asarray(pc.equal(py_lower, pc.utf8_lower(arr)), bool)
    odd[ord("Σ")] = True
    # pyarrow 14's "NFKC" decomposes but never composes (e + U+0301 stays two characters, é becomes them): every
    # character that can take part in a composition is odd — combining marks, the second of a canonical pair,
    # Hangul vowel and trailing jamo — and so is every character whose NFKC holds one, or an odd one (lower
    # case runs on NFKC's output)
    combining = np.fromiter((unicodedata.combining(ch) != 0 for ch in listed), bool, count=len(listed))
    for ch in listed:
        parts = unicodedata.decomposition(ch).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            combining[_position(int(parts[1], 16))] = True
    combining[[_position(c) for c in [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]]] = True
    odd |= combining
    odd_chars = set(chars[odd].tolist())
    changed = np.flatnonzero(~np.asarray(pc.equal(py_nfkc, arr), bool))
    nfkc = py_nfkc.take(pa.array(changed)).to_pylist()
    odd[changed[[any(x in odd_chars for x in n) for n in nfkc]]] = True
    amp = changed[["&" in n for n in nfkc]]  # what NFKC turns into '&' (＆, ﹠); '&' itself below
    amp = np.union1d(amp, [ord("&")])
    return {"word": _ranges(codes[word]), "space": _ranges(codes[space]), "odd": _ranges(codes[odd]),
            "amp": _ranges(codes[amp])}


@functools.lru_cache(maxsize=2)
def _patterns(html_unescape: bool) -> dict[str, str]:
    t = _unicode_tables()
    return {"space_run": f"[{t['space']}]+", "url": f"(?i)(?:https?://|www\\.)[^{t['space']}]+",
            "python": f"[{t['odd']}{t['amp'] if html_unescape else ''}]"}


def normalize_arrow(texts: pa.Array, normalizer) -> pa.Array:
    """``normalizer`` (textprep.Normalizer) applied to every string of ``texts`` (a null as ""), as the Python
    path does to each."""
    texts = pc.fill_null(texts, "")
    if normalizer.number_token is not None:
        return pa.array([normalizer(t) for t in texts.to_pylist()], pa.string())
    p = _patterns(normalizer.html_unescape)
    out = pc.utf8_normalize(texts, "NFKC") if normalizer.nfkc else texts
    if normalizer.url_token is not None:
        out = pc.replace_substring_regex(out, p["url"], f" {normalizer.url_token} ")
    data, offsets = _buffers(out)
    norm, norm_offsets = np.empty(len(data), np.uint8), np.zeros(len(out) + 1, np.int64)
    other = np.zeros(len(out), bool)
    from etl.text import wordscan  # numba (LLVM) only in processes that encode: not in training workers

    wordscan.collapse(data, offsets, normalizer.lowercase, wordscan.ASCII_SPACE, norm, norm_offsets, other)
    result = _string_array(norm, norm_offsets)
    python = _python_rows(texts, p["python"], normalizer.html_unescape)
    rows = np.flatnonzero(other | python)  # rows not of ASCII bytes after NFKC, or for the Python normalizer
    if len(rows) == 0:
        return result
    by_arrow, by_python = rows[~python[rows]], rows[python[rows]]
    rest = out.take(pa.array(by_arrow, pa.int64()))
    if normalizer.lowercase:
        rest = pc.utf8_lower(rest)
    rest = pc.utf8_trim(pc.replace_substring_regex(rest, p["space_run"], " "), " ")
    values = rest.to_pylist() + [normalizer(t) for t in texts.take(pa.array(by_python, pa.int64())).to_pylist()]
    order = np.argsort(np.concatenate([by_arrow, by_python]))
    return _replace_rows(result, rows, [values[i] for i in order.tolist()])


def _python_rows(texts: pa.Array, pattern: str, html_unescape: bool) -> np.ndarray:
    """Which rows the Python normalizer does (``pattern``: ``_patterns()["python"]``): in an ASCII row only ``&``
    can need it (a substring search), the others go through RE2."""
    python = np.asarray(pc.match_substring(texts, "&"), bool) if html_unescape else np.zeros(len(texts), bool)
    other = np.flatnonzero(~np.asarray(pc.string_is_ascii(texts), bool))
    if len(other):
        python[other] = np.asarray(pc.match_substring_regex(texts.take(pa.array(other, pa.int64())), pattern), bool)
    return python


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's UTF-8 bytes (uint8) and its ``len + 1`` offsets into them (int64), without copying the
    bytes; a null reads as ""."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32, count=len(arr) + 1, offset=4 * arr.offset).astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None and data_buf.size else np.zeros(1, np.uint8)
    return data, offsets


def _string_array(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A string array of ``offsets`` (int64, ``len + 1``) into ``data`` (valid UTF-8)."""
    size = int(offsets[-1])
    return pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)),
                                       pa.py_buffer(data[:size].copy()))


def _replace_rows(arr: pa.Array, rows: np.ndarray, values: list[str]) -> pa.Array:
    """``arr`` with ``rows`` (ascending) set to ``values``, in Arrow (no Python string per row of the batch)."""
    if len(rows) == 0:
        return arr
    mask = np.zeros(len(arr), bool)
    mask[rows] = True
    return pc.replace_with_mask(arr, pa.array(mask), pa.array(values, pa.string()))


@functools.lru_cache(maxsize=1)
def _code_flags() -> tuple[np.ndarray, np.ndarray]:
    """Python's ``\\w`` and ``\\s`` as one flag per code point (from the tables ``_patterns`` uses)."""
    t = _unicode_tables()
    flags = []
    for body in (t["word"], t["space"]):
        flag = np.zeros(0x110000, np.bool_)
        for a, b in re.findall(r"\\x\{([0-9a-f]+)\}(?:-\\x\{([0-9a-f]+)\})?", body):
            flag[int(a, 16):int(b or a, 16) + 1] = True
        flags.append(flag)
    return flags[0], flags[1]


_NO_TABLE = (np.zeros(0, np.int32), np.zeros(1, np.uint8), np.zeros(1, np.int64))


def _scan(norm: pa.Array, max_tokens: int, table=_NO_TABLE, unk: int = 0):
    """``wordscan.scan`` over a string array: (where each row's tokens start, int32 [n+1]; ids; token bytes; token
    offsets into them); with a vocabulary ``table`` the ids, else the tokens' bytes."""
    data, offsets = _buffers(pc.fill_null(norm, ""))
    word, space = _code_flags()
    with_ids = table is not _NO_TABLE
    worst = len(data) if max_tokens < 0 else min(len(data), len(norm) * max_tokens)  # at most one token a byte
    counts = np.zeros(len(norm), np.int32)
    ids = np.empty(worst if with_ids else 0, np.int32)
    out = np.empty(0 if with_ids else len(data), np.uint8)
    token_offsets = np.zeros(1 if with_ids else worst + 1, np.int64)
    from etl.text import wordscan

    n = wordscan.scan(data, offsets, word, space, max_tokens, *table, unk, ids, out, token_offsets, counts)
    rows = np.zeros(len(norm) + 1, np.int32)
    np.cumsum(counts, out=rows[1:])
    return rows, ids[:n], out, token_offsets[:n + 1]


def tokens_arrow(norm: pa.Array) -> pa.ListArray:
    """``TOKEN_PATTERN``'s matches in each normalized text (Python's ``findall``), as ``list<string>``."""
    rows, _, out, token_offsets = _scan(norm, -1)
    return pa.ListArray.from_arrays(pa.array(rows, pa.int32()), _string_array(out, token_offsets))


@functools.lru_cache(maxsize=4)
def _vocabulary(payload: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hash table, UTF-8 bytes and offsets of a word vocabulary (``payload``: JSON list, id = index)."""
    words = [w.encode("utf-8") for w in json.loads(payload)]
    keys = np.frombuffer(b"".join(words) or b"\0", np.uint8)
    key_offsets = np.zeros(len(words) + 1, np.int64)
    np.cumsum([len(w) for w in words], out=key_offsets[1:])
    from etl.text import wordscan

    return wordscan.build_table(keys, key_offsets), keys, key_offsets


def encode_arrow(norm: pa.Array, vocabulary_payload: str, max_len: int, unk: int) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of each normalized text (``TOKEN_PATTERN`` matches looked up in the vocabulary, unknown → ``unk``),
    truncated to ``max_len``: (offsets int32 [n+1], ids int32)."""
    rows, ids, _, _ = _scan(norm, max_len, _vocabulary(vocabulary_payload), unk)
    return rows, ids
