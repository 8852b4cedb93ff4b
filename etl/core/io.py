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
