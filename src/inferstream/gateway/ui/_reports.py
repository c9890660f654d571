"""The monitors' HTML reports, served read-only under ``/ui/reports/<monitor>/<file>.html``.

Only files inside the reports directory (``monitoring.reports_dir``) are reachable:
a path is resolved (symbolic links followed) before it is checked, so ``..``,
absolute paths and links out of the directory all answer "not found".
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

#: Where the page links reports.
PREFIX = "/ui/reports/"


def report_link(root: Path, report_path: str | None) -> str | None:
    """The page's link to a report an alert names (None when it is not under ``root``)."""
    if not report_path:
        return None
    try:
        relative = Path(report_path).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    return PREFIX + relative.as_posix()


def report_file(root: Path, relative: str) -> Path | None:
    """The report file ``relative`` names under ``root``, or None (outside it, missing, not HTML)."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in relative:
        return None
    try:
        base = root.resolve()
        path = base.joinpath(*parts).resolve()
    except (OSError, ValueError):  # a name with a NUL byte, a loop of links
        return None
    if not path.is_relative_to(base) or path.suffix != ".html" or not path.is_file():
        return None
    return path
