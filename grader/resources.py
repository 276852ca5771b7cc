"""Where gradekit's files that are not Python live, in a checkout and installed.

`rubrics/` and `templates/` sit at the top of a checkout (beside `grader/`); a wheel carries them as
package data inside the package (`grader/rubrics`, `grader/templates`: see setup.py), so that
`pip install gradekit` alone gives a working grader, e.g. a Dask worker.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """The folder `name` ('rubrics' or 'templates'): inside the installed package, else the checkout's."""
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name
