"""Readers: review corpora → one raw DataFrame shape, read by Spark in parallel.

Every reader returns the canonical fields as *strings* (types are checked by ``etl.text.validate``), plus
``raw`` (the record as it was in the file), ``source_file``, ``_malformed`` (why the record could not
be parsed at all, or null), ``_position`` (where the record is in its file: sorting by ``source_file``
then ``_position`` is file order then line order) and ``_wrong_type`` (the first of ``review_id`` and
``text`` whose JSON value is not a string, or null). Blank lines are not records and are dropped here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from etl.core.errors import InputError
from etl.core.io import check_paths, expand_globs

FIELDS = ("review_id", "business_id", "user_id", "stars", "text", "date", "source", "label", "score", "split")
MALFORMED = "_malformed"
CORRUPT = "_corrupt_record"
POSITION = "_position"
WRONG_TYPE = "_wrong_type"
RAW_COLUMNS = (*FIELDS, "raw", "source_file", MALFORMED, POSITION, WRONG_TYPE)
STRING_FIELDS = ("review_id", "text")  # must be JSON strings: a number or an object is wrong_type_<field>
_STRING_SCHEMA = T.StructType([T.StructField(f, T.StringType()) for f in FIELDS]
                              + [T.StructField(CORRUPT, T.StringType())])


def _finish(df: DataFrame, source: str | None) -> DataFrame:
    """Order the columns and fill ``source`` for rows that carry none."""
    if source:
        df = df.withColumn("source", F.coalesce(F.col("source"), F.lit(source)))
    if WRONG_TYPE not in df.columns:
        df = df.withColumn(WRONG_TYPE, F.lit(None).cast("string"))
    return df.select(*RAW_COLUMNS)


def position() -> Column:
    """A record's place in its file, sortable as text: the byte offset of the file split it was read from,
    then its row number within that split. Evaluated right after the scan (it is nondeterministic, so
    Spark neither moves nor repeats it across a shuffle), so it follows the file's own order."""
    return F.format_string("%020d:%020d", F.input_file_block_start(), F.monotonically_increasing_id())


def _lines(spark: SparkSession, paths: Sequence[str]) -> DataFrame:
    return (spark.read.text(list(paths))
            .select(F.col("value").alias("raw"), F.col("_metadata.file_path").alias("source_file"),
                    position().alias(POSITION))
            .filter(F.trim("raw") != ""))


def _not_a_json_string(field: str) -> Column:
    """True when the line's top-level ``field`` holds a JSON number, object, array or boolean rather than a
    string. ``from_json`` reads any value as text, so only values whose text could be such a token (it
    starts like one) are looked at again, parsed as a variant: typical ids and texts cost nothing more."""
    text = F.col(f"j.{field}")
    kind = F.expr(f"schema_of_variant(variant_get(try_parse_json(raw), '$.{field}'))")
    return F.when(text.rlike(r"^([\[{\-0-9]|true$|false$)"), kind.isNotNull() & (kind != "STRING") & (kind != "NULL"))


def read_json_lines(spark: SparkSession, paths: Sequence[str], source: str | None = None) -> DataFrame:
    """Canonical / Yelp academic review JSON lines. Each line is kept as ``raw``; a line that is not a
    JSON object is ``malformed_json``. Every field is read as text, whatever its JSON type."""
    lines = _lines(spark, paths)
    parsed = lines.select("raw", "source_file", POSITION, F.from_json(
        "raw", _STRING_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}).alias("j"))
    wrong = F.coalesce(*[F.when(_not_a_json_string(f), F.lit(f)) for f in STRING_FIELDS])
    return _finish(parsed.select(
        "raw", "source_file", POSITION, *[F.col(f"j.{f}").alias(f) for f in FIELDS],
        F.when(F.col(f"j.{CORRUPT}").isNotNull() | F.col("j").isNull(), F.lit("malformed_json")).alias(MALFORMED),
        wrong.alias(WRONG_TYPE),
    ), source)


def read_csv(spark: SparkSession, paths: Sequence[str], columns: dict[str, str], sep: str = ",",
             header: bool = True, source: str | None = None, multiline: bool = True, escape: str = '"') -> DataFrame:
    """CSV/TSV with ``columns`` mapping canonical fields to the file's columns. A row with the wrong
    number of fields is ``malformed_csv`` (its raw text kept). ``multiline``: a quoted field may hold line
    breaks (RFC 4180; each file is then read by one task, as Spark cannot split it); ``escape`` escapes a
    quote inside a quoted field (RFC 4180 doubles it: ``""``)."""
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise InputError(f"input.csv.columns maps unknown fields {unknown}; canonical fields: {', '.join(FIELDS)}")
    names = (spark.read.option("header", header).option("sep", sep).option("escape", escape)
             .csv(list(paths)).columns)  # header only
    schema = T.StructType([T.StructField(n, T.StringType()) for n in names] + [T.StructField(CORRUPT, T.StringType())])
    df = (spark.read.schema(schema).option("header", header).option("sep", sep).option("escape", escape)
          .option("mode", "PERMISSIVE")
          .option("columnNameOfCorruptRecord", CORRUPT).option("multiLine", multiline).csv(list(paths)))
    picked = []
    for field in FIELDS:
        col = columns.get(field, field)
        picked.append(F.col(f"`{col}`").alias(field) if col in names else F.lit(None).cast("string").alias(field))
    raw = F.coalesce(F.col(CORRUPT), F.to_json(F.struct(*[F.col(f"`{n}`") for n in names])))
    return _finish(df.select(*picked, raw.alias("raw"), F.col("_metadata.file_path").alias("source_file"),
                             F.when(F.col(CORRUPT).isNotNull(), F.lit("malformed_csv")).alias(MALFORMED),
                             position().alias(POSITION)), source)


def read_text_label(spark: SparkSession, paths: Sequence[str], source: str = "text") -> DataFrame:
    """``text<TAB>label`` lines (label optional). The review id is the source plus a hash of the line,
    so a repeated line is a duplicate review."""
    lines = _lines(spark, paths)
    has_tab = F.instr("raw", "\t") > 0
    text = F.when(has_tab, F.regexp_extract("raw", r"^(.*)\t([^\t]*)$", 1)).otherwise(F.col("raw"))
    label = F.when(has_tab, F.trim(F.regexp_extract("raw", r"^(.*)\t([^\t]*)$", 2)))
    out = lines.select(
        F.concat(F.lit(f"{source}-"), F.substring(F.sha2("raw", 256), 1, 20)).alias("review_id"),
        *[F.lit(None).cast("string").alias(f) for f in ("business_id", "user_id", "stars")],
        text.alias("text"), F.lit(None).cast("string").alias("date"), F.lit(source).alias("source"),
        F.when(label != "", label).alias("label"), F.lit(None).cast("string").alias("score"),
        F.lit(None).cast("string").alias("split"), "raw", "source_file",
        F.lit(None).cast("string").alias(MALFORMED), POSITION)
    return _finish(out, source)


_SST_OUT = T.StructType([T.StructField(c, T.StringType()) for c in RAW_COLUMNS])


def _sst_rows(phrases: bool):
    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from etl.sources.sst import TreeError, labelled_nodes, parse_tree, sst_record

        for batch in batches:
            out = []
            for path, content in zip(batch["source_file"], batch["value"]):
                split = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                for lineno, line in enumerate(content.splitlines(), 1):
                    if not line.strip():
                        continue
                    base = {"review_id": f"sst-{split}-{lineno}", "business_id": "sst", "source": "sst",
                            "split": split, "raw": line, "source_file": path, MALFORMED: None,
                            POSITION: f"{0:020d}:{lineno:020d}", WRONG_TYPE: None}
                    try:
                        root = parse_tree(line)
                    except TreeError as exc:
                        out.append({**base, MALFORMED: f"malformed_tree: {exc}"})
                        continue
                    for suffix, node in labelled_nodes(root, phrases and split == "train"):
                        rec = sst_record(base["review_id"] + suffix, node, split, "sst_phrase" if suffix else "sst")
                        out.append({**base, **{k: None if rec[k] is None else str(rec[k])  # read as text
                                               for k in ("review_id", "source", "text", "stars", "label", "score")}})
            yield pd.DataFrame(out, columns=list(RAW_COLUMNS))
    return parse


def read_sst(spark: SparkSession, sst_dir: str, phrases: bool = False) -> DataFrame:
    """SST's train/dev/test trees, one file per task, parsed in Spark. A train tree identical to a dev
    or test tree is ``held_out_duplicate`` (the shared copy has dev appended to train)."""
    files = [f"{sst_dir.rstrip('/')}/{s}.txt" for s in ("train", "dev", "test")]
    whole = (spark.read.text(files, wholetext=True)
             .select("value", F.col("_metadata.file_path").alias("source_file")))
    rows = whole.mapInPandas(_sst_rows(phrases), _SST_OUT)
    held_out = rows.filter(F.col("split") != "train").select(F.col("raw").alias("_held")).distinct()
    marked = (rows.join(F.broadcast(held_out), (F.col("split") == "train") & (F.col("raw") == F.col("_held")), "left")
              .withColumn(MALFORMED, F.coalesce(F.col(MALFORMED), F.when(F.col("_held").isNotNull(),
                                                                        F.lit("held_out_duplicate"))))
              .drop("_held"))
    return _finish(marked, None)


def read_input(spark: SparkSession, settings) -> DataFrame:
    """Dispatch on ``input.format`` (an ``InputSettings``); the files of ``input.also``, each in its own
    format, join the same rows."""
    df = _read_files(spark, settings, "input.paths")
    for i, more in enumerate(getattr(settings, "also", [])):
        df = df.unionByName(_read_files(spark, more, f"input.also[{i}].paths"))
    return df


def _read_files(spark: SparkSession, settings, field: str) -> DataFrame:
    check_paths(settings.paths, field)
    paths = expand_globs(settings.paths)
    if settings.format == "json":
        return read_json_lines(spark, paths, settings.source)
    if settings.format == "csv":
        return read_csv(spark, paths, settings.csv.columns, settings.csv.sep, settings.csv.header,
                        settings.source, settings.csv.multiline, settings.csv.escape)
    if settings.format == "text":
        return read_text_label(spark, paths, settings.source or "text")
    if len(settings.paths) != 1:
        raise InputError("input.format=sst takes one directory in input.paths (with train.txt, dev.txt, test.txt)")
    return read_sst(spark, settings.paths[0], settings.sst_phrases)
