"""Grading speed: the sandbox's per-submission overhead, warm zygote vs a fresh process.

    .venv/bin/python bench/bench_grading.py [--n 20]

Rows:
- sandbox start+load+close (warm zygote): fork an isolated child, import the submission, tear down;
  this is the grader's own overhead per submission (no checks run).
- fresh process per submission (naive): `python -c "import torch; import vae"` in a new interpreter.
- `vae` checks of a correct submission that train nothing (unit and property checks; the row names how many),
  warm zygote.
- `grade check` equivalent (public checks only).
- with --model: the whole `vae` rubric end to end, training the student's VAE on the embedded digits
  (reference model cached: the first, cold run that trains and caches it is a row of its own).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grader.engine import GradeOptions, grade_submission  # noqa: E402
from grader.rubric import available_rubrics  # noqa: E402
from grader.sandbox.client import Sandbox, SandboxConfig, Zygote  # noqa: E402


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--model", action="store_true", help="also time full grading with model training")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    sub = tmp / "student"
    sub.mkdir()
    (sub / "vae.py").write_text((REPO / "reference" / "vae.py").read_text())
    rubric = available_rubrics()["vae"]

    t0 = time.perf_counter()
    Zygote.shared().start()
    zygote_start = time.perf_counter() - t0

    def sandbox_cycle():
        with Sandbox(sub, SandboxConfig()) as sb:
            sb.start()
            assert sb.load_error is None

    def fresh_process():
        subprocess.run([sys.executable, "-c", "import torch, numpy, sys; sys.path.insert(0, sys.argv[1]); import vae", str(sub)],
                       check=True, capture_output=True)

    units = rubric.components_where(lambda k: not k.trains)
    n_units = len(grade_submission(sub, rubric, GradeOptions(device=args.device, only=units)).tests)  # (warms the run too)
    rows = [
        ("zygote start (once per grader process)", [zygote_start]),
        ("sandbox start+load+close, warm zygote", timed(sandbox_cycle, args.n)),
        ("fresh python process per submission (naive)", timed(fresh_process, max(3, args.n // 4))),
        (f"vae checks that train nothing ({n_units}), warm zygote", timed(lambda: grade_submission(sub, rubric, GradeOptions(device=args.device, only=units)), max(3, args.n // 4))),
        ("grade check (public checks only), warm zygote", timed(lambda: grade_submission(sub, rubric, GradeOptions(device=args.device, public_only=True)), max(3, args.n // 4))),
    ]
    if args.model:
        import os

        os.environ["GRADEKIT_CACHE"] = str(tmp / "cache")  # cold: this run trains the reference once
        full = lambda: grade_submission(sub, rubric, GradeOptions(device=args.device))  # noqa: E731
        rows.append(("whole rubric incl. training, reference NOT cached", timed(full, 1)))
        rows.append(("whole rubric incl. training, reference cached", timed(full, 3)))
    print(f"{'what':48s} {'runs':>5s} {'median s':>10s} {'min s':>8s} {'max s':>8s}")
    for name, ts in rows:
        print(f"{name:48s} {len(ts):5d} {statistics.median(ts):10.3f} {min(ts):8.3f} {max(ts):8.3f}")
    naive, warm = statistics.median(rows[2][1]), statistics.median(rows[1][1])
    print(f"\nper-submission overhead: warm zygote {warm:.3f} s vs fresh process {naive:.3f} s ({naive / warm:.0f}x)")


if __name__ == "__main__":
    main()
