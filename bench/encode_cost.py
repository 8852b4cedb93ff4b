"""Per-row cost of the text ETL's normalize + encode step: the batch (Arrow kernel) encoder against the per-row
Python path it replaced, on every row of the real corpora (VADER, GCIDE, SST with phrases).

    python bench/encode_cost.py   (make bench-encode)

Both sides encode the same rows in batches of 10,000 (Spark's Arrow batch size) with the same word vocabulary
(tokens seen at least twice, 40,000 at most), max_len 256, in this one process; text loading and the vocabulary
are outside the timer; one warm-up pass each, then the median of 5 passes. Writes the row
``tokenizer_encode_cost`` (ratio = new / old seconds per row) into bench/results/scale.json, keeping its other rows.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from common import command_line, git_commit, write_merged  # bench/common.py, beside this script

from etl.text.fastword import _patterns
from etl.text.textprep import UNK, WORD_SPECIALS, Normalizer, TextTokenizer, encode_batch, word_tokens

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.data.test_fastword import corpora  # noqa: E402  (the corpora the equality test reads)

BATCH, MAX_LEN = 10_000, 256


def per_row(texts: list[str], normalizer: Normalizer, index: dict[str, int]) -> int:
    """The replaced path: normalize, find tokens and look them up row by row; ids flattened as before."""
    norm = [normalizer(t) for t in texts]
    ids = [[index.get(t, UNK) for t in word_tokens(text)][:MAX_LEN] for text in norm]
    lengths = np.fromiter(map(len, ids), np.int32, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, count=int(lengths.sum()))
    return len(flat)


def main() -> None:
    texts = corpora(REPO / "data" / "raw", REPO.parent / "shared" / "data" / "sst")
    normalizer = Normalizer()
    counts = Counter(t for text in texts for t in word_tokens(normalizer(text)))
    tok = TextTokenizer("word", json.dumps([*WORD_SPECIALS, *(t for t, c in counts.most_common(40_000) if c >= 2)]))
    index = {t: i for i, t in enumerate(json.loads(tok.payload))}
    batches = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]
    arrow_batches = [pa.array(b, pa.string()) for b in batches]

    def old() -> int:
        return sum(per_row(b, normalizer, index) for b in batches)

    def new() -> int:
        return sum(int(encode_batch(b, normalizer, tok, MAX_LEN, False)["length"].sum()) for b in arrow_batches)

    times = {}
    for name, fn in (("old", old), ("new", new)):
        fn()  # warm-up (and the new side's Unicode tables, built once per process)
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            tokens = fn()
            runs.append(time.perf_counter() - started)
        times[name] = (statistics.median(runs), tokens)
        print(f"{name}: {1e6 * times[name][0] / len(texts):.2f} us/row ({tokens:,} ids)", flush=True)
    assert times["old"][1] == times["new"][1], "the two paths gave different numbers of ids"
    python_rows = sum(int(pc.sum(pc.match_substring_regex(b, _patterns(True)["python"])).as_py() or 0)
                      for b in arrow_batches)  # rows the batch encoder hands to the per-row normalizer
    row = {"case": "tokenizer_encode_cost", "python_path_share": round(python_rows / len(texts), 4), "ratio": round(times["new"][0] / times["old"][0], 3), "goal": 0.25,
           "rows": len(texts), "us_per_row_old": round(1e6 * times["old"][0] / len(texts), 2),
           "us_per_row_new": round(1e6 * times["new"][0] / len(texts), 2), "batch_rows": BATCH, "max_len": MAX_LEN,
           "baseline": "the per-row Python path (Normalizer per text, TOKEN_PATTERN findall, dict lookup)",
           "git_commit": git_commit(), "command": command_line()}
    print(f"ratio new/old {row['ratio']}; wrote {write_merged('scale', [row])}")


if __name__ == "__main__":
    main()
