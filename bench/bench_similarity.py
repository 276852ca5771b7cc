"""Benchmark `grade similarity`: `python bench/bench_similarity.py [--students 300] [--repeat 3]`.

Builds a synthetic class of the `vae` assignment (tests/similarity_corpus.py: students mixing eight
authors' solutions function by function, renamed and recommented, plus 10 copies planted under every
disguise) and times the whole comparison as `grade similarity` runs it (reading the folders, the
starter, fingerprints, the index, scores, evidence for the top 50 pairs, CSV and HTML), with an empty
fingerprint cache (cold) and with the cache filled by the previous run (warm).
Columns: students, pairs, cold and warm wall and CPU seconds (median of --repeat; CPU time is what a
busy machine inflates least), and the lowest score of a planted copy (students here share whole
functions at random, so this class is for timing; ranking is tested in tests/test_similarity.py).
Target (issue 24): 300 submissions in under 10 s on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grader.similarity import run_similarity  # noqa: E402
from grader.similarity.output import write_csv, write_html  # noqa: E402
from tests.similarity_corpus import mixed_class  # noqa: E402


def _once(root: Path, out: Path) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process and its fingerprinting workers, comparison)."""
    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    t, c = time.perf_counter(), cpu()
    comparison, rubric = run_similarity(root, "vae")
    write_csv(comparison, out / "similarity.csv")
    write_html(comparison, out / "similarity.html", rubric.id)
    return time.perf_counter() - t, cpu() - c, comparison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, nargs="+", default=[50, 150, 300])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for n in args.students:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "class"
            mixed_class(root, n, seed=n)
            cold, warm = [], []
            for r in range(args.repeat):
                os.environ["GRADEKIT_CACHE"] = str(Path(tmp) / f"cache{r}")
                cold.append(_once(root, Path(tmp) / "out")[:2])
                *timing, comparison = _once(root, Path(tmp) / "out")
                warm.append(timing)
            rows.append((n, len(comparison.pairs), *(statistics.median(t[k] for t in cold) for k in (0, 1)),
                         *(statistics.median(t[k] for t in warm) for k in (0, 1))))
    print(f"{'students':>8} {'pairs':>7} {'cold s':>7} {'cold CPU s':>10} {'warm s':>7} {'warm CPU s':>10}")
    for n, pairs, cold, cold_cpu, warm, warm_cpu in rows:
        print(f"{n:>8} {pairs:>7} {cold:>7.2f} {cold_cpu:>10.2f} {warm:>7.2f} {warm_cpu:>10.2f}")


if __name__ == "__main__":
    main()
