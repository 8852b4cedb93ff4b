"""Word-level normalization and encoding of a whole Arrow batch at once, with the ids and ``text_norm`` of the
per-row Python path (etl/text/textprep.py ``Normalizer`` + ``TOKEN_PATTERN`` + vocabulary lookup), exactly.

Arrow's compute kernels do the work in C++: NFKC and lower case (utf8proc), the URL placeholder, whitespace
collapsing and token matching (RE2), the vocabulary lookup (one hash join of the batch's tokens, ``index_in``).
Python's regular expressions differ from RE2 in what ``\\w`` and ``\\s`` mean (Unicode ``str.isalnum``/``isspace``
vs ASCII), so both classes are spelled out as the code-point ranges Python uses, read from this interpreter.
What has no C++ equivalent runs through the Python normalizer, only on the rows that need it: rows holding ``&``
or a character NFKC turns into one (``html.unescape``), and rows holding a character where utf8proc's NFKC or
lower case could differ from Python's (found by comparing both on every code point, once per process: another
Unicode version, the context-dependent final sigma) or the token marker; every row when ``number_token`` is set
(its look-behind has no RE2 form).
Tokens are found by RE2 with ``TOKEN_PATTERN``'s alternatives in the same order (leftmost-first, as Python's
``findall``): each match is wrapped in a marker character, the text split on it, empty and space pieces dropped.
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
MARK = "\x01"  # wraps each token match; a row holding it goes through the Python path


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
    is not Python's (plus ``Σ``, whose Python lower case depends on its neighbours, and MARK), and those NFKC
    turns into ``&``. They depend on this interpreter's and pyarrow's Unicode data only: computed once (~2 s) and
    kept in the user's cache directory (``$LAKEDL_CACHE_DIR``, else ``~/.cache/lakedl``), so each Spark Python
    worker reads them."""
    import pyarrow

    key = f"unicode-{sys.version_info[0]}.{sys.version_info[1]}-{unicodedata.unidata_version}-{pyarrow.__version__}"
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
    odd[[ord("Σ"), ord(MARK)]] = True
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
    token = TOKEN_PATTERN.replace(r"[^\w\s]", f"[^{t['word']}{t['space']}]").replace(r"\w", f"[{t['word']}]")
    assert "\\s" not in token and "\\w" not in token, TOKEN_PATTERN  # every class spelled out
    return {"token": token, "space_run": f"[{t['space']}]+", "url": f"(?i)(?:https?://|www\\.)[^{t['space']}]+",
            "python": f"[{t['odd']}{t['amp'] if html_unescape else ''}]"}


@functools.lru_cache(maxsize=4)
def _vocabulary(payload: str) -> pa.Array:
    return pa.array(json.loads(payload), pa.string())


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
    if normalizer.lowercase:
        out = pc.utf8_lower(out)
    out = pc.utf8_trim(pc.replace_substring_regex(out, p["space_run"], " "), " ")
    rows = np.flatnonzero(np.asarray(pc.match_substring_regex(texts, p["python"]), dtype=bool))
    return _replace_rows(out, rows, [normalizer(t) for t in texts.take(rows).to_pylist()])


def _replace_rows(arr: pa.Array, rows: np.ndarray, values: list[str]) -> pa.Array:
    """``arr`` with ``rows`` (ascending) set to ``values``, in Arrow (no Python string per row of the batch)."""
    if len(rows) == 0:
        return arr
    mask = np.zeros(len(arr), bool)
    mask[rows] = True
    return pc.replace_with_mask(arr, pa.array(mask), pa.array(values, pa.string()))


def tokens_arrow(norm: pa.Array) -> pa.ListArray:
    """``TOKEN_PATTERN``'s matches in each normalized text (Python's ``findall``), as ``list<string>``."""
    norm = pc.fill_null(norm, "")
    marked = pc.replace_substring_regex(norm, _patterns(True)["token"], MARK + "\\0" + MARK)
    pieces = pc.split_pattern(marked, MARK)
    flat = pieces.flatten()
    keep = pc.and_(pc.not_equal(flat, ""), pc.not_equal(flat, " "))
    parents = np.asarray(pc.list_parent_indices(pieces).filter(keep), dtype=np.int64)
    offsets = np.zeros(len(norm) + 1, np.int32)
    np.cumsum(np.bincount(parents, minlength=len(norm)), out=offsets[1:])
    tokens = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat.filter(keep))
    marks = np.flatnonzero(np.asarray(pc.match_substring(norm, MARK), dtype=bool))
    if len(marks):  # the marker is in the text itself: these rows' tokens the Python way
        rows = tokens.to_pylist()
        for r in marks.tolist():
            rows[r] = re.findall(TOKEN_PATTERN, norm[r].as_py())
        tokens = pa.array(rows, pa.list_(pa.string()))
    return tokens


def encode_arrow(norm: pa.Array, vocabulary_payload: str, max_len: int, unk: int) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of each normalized text (``TOKEN_PATTERN`` matches looked up in the vocabulary, unknown → ``unk``),
    truncated to ``max_len``: (offsets int32 [n+1], ids int32)."""
    tokens = tokens_arrow(norm)
    ids = np.asarray(pc.fill_null(pc.index_in(tokens.flatten(), value_set=_vocabulary(vocabulary_payload)), unk),
                     dtype=np.int32)
    starts = np.asarray(tokens.offsets, dtype=np.int64)
    counts = np.diff(starts)
    position = np.arange(len(ids)) - np.repeat(starts[:-1], counts)
    lengths = np.minimum(counts, max_len)
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, ids[position < max_len]
