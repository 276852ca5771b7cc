"""`grade batch --executor dask` throughput with 1 and 2 workers (a LocalCluster on this machine).

    .venv/bin/python bench/bench_dask.py [--n 12] [--workers 1,2] [--all]

The class: `--n` generated `vae` submissions (2/3 correct copies of reference/vae.py, 1/3 with one planted
bug), graded through the Dask executor (submissions and results travel as bytes, as on a real cluster),
reports off. Unit-level checks by default; `--all` adds the model-level checks (training: ~20 s each).
Each cluster first grades one submission (not timed) so that every worker has started its sandbox
zygote (torch imported), as workers of a running cluster have. Prints one row per worker count.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUG = "\ndef log_standard_normal(x, reduction=None, dim=None):\n    return -0.5 * x**2\n"


def make_class(root: Path, n: int) -> None:
    ref = (REPO / "reference" / "vae.py").read_text()
    for i in range(n):
        (root / f"s{i:03d}").mkdir(parents=True)
        (root / f"s{i:03d}" / "vae.py").write_text(ref + (BUG if i % 3 == 2 else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--all", action="store_true", help="also the model-level checks (trains each student's VAE)")
    args = ap.parse_args()
    from distributed import LocalCluster

    from grader.batch import grade_batch
    from grader.engine import GradeOptions
    from grader.rubric import available_rubrics

    only = [] if args.all else available_rubrics()["vae"].components_where(lambda k: not k.trains)
    tmp = Path(tempfile.mkdtemp(prefix="gradekit-bench-dask-"))
    rows = []
    try:
        make_class(tmp / "class", args.n)
        make_class(tmp / "warm", 4)
        for w in [int(x) for x in args.workers.split(",")]:
            with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
                grade_batch(tmp / "warm", tmp / f"warm-{w}", GradeOptions(only=only), executor="dask",
                            scheduler=cluster.scheduler_address, reports=False)
                t0 = time.perf_counter()
                s = grade_batch(tmp / "class", tmp / f"out-{w}", GradeOptions(only=only), executor="dask",
                                scheduler=cluster.scheduler_address, reports=False)
                rows.append((w, time.perf_counter() - t0, len(s.graded), len(s.failed)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"class: {args.n} vae submissions, " + ("all checks" if args.all else "unit-level checks") + ", reports off")
    print(f"{'dask workers':<14}{'wall s':>9}{'students/min':>14}{'speed-up':>10}")
    for w, wall, graded, failed in rows:
        print(f"{w:<14}{wall:>9.1f}{60 * args.n / wall:>14.1f}{rows[0][1] / wall:>9.2f}x"
              + (f"   ({failed} failed)" if failed else ""))


if __name__ == "__main__":
    main()
