"""Domain transfer: trained SST-2 classifiers scored on the other labelled corpora — VADER's amazon, movie, nyt
and tweets snippets, binarised by the sign of their mean rating (neutral ones, mean 0, have no label and are
left out; so are the snippets that are SST sentences: 90% of the movie domain is SST, which the SST models
were trained on) — beside SST-2 test itself.

    python bench/transfer.py --run bilstm_glove_cos_sst2=RUN_DIR [--run NAME=RUN_DIR ...]
    python bench/transfer.py --run sentiment_general=RUN_DIR --trained-on sst+vader

A model trained beyond SST (``--trained-on`` other than ``sst``) gets, on each other domain, the best SST-only
row's accuracy beside its own (``beats_every_sst_only``) and on SST-2 the points it loses against the SST-only
model of its recipe (``--counterpart``; goal: at most 1).

RUN_DIR is a finished `lakedl train` run (e.g. `lakedl train --conf conf/recipes/<NAME>.yml`), exported to a float
bundle here and scored in this process with `Bundle.predict`, texts as the raw files hold them. Each domain's
``accuracy`` is on its held-out test split — the rows the text ETL's hash split (conf/recipes/etl/vader.yml:
split seed and fractions) puts in test, so a recipe that trains on the domains is compared on rows it never saw —
and ``accuracy_all`` on every labelled row of the domain. SST-2: the 1,821 labelled test sentences.

Writes one row per (model, domain) into bench/results/transfer.json (``case`` = ``<model>:<domain>``), keeping
the rows of models not measured again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import command_line, git_commit, write_merged  # bench/common.py, beside this script

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "raw" / "reviews"
DOMAINS = ("amazon", "movie", "nyt", "tweets")
MIN_ROWS = 30  # test rows a domain needs for a comparison


def domain_rows() -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Per domain, its labelled rows with the split the vader ETL recipe gives each (Spark's seeded hash), less
    the rows that are or hold an SST sentence (the same ``etl.text.validate.text_key`` or a shared sentence piece,
    ``text_pieces``: VADER's movie snippets hold SST's sentences, which the SST models trained on); and per
    domain how many were left out so."""
    from pyspark.sql import functions as F

    from etl.core.spark import get_spark
    from etl.core.splits import hashed_split, split_bucket
    from etl.text.validate import text_key, text_pieces
    from jobs.configs import load_config

    cfg = load_config("etl_text", REPO / "conf", [REPO / "conf" / "recipes" / "etl" / "vader.yml"])
    s = cfg.split
    spark = get_spark(cfg.spark)
    sst = spark.read.json([str(RAW / f"sst_{split}.jsonl") for split in ("train", "dev", "test")])
    sst_keys = sst.select(text_key("text").alias("key")).union(sst.select(F.explode(text_pieces("text"))))
    df = (spark.read.json([str(RAW / f"vader_{d}.jsonl") for d in DOMAINS]).filter(F.col("label").isNotNull())
          .withColumn("split", hashed_split(split_bucket("review_id", s.seed), s.train, s.dev)))
    keyed = df.select("review_id", text_key("text").alias("key")).union(
        df.select("review_id", F.explode(text_pieces("text"))))
    seen = keyed.join(sst_keys.distinct(), "key", "left_semi").select("review_id").distinct()
    unseen = df.join(seen, "review_id", "left_anti")
    shared = {r["source"].removeprefix("vader_"): r["count"]
              for r in df.join(seen, "review_id", "left_semi").groupBy("source").count().collect()}
    rows: dict[str, list[dict]] = {d: [] for d in DOMAINS}
    for r in unseen.select("source", "text", "label", "split").toLocalIterator():
        rows[r["source"].removeprefix("vader_")].append(r.asDict())
    return rows, {d: shared.get(d, 0) for d in DOMAINS}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR of a trained SST-2 classifier")
    ap.add_argument("--trained-on", default="sst", help="what the runs were trained on (recorded in each row)")
    ap.add_argument("--counterpart", default="bilstm_glove_cos_sst2", help="runs not trained on SST alone: the "
                    "SST-only model of the same recipe, whose SST-2 accuracy they may lose at most 1 point of")
    args = ap.parse_args(argv)
    import torch

    from dl.serve.bundle import export_bundle, load_bundle

    torch.set_num_threads(2)
    domains, shared = domain_rows()
    sst = [json.loads(line) for line in (RAW / "sst_test.jsonl").read_text(encoding="utf-8").splitlines()]
    sets = {"sst2": [r for r in sst if r.get("label") is not None], **domains}
    out = []
    for item in args.run:
        name, run = item.split("=", 1)
        with tempfile.TemporaryDirectory() as tmp:
            bundle = load_bundle(export_bundle(run, Path(tmp) / "bundle"))
            if set(bundle.labels) != {"negative", "positive"}:
                raise SystemExit(f"{run}: a binary sentiment classifier is needed, its labels are {bundle.labels}")
            for domain, rows in sets.items():
                predicted = bundle.predict([r["text"] for r in rows])["label"].tolist()
                hits = [int(p == ("negative", "positive")[r["label"]]) for p, r in zip(predicted, rows, strict=True)]
                test = [h for h, r in zip(hits, rows, strict=True) if domain == "sst2" or r["split"] == "test"]
                row = {"case": f"{name}:{domain}", "model": name, "trained_on": args.trained_on, "domain": domain,
                       "rows": len(test), "accuracy": round(sum(test) / len(test), 4),
                       "rows_all": len(hits), "accuracy_all": round(sum(hits) / len(hits), 4),
                       "rows_left_out_as_sst_sentences": shared.get(domain, 0),
                       "run": str(run), "git_commit": git_commit(), "command": command_line()}
                out.append(row)
                print(f"{name:28s} {domain:7s} test {row['accuracy']:.4f} ({row['rows']} rows)   all "
                      f"{row['accuracy_all']:.4f} ({row['rows_all']})", flush=True)
    if args.trained_on != "sst":
        compare(out, args.counterpart)
    print(f"wrote {write_merged('transfer', out)}")


def compare(rows: list[dict], counterpart: str) -> None:
    """Beside each row of a model trained beyond SST: on every other domain the best SST-only model's
    accuracy there (from bench/results/transfer.json) and whether it beats it; on SST-2 the points it loses
    against ``counterpart`` (goal: at most 1)."""
    from common import RESULTS

    path = RESULTS / "transfer.json"
    sst_only = [r for r in (json.loads(path.read_text())["results"] if path.is_file() else [])
                if r.get("trained_on") == "sst"]
    for row in rows:
        peers = [r for r in sst_only if r["domain"] == row["domain"]]
        if row["domain"] == "sst2":
            [ref] = [r for r in peers if r["model"] == counterpart] or [None]
            if ref:
                row.update(sst_only_counterpart=counterpart, counterpart_accuracy=ref["accuracy"],
                           points_lost=round(100 * (ref["accuracy"] - row["accuracy"]), 2),
                           within_1_point=ref["accuracy"] - row["accuracy"] <= 0.01)
        elif row["rows"] < MIN_ROWS:  # VADER's movie domain: nearly every snippet holds an SST sentence
            row.update(beats_every_sst_only=None, too_few_rows=True)
        elif peers:
            best = max(peers, key=lambda r: r["accuracy"])
            row.update(best_sst_only_model=best["model"], best_sst_only_accuracy=best["accuracy"],
                       beats_every_sst_only=row["accuracy"] > best["accuracy"])
        verdict = {k: row[k] for k in ("points_lost", "within_1_point", "best_sst_only_accuracy",
                                       "beats_every_sst_only") if k in row}
        print(f"{row['model']:28s} {row['domain']:7s} {row['accuracy']:.4f}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
