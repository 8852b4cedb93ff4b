"""The scale curve: the real jobs at 1x, 10x, 100x and 300x the fetched review corpora, each stage's time and the
peak memory of each kind of process.

    python bench/scale.py [--scales 1 10 100 300] [--score-scales 1 10 100 300]     (make bench-scale)

Per scale, in a fresh work directory: the input is written as JSON lines (every copy of a row gets a new id and,
after the first, a lightly perturbed text — one word dropped, two neighbours swapped — so no deduplication
shortcut applies); then, each as its own `lakedl` process with ``spark.master=local[2]`` and
``spark.driver_memory=1g`` at every size (local mode: the executors run in that JVM, so this also fixes their
memory): ``bronze load`` → ``etl text`` with ``input.format=bronze`` (read/validate, vocabulary,
encode + MERGE, shard write) → ``score --source silver_scale`` with the demo's BiLSTM bundle (read, anti-join,
model, MERGE). The stage seconds are the jobs' own records (etl_runs / score_runs ``stage_seconds``); peak RSS
is sampled from outside every 0.2 s over each job's process tree, per kind: ``jvm``, ``driver_python`` (the
lakedl process), ``python_workers`` (the largest PySpark worker) and ``python_workers_total`` (all at once, by
PSS: the workers are forked from one daemon and share pages).
Writes rows ``bronze``/``etl_text``/``score`` per scale and ``<case>_growth_10x_to_100x`` (time and memory
ratios) into bench/results/scale.json, keeping its other rows. Needs `make demo` (the bundle's run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import command_line, git_commit, write_merged  # bench/common.py, beside this script

REPO = Path(__file__).resolve().parents[1]
LAKEDL = str(Path(sys.executable).parent / "lakedl")
CHUNK_ROWS = 500_000  # rows per generated JSON-lines file
SPARK = ["spark.master=local[2]", "spark.driver_memory=1g", "spark.shuffle_partitions=8"]


def perturb(text: str, copy: int) -> str:
    """Copy ``copy`` (> 0) of a text: the word at ``copy % n`` dropped and two neighbours swapped."""
    words = text.split(" ")
    if len(words) < 3:
        return f"{text} {copy}"
    del words[copy % len(words)]
    j = (copy // len(words)) % (len(words) - 1)
    words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def generate(files: list[Path], scale: int, out: Path) -> int:
    """``scale`` distinct copies of every row of ``files`` as JSON lines under ``out``; returns the rows."""
    base = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    out.mkdir(parents=True)
    rows, part, fh = 0, 0, None
    for copy in range(scale):
        for row in base:
            if fh is None or rows % CHUNK_ROWS == 0:
                if fh:
                    fh.close()
                fh = open(out / f"part-{part:04d}.jsonl", "w", encoding="utf-8")
                part += 1
            text = row.get("text")
            fh.write(json.dumps({**row, "review_id": f"{row['review_id']}~{copy}",
                                 "text": perturb(text, copy) if copy and isinstance(text, str) else text}) + "\n")
            rows += 1
    fh.close()
    return rows


class KindPeaks:
    """Peak RSS (MB) per process kind over a process tree, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root, self.interval, self.peak = psutil.Process(pid), interval, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _kind(self, proc: psutil.Process) -> str | None:
        if proc.pid == self.root.pid:
            return "driver_python"
        name = proc.name()
        if "java" in name:
            return "jvm"
        return "python_workers" if name.startswith("python") and "pyspark" in " ".join(proc.cmdline()) else None

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0.0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for proc in procs:
                try:
                    kind = self._kind(proc)
                    mb = proc.memory_info().rss / 2**20 if kind else 0.0
                    if kind == "python_workers":  # forked from one daemon: their RSS shares pages, PSS does not
                        total += proc.memory_full_info().pss / 2**20
                except psutil.Error:
                    continue
                if kind:
                    self.peak[kind] = max(self.peak.get(kind, 0.0), mb)
            self.peak["python_workers_total"] = max(self.peak.get("python_workers_total", 0.0), total)
            time.sleep(self.interval)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in sorted(self.peak.items())}


def job(args: list[str], env: dict, log: Path) -> tuple[float, dict]:
    """Run ``lakedl <args>``; wall seconds and peak RSS per kind. A failure stops the benchmark with its log."""
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen([LAKEDL, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        peaks = KindPeaks(proc.pid)
        rc = proc.wait()
    seconds, peak = time.perf_counter() - started, peaks.stop()
    if rc:
        tail = log.read_text(errors="replace")[-4000:]
        sys.exit(f"lakedl {' '.join(args[:2])} failed (exit {rc}); the end of {log}:\n{tail}")
    return seconds, peak


def last_record(tables: Path, name: str) -> dict:
    from deltalake import DeltaTable

    rows = DeltaTable(str(tables / name)).to_pyarrow_table().to_pylist()
    return rows[-1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10, 100, 300])
    ap.add_argument("--score-scales", type=int, nargs="*", default=None, help="scales to score (default: --scales)")
    ap.add_argument("--reviews", default=str(REPO / "data" / "raw" / "reviews"))
    ap.add_argument("--run", default=str(REPO / "runs" / "train" / "demo"), help="the BiLSTM run to score with")
    ap.add_argument("--work", default=None, help="scratch directory (default: a new temporary one; removed)")
    args = ap.parse_args(argv)
    files = sorted(Path(args.reviews).glob("*.jsonl"))
    if not files or not (Path(args.run) / "best.pt").is_file():
        sys.exit(f"need {args.reviews}/*.jsonl and {args.run}/best.pt: run `make demo` first")
    score_scales = set(args.score_scales if args.score_scales is not None else args.scales)
    work = Path(args.work or tempfile.mkdtemp(prefix="scale-"))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    commit, results = git_commit(), []
    bundle = work / "bundle"
    try:
        subprocess.run([LAKEDL, "bundle", "export", "--run", args.run, "--out", str(bundle)], env=env, cwd=REPO,
                       check=True, capture_output=True)
        model = json.loads((bundle / "bundle.json").read_text())["config"]["model"]
        for scale in args.scales:
            root = work / f"x{scale}"
            rows = generate(files, scale, root / "input")
            tables, log = root / "tables", root / "jobs.log"
            common = [f"paths.tables_dir={tables}", f"paths.work_dir={root / 'work'}", *SPARK]
            sets = lambda extra: [x for s in [*common, *extra] for x in ("--set", s)]  # noqa: E731
            print(f"{scale}x: {rows:,} rows", flush=True)
            base = {"scale": scale, "rows": rows, "git_commit": commit, "command": command_line(),
                    "spark": "local[2], spark.driver_memory=1g (the executors run in that JVM)"}

            seconds, peak = job(["bronze", "load", "--input", str(root / "input"), "--table", "bronze_scale",
                                 *sets([])], env, log)
            results.append({**base, "case": "bronze", "seconds": round(seconds, 2), "peak_rss_mb": peak})
            print(f"  bronze load {seconds:.1f} s, peak {peak}", flush=True)

            seconds, peak = job(["etl", "text", *sets(["input.format=bronze", "input.table=bronze_scale",
                                                       "output.name=scale", f"output.shards_dir={root / 'shards'}"])],
                                env, log)
            rec = last_record(tables, "etl_runs")
            assert rec["status"] == "succeeded" and rec["rows_read"] == rows, rec
            results.append({**base, "case": "etl_text", "seconds": round(seconds, 2), "job_seconds": rec["seconds"],
                            "stage_seconds": json.loads(rec["stage_seconds"]), "peak_rss_mb": peak,
                            "peak_rss_mb_recorded": json.loads(rec["peak_rss_mb"]),
                            "rows_kept": rec["rows_kept"], "rows_quarantined": rec["rows_quarantined"]})
            print(f"  etl text {seconds:.1f} s, stages {rec['stage_seconds']}, peak {peak}", flush=True)

            if scale in score_scales:
                seconds, peak = job(["score", "--bundle", str(bundle), "--source", "silver_scale", *sets([])], env, log)
                rec = last_record(tables, "score_runs")
                assert rec["status"] == "succeeded" and rec["rows_scored"] == rec["rows_read"], rec
                results.append({**base, "case": "score", "model": model, "seconds": round(seconds, 2),
                                "rows": rec["rows_read"], "job_seconds": rec["seconds"],
                                "stage_seconds": json.loads(rec["stage_seconds"]), "peak_rss_mb": peak,
                                "peak_rss_mb_recorded": json.loads(rec["peak_rss_mb"])})
                print(f"  score {seconds:.1f} s, stages {rec['stage_seconds']}, peak {peak}", flush=True)
            shutil.rmtree(root)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for case in ("bronze", "etl_text", "score"):
        by = {r["scale"]: r for r in results if r["case"] == case}
        if 10 in by and 100 in by:
            lo, hi = by[10], by[100]
            key = "job_seconds" if "job_seconds" in lo else "seconds"
            results.append({"case": f"{case}_growth_10x_to_100x", "time_ratio": round(hi[key] / lo[key], 3),
                            "time_goal": 11.0, "memory_ratio": {k: round(hi["peak_rss_mb"][k] / v, 3)
                                                                for k, v in lo["peak_rss_mb"].items()
                                                                if v and k in hi["peak_rss_mb"]},
                            "memory_goal": 1.2, "rows": hi["rows"], "git_commit": commit,
                            "command": command_line()})
            print(json.dumps(results[-1]), flush=True)
    print(f"wrote {write_merged('scale', results)}")


if __name__ == "__main__":
    main()
