"""Batch grading throughput: a generated class of 100, `grade_batch` with -j 1 and -j 2, vs the naive way.

    .venv/bin/python bench/bench_batch.py [--n 100] [--naive 10]

The class: 60 % correct copies of reference/vae.py, 30 % with one planted bug, 10 % hostile (syntax
error, os._exit at import, infinite loop in log_bernoulli). It is graded with a copy of the vae
rubric whose per-call limit is 2 s (each loop costs 2 × 2 s instead of 2 × 20 s).

Rows:
- students/minute: whole class, the unit-level checks (all with --all), fresh output folder (nothing skipped), includes pool start-up.
- overhead share: 1 - (time inside checks, summed over tests' `duration`) / (wall time × jobs).
- naive: each of `--naive` submissions (correct/buggy/syntax-error mix, no infinite loops) graded by a
  fresh `python` process (import torch, start the sandbox zygote, grade, write results.json),
  sequentially; extrapolated to the whole class and compared with -j 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUGS = [
    "\ndef log_standard_normal(x, reduction=None, dim=None):\n    return -0.5 * x**2\n",
    "\ndef log_bernoulli(x, p, reduction=None, dim=None):\n    import torch\n    lp = x * torch.log(1 - p) + (1 - x) * torch.log(p)\n"
    "    return lp if reduction is None else (lp.sum(dim) if reduction == 'sum' else lp.mean(dim))\n",
    "\n_orig_reparam = Encoder.reparameterization\n"
    "def _reparam(mu, log_var):\n    import torch\n    return mu + torch.exp(log_var) * torch.randn_like(mu)\n"
    "Encoder.reparameterization = staticmethod(_reparam)\n",
]
HOSTILE = [
    ("syntax", None),
    ("exit", "\nimport os\nos._exit(1)\n"),
    ("loop", "\ndef log_bernoulli(x, p, reduction=None, dim=None):\n    while True:\n        pass\n"),
]

NAIVE_SCRIPT = """
import sys
from pathlib import Path
from grader.sandbox.client import Zygote
Zygote.shared().launch()
from grader.engine import GradeOptions, find_assignment, grade_submission
from grader.results import save_result
sub, out, rubrics = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
rubric = find_assignment(sub.resolve(), "vae", rubrics)
only = [t for t in sys.argv[4].split(",") if t]
save_result(grade_submission(sub, rubric, GradeOptions(out_dir=out, only=only)), out)
"""


def make_class(root: Path, n: int) -> list[str]:
    ref = (REPO / "reference" / "vae.py").read_text()
    kinds = []
    n_bug, n_hostile = round(0.3 * n), round(0.1 * n)
    n_ok = n - n_bug - n_hostile
    for i in range(n):
        d = root / f"s{i:03d}"
        d.mkdir(parents=True)
        if i < n_ok:
            text, kind = ref, "correct"
        elif i < n_ok + n_bug:
            text, kind = ref + BUGS[i % len(BUGS)], "bug"
        else:
            name, extra = HOSTILE[i % len(HOSTILE)]
            text, kind = ("def broken(:\n" if extra is None else ref + extra), name
        (d / "vae.py").write_text(text)
        kinds.append(kind)
    return kinds


def fast_rubrics(tmp: Path) -> Path:
    d = tmp / "rubrics"
    d.mkdir()
    (d / "vae.toml").write_text((REPO / "rubrics" / "vae.toml").read_text().replace("call_timeout_s = 20", "call_timeout_s = 2"))
    return d


def check_seconds(out: Path) -> float:
    total = 0.0
    for p in out.glob("*/results.json"):
        for t in json.loads(p.read_text())["tests"]:
            total += t["extra_data"]["duration"]
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--naive", type=int, default=10)
    ap.add_argument("--jobs", default="1,2")
    ap.add_argument("--all", action="store_true",
                    help="also run the model-level checks (they train a model: ~10 s per submission)")
    args = ap.parse_args()
    from grader.batch import grade_batch
    from grader.engine import GradeOptions
    from grader.rubric import available_rubrics

    only = [] if args.all else available_rubrics()["vae"].components_where(lambda k: not k.trains)

    tmp = Path(tempfile.mkdtemp(prefix="gradekit-bench-"))
    try:
        root = tmp / "class"
        kinds = make_class(root, args.n)
        rubrics = fast_rubrics(tmp)
        rows = []
        for jobs in [int(j) for j in args.jobs.split(",")]:
            out = tmp / f"out-j{jobs}"
            t0 = time.perf_counter()
            # grading only: report rendering (~1.4 s per student, bench_report.py) is timed on its own
            s = grade_batch(root, out, GradeOptions(only=only), jobs=jobs, rubrics_dir=rubrics, reports=False)
            wall = time.perf_counter() - t0
            inside = check_seconds(out)
            rows.append((jobs, wall, inside, len(s.graded), len(s.failed)))
        # the naive way: a fresh process per submission, sequential
        pick = [i for i, k in enumerate(kinds) if k == "correct"][:round(0.6 * args.naive)]
        pick += [i for i, k in enumerate(kinds) if k == "bug"][:round(0.3 * args.naive)]
        pick += [i for i, k in enumerate(kinds) if k == "syntax"][:args.naive - len(pick)]
        naive_out = tmp / "out-naive"
        t0 = time.perf_counter()
        for i in pick:
            subprocess.run([sys.executable, "-c", NAIVE_SCRIPT, str(root / f"s{i:03d}"), str(naive_out), str(rubrics), ",".join(only)],
                           cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        naive = time.perf_counter() - t0
        per_naive = naive / len(pick)
        # the same subset's share of the -j 1 run, for a like-for-like ratio
        j1_out = tmp / "out-j1"
        subset_checks = sum(t["extra_data"]["duration"] for i in pick
                            for t in json.loads((j1_out / f"s{i:03d}" / "results.json").read_text())["tests"])
        subset_exec = sum(json.loads((j1_out / f"s{i:03d}" / "results.json").read_text())["execution_time"] for i in pick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"class: {args.n} submissions ({kinds.count('correct')} correct, {kinds.count('bug')} buggy, "
          f"{args.n - kinds.count('correct') - kinds.count('bug')} hostile), " + ("all checks" if args.all else "unit-level checks (no model training)") + ", call_timeout_s = 2")
    print(f"{'run':<34}{'wall s':>9}{'students/min':>14}{'in checks s':>13}{'overhead':>10}")
    base = None
    for jobs, wall, inside, graded, failed in rows:
        base = base or wall
        share = 1 - inside / (wall * jobs)
        print(f"{'grade_batch -j ' + str(jobs):<34}{wall:>9.1f}{60 * args.n / wall:>14.1f}{inside:>13.1f}{share:>10.0%}"
              + (f"   ({failed} failed)" if failed else ""))
    print(f"{'naive: fresh process each, ' + str(len(pick)) + ' subs':<34}{naive:>9.1f}{60 / per_naive:>14.1f}"
          f"{subset_checks:>13.1f}{1 - subset_checks / naive:>10.0%}")
    print(f"naive per submission: {per_naive:.2f} s; the same {len(pick)} inside the -j 1 batch: "
          f"{subset_exec / len(pick):.2f} s each (grade_submission time)")
    print(f"naive extrapolated to {args.n}: {per_naive * args.n:.0f} s = {per_naive * args.n / rows[0][1]:.1f}x "
          f"the -j {rows[0][0]} batch ({rows[0][1]:.0f} s) and {per_naive * args.n / rows[-1][1]:.1f}x the -j {rows[-1][0]} batch"
          " (the naive mix has no infinite loops, so the ratio is conservative)")


if __name__ == "__main__":
    main()
