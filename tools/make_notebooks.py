"""Writes notebooks/*.ipynb (run once after editing the cells here; the .ipynb files are committed).
Every notebook: a parameters cell first (tagged `parameters`, papermill-style; the tests replace it), then
a few cells over library calls — no sys.path edits: install the lakedl wheel on the cluster (`make package`)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = {
    "01_etl": [
        "# Text ETL: reviews → validated silver Delta table + Parquet shards\n"
        "Reads review JSON lines, quarantines bad rows with a reason, tokenizes and encodes the rest, and writes "
        "`silver_<name>` (Delta) plus train/dev/test shards that `lakedl train` and Petastorm read.",
        ("parameters",
         'CONF_DIR = "conf"                   # the project\'s conf/ (on a cluster: the unpacked dist/lakedl-conf.zip)\n'
         'INPUT = ["data/raw/reviews"]        # JSON-lines files or directories (`lakedl data fetch` writes these)\n'
         'TABLES_DIR = "data/tables"          # Delta tables: silver_<name>, quarantine_<name>, runs\n'
         'SHARDS_DIR = "data/shards"          # Parquet shards: <SHARDS_DIR>/<NAME>/{train,dev,test}\n'
         'NAME = "reviews"\n'
         "SETTINGS = []                       # more --set style overrides, e.g. [\"encode.max_len=64\"]"),
        "import json\n\n"
        "from etl.config import load_config\n"
        "from etl.pipelines import run_etl_text\n"
        "from etl.spark import get_spark\n"
        "from etl.tables import TableStore\n\n"
        'cfg = load_config("etl_text", CONF_DIR, overrides=[f"input.paths={json.dumps(INPUT)}", f"paths.tables_dir={TABLES_DIR}",\n'
        '                                                  f"output.shards_dir={SHARDS_DIR}", f"output.name={NAME}", *SETTINGS])\n'
        "spark = get_spark(cfg.spark)  # in a cluster notebook: the session that is already running\n"
        "report = run_etl_text(cfg, spark)\n"
        '{k: report[k] for k in ("rows_read", "rows_kept", "rows_quarantined", "rows_already_present", "reasons", "rows_per_split")}',
        "# rows in = rows kept + rows quarantined + rows already in silver: nothing is dropped silently\n"
        'assert report["rows_read"] == report["rows_kept"] + report["rows_quarantined"] + report["rows_already_present"]\n'
        "store = TableStore.from_config(cfg, spark)\n"
        'store.read(f"silver_{NAME}").select("review_id", "source", "text", "label", "stars").limit(5).toPandas()',
        'quarantine = f"quarantine_{NAME}"\n'
        'store.read(quarantine).groupBy("reason").count().toPandas() if store.exists(quarantine) else "no quarantined rows"',
    ],
    "02_train": [
        "# Distributed training on the ETL's shards\n"
        "One worker function on N processes (local gloo here; `launcher.kind` = `torch_distributor` or `horovod` on a "
        "cluster), checkpoints, an MLflow run, curves and the run's HTML report.",
        ("parameters",
         'CONF_DIR = "conf"\n'
         'SHARDS = "data/shards/reviews"      # the text ETL\'s output (01_etl) or `lakedl etl images` output\n'
         'RUNS_DIR = "runs"                   # runs/train/<RUN_NAME>/, MLflow file store, TensorBoard\n'
         'RUN_NAME = "notebook-train"\n'
         'MODEL = "rnn"                       # bow | rnn | cnn | transformer | ... (conf/base/train.yml)\n'
         "EPOCHS = 2\n"
         "PROCESSES = 2\n"
         'LAUNCHER = "local"                  # local | torch_distributor | horovod\n'
         "SETTINGS = []                       # e.g. [\"optim.lr=0.002\", \"schedule.name=cosine\"]"),
        "from IPython.display import Image\n\n"
        "from dl.train import run_train\n"
        "from etl.config import load_config\n\n"
        'cfg = load_config("train", CONF_DIR, overrides=[\n'
        '    f"data.shards={SHARDS}", f"paths.runs_dir={RUNS_DIR}", f"run.name={RUN_NAME}", f"model.name={MODEL}",\n'
        '    f"train.epochs={EPOCHS}", f"launcher.num_processes={PROCESSES}", f"launcher.kind={LAUNCHER}",\n'
        '    "train.progress=false", *SETTINGS])\n'
        "spark = None\n"
        'if LAUNCHER != "local":\n'
        "    from etl.spark import get_spark\n\n"
        "    spark = get_spark(cfg.spark)\n"
        "summary = run_train(cfg, spark)\n"
        '{k: summary[k] for k in ("run_dir", "processes", "epochs_run", "best_epoch", "diagnosis", "weights_identical_across_ranks")}',
        '{k: v for k, v in (summary["test"] or summary["final"]).items() if isinstance(v, float)}',
        'Image(f"{summary[\'run_dir\']}/curves.png")',
        "# the whole run on one page: figures, confusion matrix, verdict, worst-scored examples\n"
        'summary["report"]',
    ],
    "03_score": [
        "# Batch scoring into Delta\n"
        "Export the trained run as an inference bundle, score a Delta table with an iterator pandas UDF (the model "
        "loads once per Python worker) and MERGE the predictions in; a second pass scores nothing new.",
        ("parameters",
         'CONF_DIR = "conf"\n'
         'RUN = "runs/train/notebook-train"   # a finished classifier run (02_train)\n'
         'BUNDLE = "runs/bundles/notebook-train"\n'
         'TABLES_DIR = "data/tables"\n'
         'SOURCE = "silver_reviews"           # the table to score (01_etl)'),
        "from dl.bundle import export_bundle\n"
        "from dl.score import score_incremental\n"
        "from etl.config import load_config\n"
        "from etl.spark import get_spark\n"
        "from etl.tables import TableStore\n\n"
        'cfg = load_config("common", CONF_DIR, overrides=[f"paths.tables_dir={TABLES_DIR}"])\n'
        "spark = get_spark(cfg.spark)\n"
        "store = TableStore.from_config(cfg, spark)\n"
        "bundle = export_bundle(RUN, BUNDLE)\n"
        "first = score_incremental(store, SOURCE, bundle)\n"
        "first",
        "again = score_incremental(store, SOURCE, bundle)  # idempotent: every row of this model version is scored\n"
        'assert again["rows_scored"] == 0\n'
        "again",
        'store.read("predictions").filter(f"model_version = \'{first[\'model_version\']}\'")'
        '.groupBy("label").count().toPandas()',
    ],
    "04_embeddings": [
        "# Sentence embeddings and semantic search\n"
        "MiniLM (from `lakedl data fetch --source minilm`, no hub download) embeds a Delta table's texts on Spark into "
        "a vector table; queries return the nearest rows by cosine similarity.",
        ("parameters",
         'CONF_DIR = "conf"\n'
         'MODEL_DIR = "data/raw/minilm/model"\n'
         'TABLES_DIR = "data/tables"\n'
         'SOURCE = "silver_reviews"\n'
         'VECTORS = "review_vectors"\n'
         "LIMIT = None                        # embed only the first N rows (None: all)\n"
         'QUERIES = ["the battery died after a week", "a moving, beautifully acted film"]'),
        "from dl.embed import build_index, search\n"
        "from etl.config import load_config\n"
        "from etl.spark import get_spark\n"
        "from etl.tables import TableStore\n\n"
        'cfg = load_config("common", CONF_DIR, overrides=[f"paths.tables_dir={TABLES_DIR}"])\n'
        "spark = get_spark(cfg.spark)\n"
        "store = TableStore.from_config(cfg, spark)\n"
        "df = store.read(SOURCE)\n"
        "df = df.orderBy(\"review_id\").limit(LIMIT) if LIMIT else df\n"
        "index = build_index(store, df, MODEL_DIR, VECTORS)\n"
        "index",
        "import pandas as pd\n\n"
        "hits = pd.DataFrame([{**h, \"query\": q} for q in QUERIES for h in search(store, q, MODEL_DIR, k=3, table=VECTORS)])\n"
        'hits[["query", "rank", "score", "text"]]',
    ],
}


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "notebooks"
    out.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells.append(new_markdown_cell(cells[0]))  # each notebook starts with its title and purpose
        for cell in cells[1:]:
            if isinstance(cell, tuple):
                nb.cells.append(new_code_cell(cell[1], metadata={"tags": [cell[0]]}))
            else:
                nb.cells.append(new_code_cell(cell))
        nbformat.write(nb, out / f"{name}.ipynb")


if __name__ == "__main__":
    main()
