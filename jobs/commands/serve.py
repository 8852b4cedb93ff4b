"""Using trained models: ``lakedl bundle export``, ``score``, ``explain``, ``embed``, ``search`` and ``sample``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from etl.core import catalog
from etl.core.errors import InputError
from etl.core.io import check_paths
from etl.text.config import MAX_CHARS
from jobs.commands.common import ConfDir, ConfFiles, Sets, UsageError, echo_json, load


def bundle_export(run: Annotated[Path, typer.Option(help="a finished `lakedl train` run directory (a classifier)")],
                  out: Annotated[Path, typer.Option(help="bundle directory to write")],
                  quantize: Annotated[str, typer.Option(help="none, or int8: Linear/LSTM layers run as int8 "
                                                        "(dynamic quantization; a model version of its own)")] = "none"
                  ) -> None:
    """Write an inference bundle (weights.safetensors, tokenizer.json, bundle.json) from a run's best.pt."""
    from dl.serve.bundle import export_bundle

    path = export_bundle(run, out, quantize=quantize)
    meta = json.loads((path / "bundle.json").read_text())
    typer.echo(f"wrote {path}: {meta['config']['model']} model, version {meta['model_version']}")


def model_register(run: Annotated[Path, typer.Option(help="a finished `lakedl train` run directory (a text "
                                                    "sentiment classifier: its MLflow model)")],
                   name: Annotated[str, typer.Option(help="registered model name")],
                   alias: Annotated[Optional[str], typer.Option(help="point this alias (e.g. champion) at the new "
                                                                "version")] = None,
                   conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Register a training run's MLflow model as a new version of NAME in the Model Registry (tracking.registry_uri,
    default SQLite beside the runs); score it with `lakedl score --model models:/NAME@ALIAS`."""
    from dl.serve.mlflow_model import register

    cfg = load("common", conf_dir, conf, set_)
    echo_json(register(cfg, run, name, alias))


def score(bundle: Annotated[str, typer.Option("--bundle", "--model",
                                              help="inference bundle directory (`lakedl bundle export`), or an "
                                              "MLflow model: models:/NAME@ALIAS, models:/NAME/VERSION, "
                                              "runs:/RUN_ID/model")],
          input: Annotated[Optional[str], typer.Option(help="JSON-lines file, directory or glob with the id and "
                                                       "text columns (score all of it)")] = None,
          source: Annotated[Optional[str], typer.Option(help="Delta table to score incrementally, under a lease, "
                                                        "recorded in table score_runs: its change data feed since "
                                                        "the last run (new and edited rows scored, deleted rows' "
                                                        "predictions removed), or on a first run the rows this "
                                                        "model version has not scored yet")] = None,
          change_feed: Annotated[bool, typer.Option("--change-feed/--no-change-feed",
                                                    help="with --source: read the source's change data feed when "
                                                    "a run before consumed it (--no-change-feed: compare the whole "
                                                    "source with the predictions, insert-only)")] = True,
          table: Annotated[str, typer.Option(help="Delta table the predictions are merged into")] = catalog.PREDICTIONS,
          id_col: Annotated[str, typer.Option("--id-col")] = "review_id",
          text_col: Annotated[str, typer.Option("--text-col")] = "text",
          batch_size: Annotated[int, typer.Option(min=1, help="texts per model call")] = 256,
          explain: Annotated[int, typer.Option(min=0, help="K > 0: each prediction's K tokens that pushed "
                                               "hardest toward its label, column top_tokens (integrated "
                                               "gradients: ~32-256 model passes a row)")] = 0,
          max_chars: Annotated[int, typer.Option(min=1, help="longer texts are quarantined")] = MAX_CHARS,
          quarantine: Annotated[str, typer.Option(help="Delta table for rows that cannot be scored (no id, "
                                                  "null/blank/too long text), with the reason")] = catalog.SCORE_QUARANTINE,
          conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Score texts with a bundle on Spark and MERGE the predictions into a Delta table (a re-run adds nothing);
    rows that cannot be scored are quarantined with a reason (rows read = scored + quarantined [+ skipped])."""
    if (input is None) == (source is None):
        raise UsageError("give exactly one of --input (files) or --source (a Delta table, incremental)")
    from dl.serve.mlflow_model import resolve_bundle
    from dl.serve.score import loaded_bundle, score_files
    from etl.core.spark import get_spark
    from etl.core.tables import TableStore, check_names

    cfg = load("common", conf_dir, conf, set_)
    check_names(table, quarantine, *([source] if source else []))  # before any write
    bundle = resolve_bundle(cfg, bundle)
    loaded_bundle(bundle)  # refuse a broken or mismatched bundle before any Spark work (loaded once)
    if explain:
        from dl.serve.explain import refuse_quantized

        refuse_quantized(loaded_bundle(bundle).meta, bundle)
    spark = get_spark(cfg.spark)
    store = TableStore.from_config(cfg, spark)
    if source is not None:
        from dl.serve.score import score_incremental

        echo_json(score_incremental(store, source, bundle, table, text_col=text_col, id_col=id_col,
                                     batch_size=batch_size, quarantine=quarantine, max_chars=max_chars,
                                     change_feed=change_feed, explain=explain))
        return
    check_paths([input], "--input")
    df = spark.read.json(input)
    missing = [c for c in (id_col, text_col) if c not in df.columns]
    if missing:
        raise InputError(f"{input}: no column(s) {', '.join(missing)}; pick them with --id-col / --text-col")
    report = score_files(store, df.select(id_col, text_col), bundle, str(input), table, text_col=text_col,
                         id_col=id_col, batch_size=batch_size, quarantine=quarantine, max_chars=max_chars,
                         explain=explain)
    echo_json(report)


def explain(texts: Annotated[list[str], typer.Argument(help="texts to explain, each one argument")],
            bundle: Annotated[str, typer.Option("--bundle", "--model",
                                                help="inference bundle directory, or an MLflow model URI "
                                                "(models:/NAME@ALIAS, runs:/RUN_ID/model)")],
            out: Annotated[Path, typer.Option(help="HTML heatmap to write")] = Path("explain.html"),
            top: Annotated[int, typer.Option(min=1, help="tokens printed per text")] = 5,
            steps: Annotated[int, typer.Option(min=2, help="integration steps (more: a smaller error)")] = 64,
            conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Which words drove each prediction: integrated-gradient token attributions toward the predicted label,
    printed (top tokens) and written as an HTML heatmap (docs/scoring.md)."""
    from dl.serve.explain import explain as attributions
    from dl.serve.explain import html_report
    from dl.serve.mlflow_model import resolve_bundle
    from dl.serve.score import loaded_bundle

    cfg = load("common", conf_dir, conf, set_)
    path = resolve_bundle(cfg, bundle)
    explanations = attributions(loaded_bundle(path), texts, steps)
    for e in explanations:
        toward = "  ".join(f"{t} {a:+.2f}" for t, a in e.top(top))
        typer.echo(f"{e.label} {e.probability:.3f}  {toward or '(no token pushed toward it)'}  |  {e.text[:80]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html_report(explanations, path))
    tmp.replace(out)
    typer.echo(f"# heatmap: {out}", err=True)


def _minilm_dir(cfg, model_dir: Path | None) -> Path:
    return model_dir or Path(cfg.paths.raw_dir) / "minilm" / "model"


def embed(input: Annotated[Optional[str], typer.Option(help="JSON-lines file, directory or glob")] = None,
          source: Annotated[Optional[str], typer.Option(help="Delta table to embed")] = None,
          table: Annotated[str, typer.Option(help="Delta vector table")] = "review_vectors",
          id_col: Annotated[str, typer.Option("--id-col")] = "review_id",
          text_col: Annotated[str, typer.Option("--text-col")] = "text",
          model_dir: Annotated[Optional[Path], typer.Option(help="MiniLM directory (default "
                                                            "<paths.raw_dir>/minilm/model)")] = None,
          conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Embed reviews with MiniLM on Spark into a Delta vector table (rows already there are skipped)."""
    from dl.serve.search import build_index
    from etl.core.spark import get_spark
    from etl.core.tables import TableStore

    if (input is None) == (source is None):
        raise UsageError("give exactly one of --input (files) or --source (a Delta table)")
    cfg = load("common", conf_dir, conf, set_)
    spark = get_spark(cfg.spark)
    store = TableStore.from_config(cfg, spark)
    if input is not None:
        check_paths([input], "--input")
    df = store.read(source) if source else spark.read.json(input)
    echo_json(build_index(store, df, _minilm_dir(cfg, model_dir), table, text_col, id_col))


def search_reviews(query: Annotated[str, typer.Argument(help="what to look for, in plain words")],
                   k: Annotated[int, typer.Option("-k", min=1, help="how many results")] = 10,
                   table: Annotated[str, typer.Option(help="vector table written by `lakedl embed`")] = "review_vectors",
                   model_dir: Annotated[Optional[Path], typer.Option(help="MiniLM directory (default "
                                                                     "<paths.raw_dir>/minilm/model)")] = None,
                   conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """The k reviews nearest to QUERY by cosine similarity of MiniLM embeddings (exact search)."""
    from dl.serve.search import search
    from etl.core.tables import TableStore

    cfg = load("common", conf_dir, conf, set_)
    hits = search(TableStore(cfg.paths.tables_dir, backend="delta-rs"), query, _minilm_dir(cfg, model_dir), k, table)
    for h in hits:
        typer.echo(f"{h['rank']:3d}  {h['score']:.3f}  {h['review_id']}  {(h['text'] or '')[:100]}")


def sample_text(run: Annotated[Path, typer.Option(help="a `lakedl train` run directory: a gpt run (text) or a "
                                                      "dcgan run (an image grid)")],
                prompt: Annotated[Optional[list[str]], typer.Option(help="text to continue (repeatable; "
                                                                    "default: start from nothing)")] = None,
                n: Annotated[Optional[int], typer.Option(min=1, help="samples per prompt (default 3), or images "
                                                                     "(default 64)")] = None,
                tokens: Annotated[int, typer.Option(min=1, help="at most this many new tokens")] = 30,
                temperature: Annotated[float, typer.Option(min=0.01)] = 0.8,
                top_k: Annotated[int, typer.Option(min=0, help="sample among the k likeliest (0: all)")] = 40,
                class_: Annotated[Optional[str], typer.Option("--class", help="GAN: images of this class (name or "
                                                                              "index; conditional GANs)")] = None,
                out: Annotated[Optional[Path], typer.Option(help="GAN: the PNG to write "
                                                                "(default <run>/sample.png)")] = None,
                seed: Annotated[int, typer.Option()] = 0) -> None:
    """Sample from a trained generative model: text from a language model (nanoGPT-style, `train.task=lm`), or
    a PNG grid of images from a GAN (`train.task=generate`)."""
    from dl.serve.sample import sample, sample_images
    from etl.core.config import read_yaml

    config = run / "config.yml"  # which kind of run, without loading its weights twice
    if config.is_file() and read_yaml(config).get("model", {}).get("name") == "dcgan":
        path, classes = sample_images(run, n or 64, class_, seed, out)
        shown = f" ({', '.join(dict.fromkeys(classes))})" if classes else ""
        typer.echo(f"{n or 64} samples{shown} → {path}")
        return
    rows = sample(run, prompt or [""], n or 3, tokens, temperature, top_k or None, seed)
    for row in rows:
        typer.echo(row["text"])
