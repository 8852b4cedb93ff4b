"""SST quality runs through our own pipeline: the text ETL → `lakedl train` (2 processes, local launcher)
→ test-set metrics of the epoch selected on dev. Word-level rows train phrase-level (every labelled
subtree of train); the fine-tuned MiniLM rows train on whole sentences with MiniLM's own WordPiece ids,
except ``minilm_phrases_sst2`` (every subtree, length-bucketed batches). Dev and test are whole sentences
for every row.

    python bench/quality_sst.py [--sst ../shared/data/sst] [--rows bilstm_sst2 textcnn_sst2 ...]   (make quality)

Each row's settings are conf/recipes/<row>.yml (`lakedl train --conf` runs the same), its shards'
conf/recipes/etl/<shards>.yml; this script adds only where things go (work dir, run name, seed).

Writes bench/results/quality_sst.json (test accuracy, macro-F1, dev accuracy, wall time per row) and, per
row, a confusion-matrix PNG and the training curves under bench/results/quality_sst/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common import command_line, git_commit, recipe, recipe_settings, write_result  # bench/common.py

from dl.train.job import run_train
from dl.train.plots import confusion_matrix
from etl.text.pipeline import run_etl_text
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "quality_sst"
GLOVE = REPO / "data" / "raw" / "glove100" / "vectors.bin"

BENCH = ["train.progress=false", "train.log_every=200"]  # added to each recipe: no bars in logs
ROWS = {  # name: bar on test accuracy (None: a reference row); the settings are conf/recipes/<name>.yml
    "bilstm_sst2": 0.86, "bilstm_glove_sst2": 0.86, "bilstm_glove_cos_sst2": 0.86, "bilstm_glove_sst5": 0.46,
    "bilstm_glove_cos_sst5": 0.46, "textcnn_sst2": 0.85, "textcnn_wide_sst2": 0.85, "textcnn_static_sst2": 0.85,
    "textcnn_edges_sst2": 0.85, "textcnn_slowemb_sst2": 0.85, "textcnn_kim_sst2": 0.85,
    "textcnn_kim_maxnorm_sst2": 0.85, "textcnn_rand_sst2": None, "textcnn_rand_uniform_sst2": None,
    "textcnn_kim_uniform_sst2": 0.85,
    "transformer_sst2": 0.82, "transformer_max_sst2": 0.82,
    "transformer_max_slowemb_sst2": 0.82, "transformer_sin_sst2": 0.82, "transformer_long_sst2": 0.82,
    "transformer_frozen_sst2": 0.82, "transformer_reg_sst2": 0.82, "minilm_sst2": 0.90, "minilm_sst5": 0.50,
    "minilm_phrases_sst2": 0.90, "bilstm_vader_multitask": None, "bilstm_vader_reg": None,
}
LABELS = {"sentiment": ["negative", "positive"], "rating": ["very neg", "neg", "neutral", "pos", "very pos"]}


def shards(sst: Path, work: Path, kind: str) -> Path:
    """``phrases``: word vocabulary, every labelled subtree of train; ``minilm``: MiniLM's WordPiece ids,
    whole sentences; ``minilm_phrases``: MiniLM's ids, every labelled subtree of train; ``vader``: the VADER
    corpora. Built once with conf/recipes/etl/<name>.yml (SST from ``sst``), into ``work``."""
    name = {"phrases": "sst_phrases", "minilm": "sst_minilm", "minilm_phrases": "sst_minilm_phrases",
            "vader": "vader"}[kind]
    out = work / "shards" / name
    if (out / "manifest.json").is_file():
        return out
    inputs = ([f"input.paths={json.dumps([str(sst)])}"] if kind != "vader" else
              [f"input.paths={json.dumps(sorted(str(p) for p in (REPO / 'data' / 'raw' / 'reviews').glob('vader_*.jsonl')))}"])
    cfg = load_config("etl_text", REPO / "conf", [recipe(f"etl/{name}")], overrides=[*inputs,
        f"output.shards_dir={work / 'shards'}", f"paths.tables_dir={work / 'tables'}",
        f"tokenize.subword.minilm_dir={REPO / 'data' / 'raw' / 'minilm' / 'model'}", "spark.master=local[2]"])
    report = run_etl_text(cfg)  # the dev trees appended to SST's train.txt are quarantined as duplicates
    print(f"ETL {name}: kept {report['rows_kept']} quarantined {report['rows_quarantined']} {report['rows_per_split']}")
    return out


def data_kind(row: str) -> str:
    if row.startswith("minilm"):
        return "minilm_phrases" if "phrases" in row else "minilm"
    return "vader" if "vader" in row else "phrases"


def figures(name: str, task: str, test: dict, dev: dict) -> dict:
    """The row's test (and selected dev epoch's) figures; a confusion-matrix PNG per classification head."""
    heads = ["sentiment", "rating", "rating_reg"] if task == "multitask" else [task]
    out: dict = {}
    for head in heads:
        prefix = "" if head == task else f"{head}_"  # single-task rows keep the plain keys
        if head == "rating_reg":
            out.update({f"test_{prefix}mae": round(test["rating_reg_mae"], 4),
                        f"test_{prefix}rmse": round(test["rating_reg_rmse"], 4),
                        f"dev_{prefix}mae": round(dev["dev_rating_reg_mae"], 4),
                        f"test_{prefix}examples": test["rating_reg_examples"]})
            continue
        png = OUT / (f"{name}_confusion.png" if head == task else f"{name}_{head}_confusion.png")
        confusion_matrix(test[f"{head}_confusion"], LABELS[head], png,
                         title=f"{name} ({head}): test accuracy {test[f'{head}_accuracy']:.3f}")
        out.update({f"test_{prefix}accuracy": round(test[f"{head}_accuracy"], 4),
                    f"test_{prefix}f1_macro": round(test[f"{head}_f1_macro"], 4),
                    f"dev_{prefix}accuracy": round(dev[f"dev_{head}_accuracy"], 4),
                    f"test_{prefix}examples": test[f"{head}_examples"]})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sst", default=str(REPO.parent / "shared" / "data" / "sst"))
    ap.add_argument("--work", default=str(REPO / "data" / "work" / "quality_sst"))
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--record", nargs="*", default=[], metavar="ROW=RUN_DIR",
                    help="record an already finished `lakedl train` run of ROW's settings instead of training it")
    ap.add_argument("--seed", type=int, default=0,
                    help="train.seed; a seed other than 0 records each row as <row>_seed<N> beside the seed-0 one")
    args = ap.parse_args(argv)
    os.chdir(REPO)  # the recipes name repo-relative files (data/raw/glove100/vectors.bin)
    if any("glove100" in recipe(r).read_text() for r in args.rows) and not GLOVE.is_file():
        sys.exit(f"{GLOVE} missing: run `lakedl data fetch --source glove100` first")
    work = Path(args.work)
    previous = OUT.parent / "quality_sst.json"
    results = {r["case"]: r for r in json.loads(previous.read_text())["results"]} if previous.is_file() else {}
    recorded = dict(item.split("=", 1) for item in args.record)
    for name in [*args.rows, *recorded]:
        bar = ROWS[name]
        case = name if args.seed == 0 else f"{name}_seed{args.seed}"
        if name in recorded:
            run_dir = Path(recorded[name])
            summary = json.loads((run_dir / "result.json").read_text())
            wall = summary["seconds"]
        else:
            run_dir = work / "runs" / "train" / case
            shutil.rmtree(run_dir, ignore_errors=True)
            data = shards(Path(args.sst), work, data_kind(name))
            cfg = load_config("train", REPO / "conf", [recipe(name)], overrides=[
                f"data.shards={data}", f"paths.runs_dir={work / 'runs'}", f"run.name={case}",
                f"train.seed={args.seed}", *BENCH])
            started = time.perf_counter()
            summary = run_train(cfg)
            wall = time.perf_counter() - started
        task = load_config("train", REPO / "conf", [recipe(name)]).train.task
        test, best = summary["test"], summary["best_epoch"]
        dev = json.loads((run_dir / "history.json").read_text())[best]
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(run_dir / "curves.png", OUT / f"{case}_curves.png")
        row = {"command": command_line(), "case": case, "model": name.split("_")[0], "dataset": "vader" if "vader" in name else "sst",
               "task": {"sentiment": "sst2", "rating": "sst5"}.get(task, task) if "vader" not in name else task,
               "train_level": {"phrases": "phrase", "minilm": "sentence", "minilm_phrases": "phrase",
                               "vader": "snippet"}[data_kind(name)],
               **figures(case, task, test, dev), "seed": args.seed, "best_epoch": best + 1, "epochs_run": summary["epochs_run"],
               "bar": bar, "wall_s": round(wall), "processes": summary["processes"],
               "git_commit": git_commit(), "recipe": f"conf/recipes/{name}.yml", "overrides": recipe_settings(name),
               **({"recorded_from": str(run_dir)} if name in recorded else {})}
        if bar is not None:
            row["meets_bar"] = row["test_accuracy"] >= bar
        results[case] = row
        print(json.dumps(row), flush=True)
        write_result("quality_sst", command_line(), list(results.values()))


if __name__ == "__main__":
    main()
