"""SST quality runs through our own pipeline: the text ETL (phrase-level training set: every labelled
subtree of train; dev and test are whole sentences) → `lakedl train` (2 processes, local launcher) →
test-set metrics of the epoch selected on dev.

    python bench/quality_sst.py [--sst ../shared/data/sst] [--rows bilstm_sst2 textcnn_sst2 ...]   (make quality)

Writes bench/results/quality_sst.json (test accuracy, macro-F1, dev accuracy, wall time per row) and, per
row, a confusion-matrix PNG and the training curves under bench/results/quality_sst/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import command_line, write_result  # bench/common.py, beside this script

from dl.plots import confusion_matrix
from dl.train import run_train
from etl.config import load_config
from etl.pipelines import run_etl_text

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "quality_sst"
GLOVE = REPO / "data" / "raw" / "glove100" / "vectors.bin"

COMMON = ["optim.name=adam", "train.batch_size=64", "train.progress=false", "train.log_every=200",
          "launcher.kind=local", "launcher.num_processes=2"]
ROWS = {  # name: (task, bar, overrides)
    "bilstm_sst2": ("sentiment", 0.86, ["model.name=rnn", "model.rnn.embed_dim=300", "model.rnn.hidden=150",
                                        "model.rnn.dropout=0.5", "optim.lr=0.002", "train.epochs=4"]),
    "bilstm_glove_sst2": ("sentiment", 0.86, ["model.name=rnn", "model.rnn.embed_dim=100", "model.rnn.hidden=150",
                                              "model.rnn.dropout=0.5", "optim.lr=0.002", "train.epochs=4",
                                              f"model.embeddings={GLOVE}"]),
    "bilstm_glove_sst5": ("rating", 0.46, ["model.name=rnn", "model.rnn.embed_dim=100", "model.rnn.hidden=150",
                                           "model.rnn.dropout=0.5", "optim.lr=0.002", "train.epochs=4",
                                           f"model.embeddings={GLOVE}"]),
    "textcnn_sst2": ("sentiment", 0.85, ["model.name=cnn", "model.cnn.embed_dim=100", f"model.embeddings={GLOVE}",
                                         "optim.lr=0.001", "train.epochs=4"]),
    "transformer_sst2": ("sentiment", 0.82, ["model.name=transformer", "model.transformer.d_model=128",
                                             "model.transformer.layers=2", "optim.name=adamw", "optim.lr=0.0005",
                                             "schedule.name=cosine", "schedule.warmup_steps=300", "train.epochs=4"]),
}
LABELS = {"sentiment": ["negative", "positive"], "rating": ["very neg", "neg", "neutral", "pos", "very pos"]}


def shards(sst: Path, work: Path) -> Path:
    out = work / "shards" / "sst_phrases"
    if (out / "manifest.json").is_file():
        return out
    cfg = load_config("etl_text", REPO / "conf", overrides=[
        f"input.paths={json.dumps([str(sst)])}", "input.format=sst", "input.sst_phrases=true", "split.mode=given",
        "output.name=sst_phrases", f"output.shards_dir={work / 'shards'}", f"paths.tables_dir={work / 'tables'}",
        "tokenize.vocab.min_count=1", "validation.max_quarantine_rate=0.2", "spark.master=local[2]"])
    report = run_etl_text(cfg)  # the train phrases of the dev trees appended to SST's train.txt are quarantined
    print(f"ETL: kept {report['rows_kept']} quarantined {report['rows_quarantined']} {report['rows_per_split']}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sst", default=str(REPO.parent / "shared" / "data" / "sst"))
    ap.add_argument("--work", default=str(REPO / "data" / "work" / "quality_sst"))
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--record", nargs="*", default=[], metavar="ROW=RUN_DIR",
                    help="record an already finished `lakedl train` run of ROW's settings instead of training it")
    args = ap.parse_args(argv)
    if any("glove" in r for r in args.rows) and not GLOVE.is_file():
        sys.exit(f"{GLOVE} missing: run `lakedl data fetch --source glove100` first")
    work = Path(args.work)
    data = shards(Path(args.sst), work) if args.rows else None
    previous = OUT.parent / "quality_sst.json"
    results = {r["case"]: r for r in json.loads(previous.read_text())["results"]} if previous.is_file() else {}
    recorded = dict(item.split("=", 1) for item in args.record)
    for name in [*args.rows, *recorded]:
        task, bar, overrides = ROWS[name]
        if name in recorded:
            run_dir = Path(recorded[name])
            summary = json.loads((run_dir / "result.json").read_text())
            wall = summary["seconds"]
        else:
            run_dir = work / "runs" / "train" / name
            shutil.rmtree(run_dir, ignore_errors=True)
            cfg = load_config("train", REPO / "conf", overrides=[
                f"data.shards={data}", f"paths.runs_dir={work / 'runs'}", f"run.name={name}", f"train.task={task}",
                "train.seed=0", *COMMON, *overrides])
            started = time.perf_counter()
            summary = run_train(cfg)
            wall = time.perf_counter() - started
        test, best = summary["test"], summary["best_epoch"]
        dev = json.loads((run_dir / "history.json").read_text())[best]
        OUT.mkdir(parents=True, exist_ok=True)
        confusion_matrix(test[f"{task}_confusion"], LABELS[task], OUT / f"{name}_confusion.png",
                         title=f"{name}: test accuracy {test[f'{task}_accuracy']:.3f}")
        shutil.copy(run_dir / "curves.png", OUT / f"{name}_curves.png")
        row = {"command": command_line(), "case": name, "model": name.split("_")[0], "task": "sst2" if task == "sentiment" else "sst5", "train_level": "phrase",
               "test_accuracy": round(test[f"{task}_accuracy"], 4), "test_f1_macro": round(test[f"{task}_f1_macro"], 4),
               "dev_accuracy": round(dev[f"dev_{task}_accuracy"], 4), "best_epoch": best + 1,
               "epochs_run": summary["epochs_run"], "test_examples": test[f"{task}_examples"], "bar": bar,
               "meets_bar": test[f"{task}_accuracy"] >= bar, "wall_s": round(wall), "processes": summary["processes"],
               "overrides": overrides, **({"recorded_from": str(run_dir)} if name in recorded else {})}
        results[name] = row
        print(json.dumps(row), flush=True)
        write_result("quality_sst", command_line(), list(results.values()))


if __name__ == "__main__":
    main()
