"""Where the time of one cold `grade` command goes: `.venv/bin/python bench/bench_startup.py [--repeat 5]`.

Runs each command --repeat times (after one untimed run for the file cache) with
`GRADEKIT_TRACE=FILE` (grader/trace.py): the grader, the zygote and the sandboxed child mark the
end of each phase on one wall-clock axis. Prints, per command, a table of phases in the order they
happen (median and min over the runs, seconds), from the moment the bench starts the process
("process start: interpreter, site, grader.cli") to the moment it has exited ("exit: interpreter
shutdown, atexit, ...": time after the last mark). Rows marked "(within)" add up time spent
in scattered events inside the phase above them (e.g. the upcalls of all checks), not a phase.

Commands: `import torch` alone (the floor, measured the same way), `grade check alice`,
`grade run alice --only <unit tags> --no-report`, and with --report the same with the report.
`--batch N`: also `grade batch -j 1 --no-reports` of N copies of alice/bob/carol, per-submission
phases in the worker. `--importtime`: the slowest imports other than torch's of `grade check`
(python -X importtime, cumulative).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GRADE = [str(BIN / "grade")] if (BIN / "grade").exists() else [sys.executable, "-m", "grader.cli"]


def unit_tags() -> str:
    from grader.rubric import available_rubrics

    return ",".join(available_rubrics()["vae"].components_where(lambda k: not k.trains))


def traced_run(cmd: list[str], cwd: Path) -> tuple[float, float, list[dict]]:
    """Run `cmd` with tracing on; (start, end, marks) on the wall clock."""
    fd, trace_file = tempfile.mkstemp(prefix="gradekit-trace-", suffix=".jsonl")
    os.close(fd)
    env = dict(os.environ, GRADEKIT_TRACE=trace_file)
    try:
        start = time.time()
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.time()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-3000:]}")
        marks = [json.loads(line) for line in Path(trace_file).read_text().splitlines() if line.strip()]
    finally:
        os.unlink(trace_file)
    return start, end, marks


def phases(start: float, end: float, marks: list[dict],
           last: str = "exit: interpreter shutdown, atexit, thread joins") -> list[tuple[str, float]]:
    """(phase, seconds) in order: each mark ends a phase that began at the previous mark; `last`
    names the phase from the last mark to `end`."""
    timed = sorted((m for m in marks if "total_s" not in m), key=lambda m: m["t"])
    out, before = [], start
    for m in timed:
        out.append((m["name"], m["t"] - before))
        before = m["t"]
    out.append((last, end - before))
    if timed and timed[0]["name"].startswith("python started"):
        out[0] = ("process start: interpreter, site, " + out[0][0].split(",", 1)[-1].strip(), out[0][1])
    for m in marks:  # scattered events: shown under the phase they happened in
        if "total_s" in m:
            i = next((k for k, n in enumerate(out) if n[0] == m["name"].split(":")[0].strip()), None)
            i = next((k for k, n in enumerate(out) if n[0].startswith("checks (")), len(out) - 2) if i is None else i
            out.insert(i + 1, (f"  (within) {m['name'].split(':', 1)[-1].strip()} ×{m.get('count', 0)}", m["total_s"]))
    return out


def table(title: str, runs: list[list[tuple[str, float]]], walls: list[float]) -> None:
    rows: dict[str, list[float]] = defaultdict(list)
    order: list[str] = []
    for run in runs:
        seen: dict[str, int] = defaultdict(int)
        for name, s in run:
            seen[name] += 1
            key = name if seen[name] == 1 else f"{name} #{seen[name]}"
            if key not in rows:
                order.append(key)
            rows[key].append(s)
    print(f"\n{title}: wall median {statistics.median(walls):.2f} s, min {min(walls):.2f} s ({len(walls)} runs)\n")
    print("| phase | median (s) | min (s) |")
    print("|---|---|---|")
    for key in order:
        xs = rows[key]
        print(f"| {key} | {statistics.median(xs):.3f} | {min(xs):.3f} |")
    sys.stdout.flush()


def measure(title: str, cmd_for, repeat: int, cwd: Path) -> None:
    traced_run(cmd_for(-1), cwd)  # untimed: file cache
    runs, walls = [], []
    for i in range(repeat):
        start, end, marks = traced_run(cmd_for(i), cwd)
        runs.append(phases(start, end, marks))
        walls.append(end - start)
    table(title, runs, walls)


def batch_phases(n: int, repeat: int, tags: str, tmp: Path) -> None:
    """grade batch -j 1: the worker's phases per submission (median over submissions and runs)."""
    examples = ["alice", "bob", "carol"]
    for i in range(n):
        shutil.copytree(REPO / "submissions" / examples[i % 3], tmp / "class" / f"s{i:02d}")
    cmd = GRADE + ["batch", str(tmp / "class"), "-j", "1", "--only", tags, "--no-reports", "--force", "--out", str(tmp / "b")]
    traced_run(cmd, tmp)
    heads, tails, per_sub, walls = [], [], [], []
    for _ in range(repeat):
        start, end, marks = traced_run(cmd, tmp)
        walls.append(end - start)
        marks = sorted(marks, key=lambda m: m["t"])
        starts = [k for k, m in enumerate(marks) if m["name"] == "batch: submission started"]
        if not starts:
            raise SystemExit("no submission was traced: is the batch grading anything?")
        parent = marks[0]["pid"]
        for m in marks[:starts[0]]:  # the pool worker's start-up (after the parent's scan of the class and the spawn)
            if m["pid"] != parent and m["name"].startswith("python started"):
                m["name"] = "worker: parent found the submissions, spawned the worker; its interpreter started, grader.cli imported"
            elif m["pid"] != parent:
                m["name"] = "worker: " + m["name"]
        heads.append(phases(start, marks[starts[0]]["t"], marks[:starts[0]], last="pool: the first submission handed over"))
        for a, b in zip(starts, starts[1:] + [None]):
            seg = [m for m in (marks[a:b] if b else marks[a:]) if m["pid"] == marks[a]["pid"]]
            if b is None:  # the last one: up to its own last mark, then what the batch does after it
                done = seg[-1]["t"]
                tails.append([(m["name"], m["t"] - t0) for m, t0 in zip(
                    [m for m in marks[a:] if m["t"] > done and "total_s" not in m],
                    [done] + [m["t"] for m in marks[a:] if m["t"] > done and "total_s" not in m])] + [
                    ("exit: pool shut down, gradebook, interpreter", end - max(m["t"] for m in marks))])
                per_sub.append(phases(seg[0]["t"], done, seg[1:], last="")[:-1])
            else:
                per_sub.append(phases(seg[0]["t"], marks[b]["t"], seg[1:], last="hand-over to the next submission"))
    per = [w / n for w in walls]
    table(f"`grade batch -j 1 --no-reports`, {n} submissions, wall per submission incl. start-up "
          f"{statistics.median(per):.2f} s: start-up, up to the first submission", heads, walls)
    table("... one submission in the worker (all submissions of all runs)", per_sub,
          [sum(s for name, s in p if "(within)" not in name) for p in per_sub])
    table("... after the last submission", tails, walls)


def importtime(sub: Path) -> None:
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "grader.cli", "check", str(sub)],
                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = line.split("|", 2)
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        name = name.strip()
        if depth <= 1 and not name.startswith(("torch", "numpy")) and cum.strip().isdigit():
            rows.append((int(cum) / 1e6, name))
    print("\n`grade check`: slowest imports other than torch and numpy (cumulative, python -X importtime)\n")
    print("| module | s |")
    print("|---|---|")
    for s, name in sorted(rows, reverse=True)[:15]:
        print(f"| {name} | {s:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--student", default="alice")
    ap.add_argument("--report", action="store_true", help="also `grade run` with its report")
    ap.add_argument("--batch", type=int, default=0, help="also a -j 1 batch of this many submissions")
    ap.add_argument("--importtime", action="store_true")
    ap.add_argument("--no-single", action="store_true", help="skip the single-submission commands (e.g. batch only)")
    args = ap.parse_args()
    tags = unit_tags()
    sub = REPO / "submissions" / args.student
    tmp = Path(tempfile.mkdtemp(prefix="gradekit-bench-startup-"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start "
          "(timings under load are upper bounds)")
    try:
        if not args.no_single:
            measure("`python -c 'import torch'` (the floor)", lambda i: [sys.executable, "-c", "import torch"], args.repeat, tmp)
            measure(f"`grade check {args.student}`", lambda i: GRADE + ["check", str(sub)], args.repeat, tmp)
            measure(f"`grade run {args.student} --only <unit> --no-report`",
                    lambda i: GRADE + ["run", str(sub), "--only", tags, "--no-report", "--out", str(tmp / f"n{i}")],
                    args.repeat, tmp)
        if args.report and not args.no_single:
            measure(f"`grade run {args.student} --only <unit>` with the report",
                    lambda i: GRADE + ["run", str(sub), "--only", tags, "--out", str(tmp / f"r{i}")], args.repeat, tmp)
        if args.batch:
            batch_phases(args.batch, max(1, args.repeat // 2), tags, tmp)
        if args.importtime:
            importtime(sub)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
