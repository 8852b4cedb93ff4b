"""Time to accuracy: how long the BiLSTM SST-2 recipe trains until its dev accuracy reaches 84%, with 2
processes x 1 thread (the recipe: local launcher, gloo) vs 1 process x 2 threads (what a user of this 2-core
box would otherwise run), same recipe, same per-process batch (so the 2-process run steps with twice the rows).

    python bench/time_to_accuracy.py [--recipe conf/recipes/bilstm_glove_cos_sst2.yml] [--target 0.84]
                                     [--repeats 3]                              (make bench-time-to-accuracy)

Each run is ``lakedl train --conf RECIPE --set train.stop_at=TARGET`` in its own process (the sides alternate,
run after run). Its time to accuracy is the training and dev evaluation of the epochs up to and including the
first one at or above the target (history.json's epoch_seconds + eval_seconds): process start, data opening
and model building are outside it, as they are outside every other timer here. The row: the median over
``--repeats`` runs per side, ``ratio`` = 2x1 / 1x2 (lower is better; issue 23's goal: <= 0.8), written into
bench/results/scaling.json as ``rnn_time_to_84_dev_2x1_vs_1x2``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import command_line, git_commit, write_merged  # bench/common.py, beside this script

REPO = Path(__file__).resolve().parents[1]
SIDES = {"2x1": [], "1x2": ["--set", "launcher.num_processes=1"]}  # 1 process: in-process, torch's 2 threads


def run(recipe: Path, target: float, side: str, runs: Path, name: str) -> dict:
    cmd = [sys.executable, "-m", "jobs.cli", "train", "--conf", str(recipe), "--run-name", name,
           "--set", f"train.stop_at={target}", "--set", "train.progress=false", "--set", f"paths.runs_dir={runs}",
           *SIDES[side]]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if out.returncode:
        raise SystemExit(f"{side} run failed:\n{out.stderr[-3000:]}")
    history = json.loads((runs / "train" / name / "history.json").read_text())
    seconds, reached = 0.0, None
    for h in history:
        seconds += h["epoch_seconds"] + h["eval_seconds"]
        if h["dev_sentiment_accuracy"] >= target:
            reached = h
            break
    return {"seconds": round(seconds, 1), "reached": reached is not None, "epochs": (reached or history[-1])["epoch"] + 1,
            "dev_accuracy": round((reached or history[-1])["dev_sentiment_accuracy"], 4)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=REPO / "conf" / "recipes" / "bilstm_glove_cos_sst2.yml")
    ap.add_argument("--target", type=float, default=0.84)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    commit = git_commit()
    found: dict[str, list[dict]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="tta-") as tmp:
        for i in range(args.repeats):
            for side in SIDES:
                found[side].append(run(args.recipe, args.target, side, Path(tmp), f"{side}_{i}"))
                print(f"{side} run {i + 1}: {found[side][-1]}", flush=True)
    if not all(r["reached"] for runs in found.values() for r in runs):
        raise SystemExit(f"some run never reached {args.target} dev accuracy: {found}")
    median = {side: statistics.median(r["seconds"] for r in runs) for side, runs in found.items()}
    row = {"case": f"rnn_time_to_{round(args.target * 100)}_dev_2x1_vs_1x2", "bench": "time_to_accuracy",
           "model": "rnn", "ratio": round(median["2x1"] / median["1x2"], 3), "ratio_lower_is_better": True,
           "goal": 0.8, "baseline": "the same recipe on 1 process x 2 threads", "target_dev_accuracy": args.target,
           "seconds_2x1": median["2x1"], "seconds_1x2": median["1x2"], "runs_2x1": found["2x1"],
           "runs_1x2": found["1x2"], "recipe": str(args.recipe.relative_to(REPO)), "git_commit": commit,
           "command": command_line()}
    print(f"time to {args.target:.0%} dev: 2x1 {median['2x1']:.0f}s, 1x2 {median['1x2']:.0f}s -> {row['ratio']:.2f}x "
          f"(goal <= 0.8)", flush=True)
    print(f"wrote {write_merged('scaling', [row])}")


if __name__ == "__main__":
    main()
