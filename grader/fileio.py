"""Files written whole or not at all: results, reports, gradebooks and caches that a reader (a TA's browser,
a resumed batch, another worker) may open at any moment, and that a crash must not leave half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask() -> int:
    """This process's umask, read without changing it (os.umask sets it, a race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Replace `path` by `data` (str: written as UTF-8) so that readers see the old file or the new one, never
    part of either: written to a temporary file beside it, flushed to disk, then renamed over it. The file
    gets the permissions any new file of this process would get (0666 less the umask), not mkstemp's 0600.
    Creates missing parent folders. On any failure the temporary file is removed and `path` is unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---- spreadsheet cells --------------------------------------------------------------------------
# Excel, LibreOffice and Google Sheets run a CSV cell that starts with one of these as a formula
# (=HYPERLINK(...) leaks data on a click, =cmd|'...'!A0 asks to run a program). Student names come from
# folder names, LMS archive names and rosters the students edit, so every text cell of a CSV the staff
# open is written through `csv_cell` (OWASP's advice: a leading apostrophe; the sheet shows the text as is).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(value):
    """`value` safe to open in a spreadsheet: text starting like a formula gets a leading "'"; numbers,
    None and other text pass unchanged (a negative number stays a number)."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
        return value  # "-1.5" is a number, not a formula
    except ValueError:
        return "'" + value


def csv_uncell(text: str) -> str:
    """The inverse of `csv_cell` for a file the grader reads back (manual.csv): "'=x" -> "=x"."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def csv_safe_frame(df):
    """A copy of the pandas frame `df` with every text cell through `csv_cell` (numbers untouched)."""
    from pandas.api.types import is_numeric_dtype

    out = df.copy()
    for col in out.columns:
        if not is_numeric_dtype(out[col]):  # object or pandas 3's str columns
            out[col] = out[col].map(csv_cell)
    return out
