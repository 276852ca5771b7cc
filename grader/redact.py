"""The grading machine's absolute paths, taken out of every text a student sees (check feedback, errors, captured
output, the report). `machine_paths` lists the folders; `redact_paths` rewrites a text without them."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def machine_paths(*extra: Path | str | None) -> list[str]:
    """Absolute folders of the grading machine that must not reach a student: the extra ones (results folder,
    output folder), the repository, the Python installation, the home folder; longest first."""
    paths = {str(p) for p in extra if p}
    paths |= {str(REPO_ROOT), sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path.home())}
    for p in list(paths):
        try:
            paths.add(str(Path(p).resolve()))
        except OSError:
            pass
    return sorted((p.rstrip("/") for p in paths if p and p not in ("/", "")), key=len, reverse=True)


_SITE_PACKAGES = re.compile(r"(?:/[^\s/\"'<>:]+)*/(?:site|dist)-packages/")
_RUN_DIR = re.compile(re.escape(tempfile.gettempdir().rstrip("/")) + r"/[^\s/\"'<>:]+/(?:(?:submission|scratch|log)/)?")


def redact_paths(text: str, roots: list[str]) -> str:
    """Replace the grading machine's absolute paths in `text`: a file of the student's copied submission or
    a temporary run folder becomes its bare name, a library file its path inside site-packages, a folder of
    the machine (repository, output, home, Python) '…'."""
    if not text or "/" not in text:
        return text
    text = _SITE_PACKAGES.sub("", text)
    text = _RUN_DIR.sub("", text)
    for root in roots:
        if root in text:
            text = re.sub(re.escape(root) + r"(?=[/\s\"'<>:,;)\]]|$)/?", "…/", text)
    return text
