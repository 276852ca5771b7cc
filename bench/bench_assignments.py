"""End to end, per assignment: grade each bundled correct example with the whole rubric, model
training included, on the embedded digits data — first with an empty reference-model cache (the
reference is trained once and cached), then with the cache filled (what every other student of a
class costs). Reports are not rendered here (bench_report.py times them).

    .venv/bin/python bench/bench_assignments.py [--device cpu|cuda] [--repeat 2]

Prints one row per assignment: unit checks, model-level checks, wall time cold and cached.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=2, help="cached runs per assignment (median reported)")
    ap.add_argument("--only", help="comma-separated assignment ids")
    args = ap.parse_args()
    os.environ["GRADEKIT_CACHE"] = tempfile.mkdtemp(prefix="gradekit-bench-cache-")  # cold at first
    from grader.engine import GradeOptions, grade_submission
    from grader.rubric import available_rubrics
    from grader.sandbox.client import Zygote

    Zygote.shared().start()
    rubrics = available_rubrics()
    wanted = args.only.split(",") if args.only else [r for r in rubrics if rubrics[r].examples]
    rows = []
    for aid in wanted:
        rubric = rubrics[aid]
        sub = rubric.example_paths(REPO)[0]  # the first correct example the rubric names
        out = Path(tempfile.mkdtemp(prefix="gradekit-bench-out-"))
        opts = GradeOptions(device=args.device, out_dir=out)
        t0 = time.perf_counter()
        r = grade_submission(sub, rubric, opts)
        cold = time.perf_counter() - t0
        cached = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            r = grade_submission(sub, rubric, opts)
            cached.append(time.perf_counter() - t0)
        model = sum(t.duration for t in r.tests if rubric.kind_of(t.component).trains)
        unit = sum(t.duration for t in r.tests) - model
        rows.append((aid, sub.name, f"{r.autograded_score:g}/{r.autograded_max:g}", unit, model, cold,
                     statistics.median(cached)))
    print(f"device: {args.device}, torch threads: {__import__('torch').get_num_threads()}")
    print(f"{'assignment':20s} {'example':8s} {'score':>10s} {'unit s':>8s} {'model s':>8s} {'cold s':>8s} {'cached s':>9s}")
    for aid, ex, score, unit, model, cold, cached in rows:
        print(f"{aid:20s} {ex:8s} {score:>10s} {unit:8.1f} {model:8.1f} {cold:8.1f} {cached:9.1f}")


if __name__ == "__main__":
    main()
