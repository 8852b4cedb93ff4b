"""int8 scoring: SST-2 test accuracy and rows/s of trained classifiers exported as a float bundle and as an int8
one (PyTorch dynamic quantization of Linear/LSTM layers, `lakedl bundle export --quantize int8`).

    python bench/int8.py --run bilstm=DIR [--run minilm=DIR ...] [--repeats 3]     (make bench-int8 INT8_RUNS=...)

DIR is a finished `lakedl train` run on SST-2 (e.g. `make quality QUALITY_ROWS="bilstm_glove_sst2 minilm_sst2"`
records them under data/work/quality). Both bundles score the raw SST test sentences (data/raw/reviews/
sst_test.jsonl, the 1,821 with a binary label) with `Bundle.predict` in one process with 2 threads, batches of
256; the texts are loaded and both bundles built before the timer, one warm-up pass each, then the median of
``--repeats`` passes. Writes rows ``int8_<name>`` (``accuracy_loss`` = float − int8, as a fraction;
``rows_per_s`` int8 and float) into bench/results/scale.json, keeping its other rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import command_line, git_commit, write_merged  # bench/common.py, beside this script

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR of a trained SST-2 classifier")
    ap.add_argument("--test", default=str(REPO / "data" / "raw" / "reviews" / "sst_test.jsonl"))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import torch

    from dl.serve.bundle import export_bundle, load_bundle

    torch.set_num_threads(2)
    rows = [json.loads(line) for line in Path(args.test).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("label") is not None]
    texts, gold = [r["text"] for r in rows], [int(r["label"]) for r in rows]
    commit, results = git_commit(), []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.run:
            name, _, run = spec.partition("=")
            measured = {}
            for quantize in ("none", "int8"):
                bundle = load_bundle(export_bundle(run, Path(tmp) / f"{name}-{quantize}", quantize=quantize))
                labels = bundle.labels
                predicted = bundle.predict(texts)  # warm-up
                times = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    predicted = bundle.predict(texts)
                    times.append(time.perf_counter() - started)
                correct = sum(labels.index(p) == g for p, g in zip(predicted["label"], gold))
                measured[quantize] = {"accuracy": correct / len(gold),
                                      "rows_per_s": len(texts) / statistics.median(times)}
                print(f"{name} {quantize}: accuracy {measured[quantize]['accuracy']:.4f}, "
                      f"{measured[quantize]['rows_per_s']:,.0f} rows/s", flush=True)
            results.append({"case": f"int8_{name}", "model": bundle.meta["config"]["model"], "rows": len(texts),
                            "accuracy_float": round(measured["none"]["accuracy"], 4),
                            "accuracy_int8": round(measured["int8"]["accuracy"], 4),
                            "accuracy_loss": round(measured["none"]["accuracy"] - measured["int8"]["accuracy"], 4),
                            "goal_accuracy_loss": 0.005, "rows_per_s": round(measured["int8"]["rows_per_s"]),
                            "rows_per_s_float": round(measured["none"]["rows_per_s"]),
                            "ratio": round(measured["int8"]["rows_per_s"] / measured["none"]["rows_per_s"], 3),
                            "baseline": "the same run's float bundle, same texts, process and threads",
                            "run": str(run), "git_commit": commit, "command": command_line()})
    print(f"wrote {write_merged('scale', results)}")


if __name__ == "__main__":
    main()
