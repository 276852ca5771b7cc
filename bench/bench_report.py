"""Benchmark report rendering: `python bench/bench_report.py [--repeat N]`.

Rows: a typical per-student report, a report with 10 figures, a report whose answers hold 180 kB of TeX
(bounded by the rendering budgets), the class summary of 50 students.
Columns: mean and min wall time in seconds (target: under 2 s per report). The first, untimed run
warms imports and the math cache, as a `grade report` over a class would after its first student.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from grader.report.render import render_report  # noqa: E402
from grader.report.summary import render_summary  # noqa: E402
from grader.results import GradeResult, QuestionResult, TestResult, save_result  # noqa: E402

COMPONENTS = ["log_normal_diag", "log_standard_normal", "log_bernoulli", "log_categorical", "reparameterization",
              "encoder", "decoder", "mog_prior.sample", "mog_prior.log_prob", "elbo"]
ANSWER = """The reparameterization trick writes the sample as a deterministic function of the parameters and
independent noise: $z = \\mu_\\phi(x) + \\sigma_\\phi(x) \\odot \\epsilon$ with $\\epsilon \\sim \\mathcal{N}(0, I)$.

$$\\log q_\\phi(z|x) = -\\frac{D}{2}\\log 2\\pi - \\sum_{d=1}^{D} \\log \\sigma_d - \\frac{1}{2}\\sum_{d=1}^{D}
\\frac{(z_d - \\mu_d)^2}{\\sigma_d^2}$$

```python
eps = torch.randn_like(mu)
z = mu + torch.exp(0.5 * log_var) * eps
```
"""


def typical_result(student: str, rng: random.Random, n_figures: int = 3) -> GradeResult:
    tests = []
    for i, comp in enumerate(COMPONENTS, 1):
        for j in range(1, 4):
            top = rng.choice([1.0, 2.0, 3.0])
            score = top if rng.random() < 0.7 else rng.choice([0.0, top / 2])
            mistakes = ([{"id": f"{comp}_mistake", "message": f"{comp}: a known mistake was diagnosed",
                          "hint": "Compare with the formula in the notes."}] if score < top and rng.random() < .5 else [])
            tests.append(TestResult(f"{comp}: check {j}", f"{i}.{j}", score, top,
                                    output="\n".join(f"case {k}: max abs error {rng.random():.3g}" for k in range(4)),
                                    tags=[comp], component=comp, mistakes=mistakes, hint="Check shapes and constants.",
                                    visibility="after_published" if j == 3 else "visible"))
    questions = [QuestionResult(f"Q{k}", f"Question {k}", 2.0, ANSWER, score=1.5 if k % 2 else None) for k in range(1, 7)]
    return GradeResult(student=student, assignment="vae", tests=tests, questions=questions, execution_time=12.3,
                       grader_version="0.1.0", submission_hash="cd" * 32, graded_at="2026-11-22T22:50:00+00:00",
                       device="cpu", sandbox={"network_isolated": True, "pid_namespace": True, "memory_limit": "4 GB"},
                       student_output="\n".join(f"epoch {e}: loss {100 / (e + 1):.3f}" for e in range(60)),
                       figures=[{"path": f"figures/fig{k}.png", "caption": f"Figure {k} of the model", "tag": "model"}
                                for k in range(n_figures)],
                       metrics={"nll": {"student": 23.1, "reference": 22.8}},
                       metric_info={"nll": {"label": "Test negative log-likelihood", "unit": "nats per image",
                                            "better": "lower", "kind": "value"}})


def write_figures(d: Path, n: int) -> None:
    (d / "figures").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        fig = Figure(figsize=(6, 3.5))
        ax = fig.add_subplot()
        ax.plot(range(100), [((x * (k + 3)) % 17) / 17 for x in range(100)])
        fig.savefig(d / "figures" / f"fig{k}.png", dpi=100)


def timed(fn, repeat: int) -> list[float]:
    fn()  # warm-up (imports, fonts, math cache)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = random.Random(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        typical = typical_result("typical", rng)
        d = save_result(typical, out).parent
        write_figures(d, 3)
        rows.append(("report, typical result (30 checks, 6 answers, 3 figures)",
                     timed(lambda: render_report(typical, d), args.repeat)))

        many = typical_result("figures10", rng, n_figures=10)
        d10 = save_result(many, out).parent
        write_figures(d10, 10)
        rows.append(("report with 10 figures", timed(lambda: render_report(many, d10), args.repeat)))

        # 180 kB of valid TeX in answers (80 s to render before the budgets): fresh formulas every run, so the
        # math cache does not help
        runs = iter(range(10**6))

        def huge_tex():
            k = next(runs)
            formula = "$\\frac{\\partial}{\\partial \\mu_{%d}} \\log p(x_{%d}) = \\sum_i w_i x_i^{%d}$ and "
            r = GradeResult(student="tex", assignment="vae", tests=[], device="cpu", questions=[
                QuestionResult(f"Q{q}", "Derive it", 1.0, "".join(formula % (k, q, i) for i in range(400)))
                for q in range(1, 7)])
            render_report(r, save_result(r, out).parent)

        rows.append(("report, 180 kB of TeX in 6 answers (2,400 formulas)", timed(huge_tex, max(1, args.repeat // 2))))

        cls = out / "class"
        for s in range(50):
            save_result(typical_result(f"student{s:02d}", rng, n_figures=0), cls)
        rows.append(("summary for 50 students", timed(lambda: render_summary(cls), max(1, args.repeat // 2))))

    width = max(len(r[0]) for r in rows)
    print(f"{'case':<{width}}  {'mean s':>7}  {'min s':>7}  runs")
    print("-" * (width + 25))
    for name, times in rows:
        print(f"{name:<{width}}  {statistics.fmean(times):7.3f}  {min(times):7.3f}  {len(times):4d}")


if __name__ == "__main__":
    main()
