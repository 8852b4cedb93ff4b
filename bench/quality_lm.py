"""Language-model quality: the nanoGPT-style decoder (`model.name=gpt`, `train.task=lm`, trained by
`lakedl train` on 2 processes) against an interpolated Kneser–Ney trigram (dl/models/ngram.py) fitted on the
same training shards, both scored on the same dev and test events (every token of a text and its end).

    python bench/quality_lm.py [--epochs 6] [--dropout 0.2] [--patience 1]        (make quality-lm)

Corpus: the VADER review/tweet/editorial snippets through the text ETL (word tokens, hash split) — the
shards bench/quality_sst.py builds for its VADER rows. Writes bench/results/quality_lm.json (perplexities,
their ratio, wall times, samples) and the training curves PNG under bench/results/quality_lm/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
from common import command_line, recipe, write_result  # bench/common.py, beside this script
from quality_sst import shards  # the VADER shards, built once for both scripts

from dl.data.text import shard_tokenizer
from dl.models.ngram import KneserNeyTrigram
from dl.serve.sample import sample
from dl.train.job import run_train
from jobs.configs import load_config

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "quality_lm"
PROMPTS = ["the movie", "this product is", "i"]


def texts(split_dir: Path) -> list[list[int]]:
    return [ids for f in sorted(split_dir.glob("*.parquet")) for ids in pq.read_table(f, columns=["ids"])["ids"].to_pylist()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "data" / "work" / "quality_sst"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--patience", type=int, default=3, help="early stopping: epochs without a better dev perplexity")
    ap.add_argument("--sst", default=str(REPO.parent / "shared" / "data" / "sst"), help="unused; as quality_sst.py")
    args = ap.parse_args(argv)
    work = Path(args.work)
    data = shards(Path(args.sst), work, "vader")
    vocab = shard_tokenizer(data).vocab_size
    splits = {name: texts(data / name) for name in ("train", "dev", "test")}

    started = time.perf_counter()
    kn = KneserNeyTrigram(vocab).fit(splits["train"])
    kn_fit = time.perf_counter() - started
    kn_dev, kn_test = kn.evaluate(splits["dev"]), kn.evaluate(splits["test"])
    kn_wall = time.perf_counter() - started
    print(f"KN trigram: dev ppl {kn_dev['lm_perplexity']:.1f}, test ppl {kn_test['lm_perplexity']:.1f} "
          f"({kn_fit:.1f} s fit)", flush=True)

    overrides = [f"model.gpt.dropout={args.dropout}", f"train.epochs={args.epochs}", f"train.patience={args.patience}",
                 "train.progress=false", "train.log_every=200"]  # conf/recipes/gpt_vader.yml, with these
    run_dir = work / "runs" / "train" / "gpt_vader"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config("train", REPO / "conf", [recipe("gpt_vader")], overrides=[
        f"data.shards={data}", f"paths.runs_dir={work / 'runs'}", "run.name=gpt_vader", *overrides])
    started = time.perf_counter()
    summary = run_train(cfg)
    gpt_wall = time.perf_counter() - started
    history = json.loads((run_dir / "history.json").read_text())
    best = history[summary["best_epoch"]]
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "curves.png", OUT / "gpt_vader_curves.png")
    samples = sample(run_dir, PROMPTS, n=2, max_new=25, temperature=0.8, top_k=40, seed=0)
    for s in samples:
        print("  sample:", s["text"])
    test = summary["test"]
    tokens = {"train": sum(len(t) + 1 for t in splits["train"]), "dev": kn_dev["lm_tokens"], "test": kn_test["lm_tokens"]}
    assert test["lm_tokens"] == kn_test["lm_tokens"], "the two models must score the same events"
    rows = [
        {"command": command_line(), "case": "kn_trigram", "model": "interpolated Kneser-Ney 3-gram (D=0.75)",
         "dev_perplexity": round(kn_dev["lm_perplexity"], 2), "test_perplexity": round(kn_test["lm_perplexity"], 2),
         "wall_s": round(kn_wall, 1), "events": tokens, "vocab": vocab},
        {"command": command_line(), "case": "gpt", "model": "nanoGPT-style decoder",
         "dev_perplexity": round(best["dev_lm_perplexity"], 2), "test_perplexity": round(test["lm_perplexity"], 2),
         "test_vs_kn": round(test["lm_perplexity"] / kn_test["lm_perplexity"], 3),
         "beats_baseline": test["lm_perplexity"] < kn_test["lm_perplexity"], "best_epoch": summary["best_epoch"] + 1,
         "epochs_run": summary["epochs_run"], "wall_s": round(gpt_wall), "processes": summary["processes"],
         "recipe": "conf/recipes/gpt_vader.yml", "overrides": overrides, "samples": samples, "events": tokens, "vocab": vocab},
    ]
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k not in ("samples", "overrides")}), flush=True)
    write_result("quality_lm", command_line(), rows)


if __name__ == "__main__":
    main()
