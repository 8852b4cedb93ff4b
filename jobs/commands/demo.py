"""``lakedl demo``: the end-to-end flow (jobs/flows/demo.py) and what it prints."""

from __future__ import annotations

import typer

from jobs.commands.common import ConfDir, ConfFiles, Sets, load


def demo(conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """End-to-end demo: fetch data → bronze Delta table → text ETL (silver table, shards) → train (2 processes)
    → inference bundle → score the silver table into predictions → counts and a sample."""
    from jobs.flows.demo import run_demo

    cfg = load("demo", conf_dir, conf, set_)
    result = run_demo(cfg)
    bronze = result["bronze"]
    typer.echo(f"\nbronze table '{bronze['table']}' version {bronze['version']}: read {bronze['rows_read']} rows "
               f"({bronze['rows_corrupt']} malformed, kept raw), inserted {bronze['rows_inserted']} new")
    typer.echo(f"{'source':<16}{'rows':>8}")
    for src, n in bronze["rows_by_source"].items():
        typer.echo(f"{src:<16}{n:>8}")
    typer.echo(f"{'total':<16}{sum(bronze['rows_by_source'].values()):>8}")
    text = result["etl_text"]
    typer.echo(f"\ntext ETL {text['run_id']}: read {text['rows_read']}, kept {text['rows_kept']}, "
               f"quarantined {text['rows_quarantined']}{' ' + str(text['reasons']) if text['reasons'] else ''}, already present "
               f"{text['rows_already_present']}")
    typer.echo(f"silver_{text['dataset']} version {text['silver_version']}, {text['tokenizer']} tokenizer "
               f"{text['tokenizer_sha256'][:12]}, shards in {text['shards_dir']}: "
               + ", ".join(f"{k} {v}" for k, v in text["rows_per_split"].items()))
    if not cfg.demo.train:
        return
    from jobs.flows.demo import train_and_score

    model = train_and_score(cfg, text, conf_dir=conf_dir)
    run, scored = model["train"], model["score"]
    test = run.get("test") or {}
    typer.echo(f"\ntraining run '{run['run']}' ({'reused' if run['reused'] else 'trained'}): {cfg.demo.model}, "
               f"{run['processes']} processes, {run['epochs_run']} epochs, best epoch {run['best_epoch']}, test accuracy "
               f"{test.get('sentiment_accuracy', float('nan')):.3f} on {test.get('sentiment_examples', 0)} reviews")
    typer.echo(f"bundle {model['bundle']} (model version {scored['model_version']})")
    if scored["path"] == "cdf":  # a run after the first: the silver table's change feed since the last one
        counts = (f"change feed of versions {scored['consumed_from'] + 1}..{scored['watermark']}: "
                  f"{scored['rows_read']} rows changed, scored {scored['rows_scored']} (of them edited "
                  f"{scored['rows_updated']}), deleted {scored['rows_deleted']}, quarantined {scored['rows_failed']}"
                  if scored["rows_read"] else f"no change in silver since version {scored['consumed_from']}")
    else:
        counts = (f"read {scored['rows_read']}, scored {scored['rows_scored']}, already scored "
                  f"{scored['rows_skipped']}, quarantined {scored['rows_failed']}")
    typer.echo(f"scoring run {scored['run_id']}: {counts}; predictions "
               + (f"version {scored['predictions_version']}" if scored["predictions_version"] is not None
                  else "unchanged"))
    for row in model["sample"]:
        typer.echo(f"  {row['label']:<9}{row['p_positive']:6.3f}  {(row['text'] or '')[:90]}")
    if not cfg.demo.images:
        return
    from jobs.flows.demo import images

    image = images(cfg, conf_dir=conf_dir)
    etl, run = image["etl"], image["train"]
    typer.echo(f"\nimage ETL {etl['run_id']}: read {etl['rows_read']}, kept {etl['rows_kept']}, quarantined "
               f"{etl['rows_quarantined']}; Petastorm datasets in {etl['shards_dir']}: "
               + ", ".join(f"{k} {v}" for k, v in etl["rows_per_split"].items()))
    test = run.get("test") or {}
    typer.echo(f"image run '{run['run']}' ({'reused' if run['reused'] else 'trained'}): {cfg.demo.image_model}, "
               f"{run['processes']} processes, {run['epochs_run']} epoch(s), test accuracy "
               f"{test.get('class_accuracy', float('nan')):.3f} on {test.get('class_examples', 0)} images")
