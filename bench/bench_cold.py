"""Cold latency of one submission: `.venv/bin/python bench/bench_cold.py [--repeat 5] [--batch 14]`.

What a student's self-check and a one-container-per-submission deployment (Gradescope-style) pay:
every row starts fresh processes, nothing is warm except the OS file cache. Rows (wall-clock
seconds, median and min over --repeat runs; the first, untimed run fills the file cache):

- the floor: `python -c "import torch"`, and the same ending with os._exit (no interpreter teardown).
- `grade check alice`: public checks only, nothing written.
- `grade run alice --only <unit tags>`: every unit-level check (not `model`), results.json and the
  PDF report; then the same with `--no-report`.
- `grade batch -j 1 --no-reports`: a class of --batch vae submissions (alice, bob, carol in turn:
  correct, four classic mistakes, broken), unit checks; wall / submissions, pool start-up included.
- otter-style: what Otter-Grader does per submission (`otter run`: a fresh process that imports
  torch, executes the student's code in that same process and runs the tests there), emulated
  with gradekit's own checks so the work is identical: a fresh `python` that imports torch,
  imports the student's module in-process (no sandbox) and runs the same unit checks.

Targets (issue 14): `grade check` and `grade run --only <unit>` with report <= 2.5 s, batch -j 1
<= 0.5 s per submission, on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GRADE = [str(BIN / "grade")] if (BIN / "grade").exists() else [sys.executable, "-m", "grader.cli"]

# A fresh process per submission, the way Otter grades: import torch, run the student's code in this
# process, run the tests. The tests are gradekit's unit checks; the student's module runs in-process
# through the self-check bundle's stand-in sandbox (no isolation, like Otter's default).
OTTER_STYLE = """
import sys
from pathlib import Path
import torch
import grader.engine as engine
from grader.authoring.bundle_client import Sandbox
engine.Sandbox = Sandbox
sub = Path(sys.argv[1]).resolve()
rubric = engine.find_assignment(sub, "vae")
only = [t for t in sys.argv[2].split(",") if t]
result = engine.grade_submission(sub, rubric, engine.GradeOptions(only=only, device="cpu"))
print(f"{result.autograded_score:g}/{result.autograded_max:g}")
"""


def unit_tags() -> list[str]:
    from grader.rubric import available_rubrics

    return available_rubrics()["vae"].components_where(lambda k: not k.trains)


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command's own process): the CPU time (user + system, from
    the kernel's accounting of the reaped process) is what a busy machine inflates least; the
    zygote's and the sandbox's processes are not in it (the command does not reap them)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(cmd_for, repeat: int, cwd: Path) -> list[tuple[float, float]]:
    timed(cmd_for(-1), cwd)  # untimed: file cache
    return [timed(cmd_for(i), cwd) for i in range(repeat)]


def make_class(root: Path, n: int) -> None:
    examples = ["alice", "bob", "carol"]
    for i in range(n):
        shutil.copytree(REPO / "submissions" / examples[i % len(examples)], root / f"s{i:02d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per row (median and min are shown)")
    ap.add_argument("--batch", type=int, default=14, help="submissions in the -j 1 batch row")
    ap.add_argument("--student", default="alice")
    args = ap.parse_args()

    tags = ",".join(unit_tags())
    sub = REPO / "submissions" / args.student
    tmp = Path(tempfile.mkdtemp(prefix="gradekit-bench-cold-"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Cold latency, {args.student}, {os.cpu_count()} CPUs, load average {load:.1f} at the start "
          f"(timings under load are upper bounds), {args.repeat} runs per row\n")
    print("| what | median (s) | min (s) | CPU of the command's process, median (s) | target (s) |")
    print("|---|---|---|---|---|", flush=True)

    def row(name: str, runs: list[tuple[float, float]], target: str = "", per: int = 1) -> None:
        walls, cpus = [w / per for w, _ in runs], [c / per for _, c in runs]
        print(f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f} | {statistics.median(cpus):.2f} | "
              f"{target or '—'} |", flush=True)

    try:
        # The floor: one torch import, interpreter start and exit included (torch's teardown at exit
        # costs 1.5-4 s here; `grade` skips it with os._exit, a plain `python -c` does not).
        row("`python -c 'import torch'` (start, import, exit)",
            measure(lambda i: [sys.executable, "-c", "import torch"], args.repeat, tmp))
        row("`python -c 'import torch; os._exit(0)'` (start and import only)",
            measure(lambda i: [sys.executable, "-c", "import os, torch; os._exit(0)"], args.repeat, tmp))
        row("`grade check` (public checks)", measure(lambda i: GRADE + ["check", str(sub)], args.repeat, tmp), "2.5")
        row("`grade run --only <unit>`, report included",
            measure(lambda i: GRADE + ["run", str(sub), "--only", tags, "--out", str(tmp / f"r{i}")], args.repeat, tmp),
            "2.5")
        row("`grade run --only <unit> --no-report`",
            measure(lambda i: GRADE + ["run", str(sub), "--only", tags, "--no-report", "--out", str(tmp / f"n{i}")],
                    args.repeat, tmp))
        make_class(tmp / "class", args.batch)
        batch = measure(lambda i: GRADE + ["batch", str(tmp / "class"), "-j", "1", "--only", tags, "--no-reports",
                                           "--force", "--out", str(tmp / "b")], max(1, args.repeat // 2), tmp)
        row(f"`grade batch -j 1 --no-reports` per submission ({args.batch} submissions, pool start-up included)",
            batch, "0.5", per=args.batch)
        row("otter-style: fresh `python` per submission (torch + student code in-process, same checks)",
            measure(lambda i: [sys.executable, "-c", OTTER_STYLE, str(sub), tags], args.repeat, REPO))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average at the end: {load:.1f}")


if __name__ == "__main__":
    main()
