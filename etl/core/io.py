"""Small file-system helpers shared by every stage."""

from __future__ import annotations

from collections.abc import Sequence

from etl.core.errors import MissingInput


def check_paths(paths: Sequence[str], what: str) -> None:
    """Fail before Spark starts work when a local input path or glob matches nothing (``what`` names the
    setting or option that gave it, for the message)."""
    import glob
    from urllib.parse import urlparse

    for path in paths:
        parsed = urlparse(path)
        if parsed.scheme not in ("", "file"):
            continue  # remote stores: Spark reports them
        local = parsed.path if parsed.scheme else path
        if not glob.glob(local):
            raise MissingInput(f"{what}: {path} matches no file or directory")


def expand_globs(paths: Sequence[str]) -> list[str]:
    """Local globs as the files they match (sorted); other paths as given. Spark looks a single input path up
    as a literal file first (for a streaming sink's metadata) and logs a Java stack trace per glob when it
    is not one; given the files, it has nothing to look up."""
    import glob
    from urllib.parse import urlparse

    out: list[str] = []
    for path in paths:
        local = urlparse(path).scheme in ("", "file") and glob.has_magic(path)
        out.extend(sorted(glob.glob(urlparse(path).path if "://" in path else path)) if local else [path])
    return out
