"""Benchmark reading what students hand in: `python bench/bench_inputs.py [--repeat N] [--big-mb MB]`.

Rows: `prepare()` of the example notebook submission (judy: notebook -> module, answers from its markdown,
its plot), the notebook step alone, a notebook with MB of image outputs, and the PDF step for a generated
10-page report (the example's 3 pages too). Columns: mean and min wall time in seconds over N runs after one
untimed warm-up run (imports), and the cold first run. Targets: <= 0.1 s per notebook, <= 0.5 s per 10-page PDF.
Nothing of the student's code runs here.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _timed(fn, repeat: int) -> tuple[float, float, float]:
    t = time.perf_counter()
    fn()
    cold = time.perf_counter() - t
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return cold, statistics.mean(times), min(times)


def _big_notebook(path: Path, mb: int) -> Path:
    import nbformat
    from nbformat import v4

    png = base64.b64encode(b"\x89PNG" + b"\0" * (1 << 20)).decode()  # 1 MB of output per cell (not a valid PNG)
    src = (ROOT / "submissions" / "alice" / "vae.py").read_text()
    cells = [v4.new_code_cell(src)]
    cells += [v4.new_code_cell(f"plt.imshow(x[{i}])", outputs=[v4.new_output("display_data", data={"image/png": png})])
              for i in range(mb)]
    nbformat.write(v4.new_notebook(cells=cells), str(path))
    return path


def _report_pdf(path: Path, pages: int) -> Path:
    from weasyprint import HTML

    para = ("The negative ELBO is the reconstruction error plus the KL divergence between the encoder and the "
            "prior; we estimate it with one sample of z per data point. ") * 14
    body = "".join(f"<h2 style='page-break-before: always'>Question {i} ({i % 4 + 1}pts)</h2><p>Please explain.</p>"
                   f"<p>Answer {para}</p><p>{para}</p>" for i in range(1, pages + 1))
    HTML(string=f"<html><body>{body}</body></html>").write_pdf(str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=50, help="size of the notebook full of outputs (default 50 MB)")
    args = ap.parse_args()

    from grader.rubric import available_rubrics
    from grader.submission import prepare
    from grader.submission.answers import pdf_text, split_questions
    from grader.submission.notebook import module_from_notebook

    rubric = available_rubrics()["vae"]
    judy = ROOT / "submissions" / "judy"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = _big_notebook(tmp / "big.ipynb", args.big_mb)
        pdf10 = _report_pdf(tmp / "report10.pdf", 10)
        rows.append(("prepare(): judy's notebook submission (module, answers, figure)",
                     _timed(lambda: prepare(judy, rubric), args.repeat)))
        rows.append(("notebook -> module only (judy, 25 cells)",
                     _timed(lambda: module_from_notebook(judy / "vae_priors.ipynb", "vae.py"), args.repeat)))
        rows.append((f"notebook -> module, {big.stat().st_size / 2**20:.0f} MB of outputs",
                     _timed(lambda: module_from_notebook(big, "vae.py"), max(1, args.repeat // 2))))
        rows.append(("PDF report, 10 pages: text + questions",
                     _timed(lambda: split_questions(pdf_text(pdf10)), args.repeat)))
        rows.append(("PDF report, 3 pages (ken's report.pdf)",
                     _timed(lambda: split_questions(pdf_text(ROOT / "submissions" / "ken" / "report.pdf")), args.repeat)))
    w = max(len(r[0]) for r in rows)
    print(f"{'input':<{w}}  {'cold s':>7}  {'mean s':>7}  {'min s':>7}")
    for name, (cold, mean, low) in rows:
        print(f"{name:<{w}}  {cold:7.3f}  {mean:7.3f}  {low:7.3f}")


if __name__ == "__main__":
    main()
