"""A Gradescope autograder zip for one assignment: `grade gradescope build --assignment vae`.

The zip holds, at its root (Gradescope unpacks it into /autograder/source):

- `setup.sh`: installs Python, a CPU build of torch and gradekit (editable, from `gradekit/`, so the
  rubrics and reference implementations next to the code are found);
- `run_autograder`: grades /autograder/submission with `grade run` and copies its results.json
  (already in Gradescope's schema) to /autograder/results/results.json; if grading could not run at
  all, it writes a zero-score results.json whose output says why;
- `gradekit/`: the grader's source, reference implementations, rubrics, templates, pyproject.toml.
"""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INCLUDE = ["pyproject.toml", "README.md", "grader", "reference", "rubrics", "templates", "docs"]
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".git", ".venv"}


class GradescopeError(ValueError):
    """The autograder cannot be built (the message says what to do)."""


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update && apt-get install -y python3 python3-pip python3-venv
fi
python3 -m pip install --upgrade pip
# CPU-only torch keeps the image small; gradekit accepts any torch>=2.2,<3.
python3 -m pip install "torch>=2.2,<3" torchvision --index-url https://download.pytorch.org/whl/cpu \\
    || python3 -m pip install "torch>=2.2,<3" torchvision
python3 -m pip install -e /autograder/source/gradekit
grade list
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade it, hand results.json over.
set -u
ASSIGNMENT={assignment}
mkdir -p /autograder/results
rm -rf /tmp/gk
cd /autograder/source/gradekit
grade run /autograder/submission --assignment "$ASSIGNMENT" --out /tmp/gk > /tmp/gk_log.txt 2>&1
status=$?
if [ -f /tmp/gk/submission/results.json ]; then
    cp /tmp/gk/submission/results.json /autograder/results/results.json
else
    python3 - "$status" <<'EOF'
import json, sys
log = open("/tmp/gk_log.txt", encoding="utf-8", errors="replace").read()[-4000:]
json.dump({{"score": 0, "output": "The autograder could not grade this submission (exit status "
           + sys.argv[1] + "). Check that you uploaded {module} (or a Jupyter notebook with its code).\\n\\n" + log,
           "visibility": "visible", "tests": []}}, open("/autograder/results/results.json", "w"))
EOF
fi
cat /tmp/gk_log.txt
"""


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(arcname, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    zf.writestr(info, data)


def build_autograder(assignment_id: str, out_zip: Path) -> Path:
    """Write the autograder zip for `assignment_id` to `out_zip` (atomically); return its path."""
    from grader.rubric import RubricError, available_rubrics

    try:
        rubrics = available_rubrics()
    except RubricError as e:
        raise GradescopeError(str(e)) from None
    if assignment_id not in rubrics:
        raise GradescopeError(f"unknown assignment {assignment_id!r}; known: {', '.join(sorted(rubrics)) or 'none'} (see `grade list`)")
    rubric = rubrics[assignment_id]
    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_zip.parent, prefix=f".{out_zip.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            _add(zf, "setup.sh", SETUP_SH.encode(), executable=True)
            _add(zf, "run_autograder", RUN_AUTOGRADER.format(assignment=shlex.quote(assignment_id),
                                                             module=rubric.module).encode(), executable=True)
            for item in INCLUDE:
                src = REPO / item
                if not src.exists():
                    continue
                files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
                for p in files:
                    rel = p.relative_to(REPO)
                    if SKIP_PARTS & set(rel.parts) or p.is_symlink() or p.suffix in (".pyc", ".tmp"):
                        continue
                    _add(zf, f"gradekit/{rel.as_posix()}", p.read_bytes())
        os.replace(tmp, out_zip)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_zip
