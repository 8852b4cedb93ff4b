"""Random vs Bayesian (TPE) search on SST-2 through `lakedl tune`: the same space
(conf/base/spaces/bow_sst.yml: optimizer, learning rate, weight decay, embedding and hidden sizes, dropout,
batch size of the bag-of-embeddings model), the same trial budget, 2 trials at once as Spark tasks, median
pruning, phrase-level training on the SST shards of bench/quality_sst.py, model selection on dev.

    python bench/tune_sst.py [--trials 12] [--epochs 3]   (make bench-tune)

A finished study is reused (rerunning only recomputes the figures); delete data/work/tune_sst to search anew.
Writes bench/results/tune_sst.json (per strategy: best dev accuracy, the trial that reached it, the
test accuracy of that trial's selected epoch, trial states, wall time, and whether/when the Bayesian search
reached the random search's best) and bench/results/tune_sst.png (best dev accuracy so far per trial).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import command_line, write_result  # bench/common.py, beside this script
from quality_sst import shards

REPO = Path(__file__).resolve().parents[1]
# different seeds: with one seed TPE's random start-up trials would repeat the random search's first draws
SEEDS = {"random": 0, "bayes": 1}


def study_span(summary: dict) -> float:
    """Seconds from the first trial's start to the last trial's end (also right for a reused study)."""
    import optuna

    trials = optuna.load_study(study_name=summary["study"], storage=summary["storage"]).trials
    return (max(t.datetime_complete for t in trials if t.datetime_complete)
            - min(t.datetime_start for t in trials if t.datetime_start)).total_seconds()


def main(argv: list[str] | None = None) -> None:
    from dl.train.plots import _pyplot, _save
    from dl.tune.study import run_tune
    from jobs.configs import load_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sst", default=str(REPO.parent / "shared" / "data" / "sst"))
    ap.add_argument("--work", default=str(REPO / "data" / "work" / "tune_sst"))
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args(argv)
    data = shards(Path(args.sst), REPO / "data" / "work" / "quality_sst", "phrases")
    work = Path(args.work)
    summaries, walls = {}, {}
    for strategy, seed in SEEDS.items():
        cfg = load_config("tune", REPO / "conf", overrides=[
            f"data.shards={data}", f"paths.runs_dir={work}", "model.name=bow", "train.task=sentiment",
            f"train.epochs={args.epochs}", "schedule.name=cosine", "data.eval_train_rows=20000",
            f"tune.space={REPO / 'conf' / 'base' / 'spaces' / 'bow_sst.yml'}", f"tune.strategy={strategy}",
            f"tune.trials={args.trials}", "tune.parallel=2", f"tune.study=sst2-{strategy}-s{seed}", f"tune.seed={seed}"])
        summaries[strategy] = run_tune(cfg)
        walls[strategy] = study_span(summaries[strategy])
        print(strategy, json.dumps(summaries[strategy]["best"]), flush=True)
    random_best = summaries["random"]["best"]["value"]
    random_needed = summaries["random"]["best"]["number"] + 1  # trials the random search took to find its best
    curve = summaries["bayes"]["best_so_far"]
    reached = next((i + 1 for i, v in enumerate(curve) if v is not None and v >= random_best), None)
    results = []
    for strategy, s in summaries.items():
        best = s["best"]
        test = json.loads((Path(best["run_dir"]) / "result.json").read_text())["test"]
        results.append({"case": f"{strategy}_search", "model": "bow", "task": "sst2", "strategy": strategy,
                        "trials": s["trials"], "states": s["states"], "parallel_trials": 2,
                        "best_dev_accuracy": round(best["value"], 4), "best_trial": best["number"],
                        "test_accuracy_of_best": round(test["sentiment_accuracy"], 4), "best_params": best["params"],
                        "best_so_far": [None if v is None else round(v, 4) for v in s["best_so_far"]],
                        "seed": SEEDS[strategy], "wall_s": round(walls[strategy]), "train_level": "phrase"})
    fewer = reached is not None and reached < random_needed
    results.append({"case": "bayes_vs_random", "random_best_dev_accuracy": round(random_best, 4),
                    "random_best_found_at_trial": random_needed, "bayes_reached_random_best_at_trial": reached,
                    "bayes_in_fewer_trials": fewer,
                    "verdict": "the Bayesian search did not reach the random search's best dev accuracy" if reached is None
                    else (f"the Bayesian search reached the random search's best dev accuracy at trial {reached}, the "
                          f"random search found it at trial {random_needed}: "
                          + ("fewer trials" if fewer else "not in fewer trials")
                          + f"; best dev {summaries['bayes']['best']['value']:.4f} vs {random_best:.4f}")})
    print(results[-1]["verdict"], flush=True)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for strategy, s in summaries.items():
        ax.plot(range(1, len(s["best_so_far"]) + 1), s["best_so_far"], marker="o", label=strategy)
    ax.set(xlabel="trial", ylabel="best dev accuracy so far", title="SST-2, bag of embeddings: random vs TPE")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(plt, fig, REPO / "bench" / "results" / "tune_sst.png")
    write_result("tune_sst", command_line(), results)


if __name__ == "__main__":
    main()
