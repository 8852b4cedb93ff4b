"""Validation: give every raw record one ``reason`` (null when it is kept) and typed fields.

Reasons, checked in this order (the first that applies is recorded):

=====================  ===============================================================
malformed_json/csv/…   the reader could not parse the record (``_malformed``)
held_out_duplicate     a training record identical to a dev/test record (SST)
invalid_utf8           the record's bytes are not valid UTF-8
missing_review_id      no ``review_id``
missing_text           no ``text`` field
wrong_type_<field>     ``review_id``/``text`` not a JSON string (a number, an object), or
                       ``stars``/``label``/``score`` present but not a number
empty_text             text empty or only whitespace
text_too_long          more than ``max_chars`` characters
stars_out_of_range     stars not within 1..5
label_out_of_range     label not 0 or 1
missing_split          ``split.mode: given`` and split not train/dev/test
duplicate_review_id    a review_id seen earlier in the same input (the first one is kept)
held_out_duplicate     also, with ``validation.held_out_texts: true``: a valid row whose text
                       (:func:`text_key`) a dev or test row of the same input has too — every copy
                       but the first held-out one (by source file, review_id) — and a training row
                       that shares a sentence piece (:func:`text_pieces`) with a dev/test row, so
                       no held-out text is trained on or counted twice when corpora overlap
                       (VADER's movie snippets hold SST's sentences); copies of a text only in
                       train stay
=====================  ===============================================================

"Earlier" is file order (source paths sorted) then line order within a file.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from etl.sources.readers import MALFORMED, POSITION, WRONG_TYPE

REASON = "reason"
SPLITS = ("train", "dev", "test")


def blank(col: str) -> Column:
    """Empty or only whitespace — any Unicode whitespace (tabs, newlines, NBSP), which Spark's ``trim``
    (spaces only) misses."""
    return F.col(col).rlike(r"(?U)^\s*$")


def first_reason(*rules: tuple[Column, str | Column]) -> Column:
    """The reason of the first rule whose condition holds (null when none does)."""
    expr = None
    for cond, reason in rules:
        value = reason if isinstance(reason, Column) else F.lit(reason)
        expr = F.when(cond, value) if expr is None else expr.when(cond, value)
    return expr


def validate(df: DataFrame, max_chars: int, require_split: bool = False) -> DataFrame:
    """Add typed ``stars``/``label``/``score`` and the ``reason`` column (null = valid)."""
    malformed_kind = F.split(F.col(MALFORMED), ":").getItem(0)
    stars = F.col("stars").try_cast("double")  # ANSI mode: a plain cast of "five" raises
    label = F.col("label").try_cast("double")
    score = F.col("score").try_cast("double")
    rules = [
        (F.col(MALFORMED).isNotNull(), malformed_kind),
        (~F.is_valid_utf8("raw"), "invalid_utf8"),
        (F.col("review_id").isNull() | blank("review_id"), "missing_review_id"),
        (F.col("text").isNull(), "missing_text"),
        (F.col(WRONG_TYPE).isNotNull(), F.concat(F.lit("wrong_type_"), F.col(WRONG_TYPE))),
        (F.col("stars").isNotNull() & stars.isNull(), "wrong_type_stars"),
        (F.col("label").isNotNull() & label.isNull(), "wrong_type_label"),
        (F.col("score").isNotNull() & score.isNull(), "wrong_type_score"),
        (blank("text"), "empty_text"),
        (F.length("text") > max_chars, "text_too_long"),
        (stars.isNotNull() & ((stars < 1) | (stars > 5)), "stars_out_of_range"),
        (label.isNotNull() & ~label.isin(0.0, 1.0), "label_out_of_range"),
    ]
    if require_split:
        rules.append((~F.coalesce(F.col("split").isin(*SPLITS), F.lit(False)), "missing_split"))
    checked = df.withColumn(REASON, first_reason(*rules))
    # duplicates among otherwise valid rows: keep the first in a deterministic order
    order = Window.partitionBy("review_id").orderBy(F.col(REASON).isNull().desc(), "source_file", POSITION)
    rank = F.when(F.col(REASON).isNull(), F.row_number().over(order))
    valid_first = checked.withColumn("_rank", rank)
    return (valid_first
            .withColumn(REASON, F.when(F.col("_rank") > 1, F.lit("duplicate_review_id")).otherwise(F.col(REASON)))
            .drop("_rank", POSITION, WRONG_TYPE)
            .withColumn("stars", stars).withColumn("label", label.cast("int")).withColumn("score", score))


_PTB_BRACKETS = r"-(lrb|rrb|lsb|rsb|lcb|rcb)-"
_ENTITIES = r"&(amp|quot|lt|gt|apos|#39);"
PIECE_CHARS = 25  # letters and digits a sentence piece needs to count as shared (shorter ones are common phrases)


def _letters(text: Column) -> Column:
    return F.regexp_replace(text, r"[^\p{L}\p{N}]+", "")


def _lowered(col: str) -> Column:
    return F.regexp_replace(F.regexp_replace(F.lower(F.col(col)), _PTB_BRACKETS, " "), _ENTITIES, " ")


def text_key(col: str) -> Column:
    """A text as duplicates are compared: lower case, the Penn Treebank's bracket tokens (SST's ``-lrb-``) and
    HTML entities dropped, letters and digits only — SST's tokenized sentence and the snippet as written match."""
    return _letters(_lowered(col))


def text_pieces(col: str) -> Column:
    """The :func:`text_key` of each sentence piece of a text (split at . ! ? ;) with at least ``PIECE_CHARS``
    letters and digits: a snippet that holds a sentence of another corpus shares that piece with it."""
    keys = F.transform(F.split(_lowered(col), r"[.!?;]+"), _letters)
    return F.filter(keys, lambda k: F.length(k) >= PIECE_CHARS)


def mark_held_out_texts(df: DataFrame) -> DataFrame:
    """``held_out_duplicate`` on every valid copy but one of each text some valid dev/test row has, and on every
    valid training row that shares a sentence piece (:func:`text_pieces`) with a dev/test row (``df`` has its
    ``split``)."""
    held_out = F.col("split").isin("dev", "test")
    key = Window.partitionBy("_text_key")
    valid = df.filter(F.col(REASON).isNull()).withColumn("_text_key", text_key("text"))
    copies = (valid.withColumn("_held", F.max(held_out.cast("int")).over(key))
              .withColumn("_copy", F.row_number().over(key.orderBy(held_out.desc(), "source_file", "review_id")))
              .filter((F.col("_held") == 1) & (F.col("_copy") > 1))
              .select("review_id", "source_file"))
    pieces = valid.select("review_id", "source_file", held_out.alias("_held"),
                          F.explode(text_pieces("text")).alias("_piece"))
    held_pieces = pieces.filter("_held").select("_piece")
    sharing = (pieces.filter(~F.col("_held")).join(held_pieces, "_piece", "left_semi")
               .select("review_id", "source_file"))
    dropped = copies.union(sharing).distinct().withColumn("_drop", F.lit(True))
    return (df.join(dropped, ["review_id", "source_file"], "left")
            .withColumn(REASON, F.when(F.col(REASON).isNull() & F.col("_drop"), F.lit("held_out_duplicate"))
                        .otherwise(F.col(REASON)))
            .drop("_drop"))
