"""Class summary: every `*/results.json` under a folder -> summary.html + summary.pdf.

Score histogram (matplotlib, Agg), pass rate of every check, the most common diagnosed mistakes,
written-question grading progress and a table of all students (pandas builds the tables, escaping
every cell). Unreadable results.json files are listed, not fatal.
"""

from __future__ import annotations

import base64
import io
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import jinja2
from markupsafe import Markup

from grader.report.manual import load_results
from grader.fileio import write_atomic
from grader.report.render import clean_text, fmt_date, fmt_points, html_to_pdf, stylesheet
from grader.results import GradeResult

SUMMARY_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'">
<title>Class summary — {{ assignments }}</title>
<style>
{{ css }}
.summary-stats { display: flex; gap: 3mm; margin: 3mm 0 1mm 0; }
.stat { flex: 1; min-height: 0; background: var(--soft); border-radius: 1.5mm; padding: 2mm 3mm; }
.stat .v { font-size: 14pt; font-weight: bold; color: var(--accent); }
.stat .k { font-size: 7.6pt; color: var(--muted); text-transform: uppercase; letter-spacing: 0.4pt; }
.hist { text-align: center; margin: 2mm 0; }
.hist img { width: 150mm; }
table.data { width: 100%; border-collapse: collapse; font-size: 8.2pt; }
table.data th { text-align: left; color: var(--muted); font-size: 7.2pt; text-transform: uppercase; letter-spacing: 0.3pt;
                border-bottom: 0.8pt solid var(--ink); padding: 1mm 1.5mm; }
table.data td { padding: 0.8mm 1.5mm; border-bottom: 0.5pt solid var(--rule); vertical-align: top; }
table.data tr:nth-child(even) td { background: #fafbfc; }
table.checks-t td:nth-child(n+4), table.checks-t th:nth-child(n+4),
table.students-t td:nth-child(n+2), table.students-t th:nth-child(n+2),
table.mistakes-t td:nth-child(n+4), table.mistakes-t th:nth-child(n+4),
table.questions-t td:nth-child(n+3), table.questions-t th:nth-child(n+3) { text-align: right; white-space: nowrap; }
table.students-t td:last-child, table.students-t th:last-child { text-align: left; white-space: normal; }
h2.assignment-title { background: var(--soft); padding: 1.5mm 3mm; border-radius: 1.5mm; margin-top: 8mm; break-after: avoid; }
.summary-stats, h3 { break-after: avoid; }  /* a section's head stays with its histogram */
</style>
</head>
<body>
<header class="masthead">
  <div class="masthead-text">
    <div class="kicker">Class summary</div>
    <h1 data-runtitle="Class summary">{{ assignments }}</h1>
    <table class="meta"><tr><th>Students</th><td>{{ n }}</td><th>Generated</th><td>{{ generated_at }}</td></tr>
    <tr><th>Folder</th><td>{{ folder }}</td><th>Last graded</th><td>{{ last_graded }}</td></tr></table>
  </div>
</header>

{% if broken %}
<section class="errors"><h2>Unreadable results</h2>
<ul>{% for path, why in broken %}<li><pre>{{ path }}: {{ why }}</pre></li>{% endfor %}</ul></section>
{% endif %}

{% for sec in sections %}
{# sections flow on (no forced page break): a section's short last table must not be left alone on a page #}
{% if sections|length > 1 %}<h2 class="assignment-title">{{ sec.assignment }} · {{ sec.n }} student{{ "s" if sec.n != 1 }}</h2>{% endif %}
<div class="summary-stats">
  <div class="stat"><div class="v">{{ sec.stats.mean }}</div><div class="k">mean score (of {{ sec.stats.max }})</div></div>
  <div class="stat"><div class="v">{{ sec.stats.median }}</div><div class="k">median</div></div>
  <div class="stat"><div class="v">{{ sec.stats.lo }} – {{ sec.stats.hi }}</div><div class="k">range</div></div>
  <div class="stat"><div class="v">{{ sec.stats.pending }}</div><div class="k">answers to grade by hand</div></div>
</div>

<h3>Score distribution</h3>
<div class="hist"><img src="{{ sec.histogram }}" alt="Histogram of total scores"></div>

<h3>Checks not every student passed</h3>
{% if sec.checks_table %}{{ sec.checks_table }}{% endif %}
{% if sec.all_passed %}<p class="muted">{{ sec.all_passed }} other check{{ "s" if sec.all_passed != 1 }} passed by every student (not listed).</p>{% endif %}

<h3>Most common diagnosed mistakes</h3>
{% if sec.mistakes_table %}{{ sec.mistakes_table }}{% else %}<p class="muted">No known mistake was diagnosed.</p>{% endif %}

{% if sec.questions_table %}
<h3>Written answers</h3>
{{ sec.questions_table }}
{% endif %}

<h3>All students</h3>
{{ sec.students_table }}
{% endfor %}
{% if not n %}
<p class="muted">No results.json found under {{ folder }}. Run <code>grade run</code> first.</p>
{% endif %}
</body>
</html>
"""


def _histogram(values: list[float], max_score: float | None, xlabel: str) -> str:
    """PNG histogram as a data: URL."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 2.6), facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    hi = max_score if max_score else (max(values) if values else 1.0)
    bins = min(20, max(5, int(hi) if hi and hi == int(hi) and hi <= 40 else 20))
    ax.hist(values, bins=bins, range=(0, hi or 1.0), color="#1d4e89", edgecolor="white", linewidth=0.8)
    if values:
        mean = statistics.fmean(values)
        ax.axvline(mean, color="#c77700", linestyle="--", linewidth=1.2, label=f"mean {mean:.1f}")
        ax.legend(frameon=False, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.set_ylabel("students", fontsize=8.5)
    ax.tick_params(labelsize=8)
    ax.yaxis.get_major_locator().set_params(integer=True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def summary_tables(results: dict[str, GradeResult]):
    """(students, checks, mistakes, questions) DataFrames."""
    import pandas as pd

    students = pd.DataFrame([{
        "Student": clean_text(s, 120), "Autograded": fmt_points(r.autograded_score) + " / " + fmt_points(r.autograded_max),
        "Written": fmt_points(sum(q.score or 0 for q in r.questions)) + " / " + fmt_points(sum(q.max_score for q in r.questions)),
        "Total": fmt_points(r.score), "Max": fmt_points(r.max_score),
        "%": f"{100 * r.score / r.max_score:.0f}" if r.max_score else "–",
        "Checks passed": f"{sum(t.status == 'passed' for t in r.tests)} / {len(r.tests)}",
        "Notes": "; ".join(filter(None, [
            f"{len(r.errors)} submission error{'s' if len(r.errors) != 1 else ''}" if r.errors else "",
            ("to grade: " + ", ".join(q.id for q in r.questions if q.score is None))
            if any(q.score is None for q in r.questions) else "",
        ])),
    } for s, r in sorted(results.items())], columns=["Student", "Autograded", "Written", "Total", "Max", "%",
                                                     "Checks passed", "Notes"])

    per_check: dict[tuple, dict] = {}
    for r in results.values():
        for t in r.tests:
            key = (t.check or t.name, t.number)
            c = per_check.setdefault(key, {"number": t.number, "name": t.name, "component": t.component or
                                           (t.tags[0] if t.tags else ""), "n": 0, "passed": 0, "score": 0.0,
                                           "max": t.max_score, "hidden": t.visibility in ("hidden", "after_published")})
            c["n"] += 1
            c["passed"] += t.status == "passed"
            c["score"] += t.score
    # only the checks some student did not pass: 72 checks a student made 3 pages of "100%" per assignment
    missed = [c for c in per_check.values() if c["passed"] < c["n"]]
    checks = pd.DataFrame([{
        "#": clean_text(c["number"], 20), "Check": clean_text(c["name"], 200) + (" (hidden)" if c["hidden"] else ""),
        "Component": clean_text(c["component"], 80), "Students": c["n"],
        "Pass rate": f"{100 * c['passed'] / c['n']:.0f}%", "Mean points": f"{c['score'] / c['n']:.2f} / {fmt_points(c['max'])}",
    } for c in sorted(missed, key=lambda c: _number_key(c["number"]))],
        columns=["#", "Check", "Component", "Students", "Pass rate", "Mean points"])
    checks.attrs["all_passed"] = len(per_check) - len(missed)  # said under the table

    counts: Counter = Counter()
    who: dict[tuple, set] = defaultdict(set)
    comps: dict[tuple, set] = defaultdict(set)
    for s, r in results.items():
        for t in r.tests:
            for m in t.mistakes:
                m = m if isinstance(m, dict) else {"id": "", "message": str(m)}
                key = (clean_text(m.get("id", ""), 80), clean_text(m.get("message", ""), 300))
                counts[key] += 1
                who[key].add(s)
                comps[key].add(clean_text(t.component, 80))
    n = max(1, len(results))
    mistakes = pd.DataFrame([{
        "Mistake": mid, "Message": msg, "Components": ", ".join(sorted(c for c in comps[(mid, msg)] if c)),
        "Students": len(who[(mid, msg)]), "Share": f"{100 * len(who[(mid, msg)]) / n:.0f}%", "Checks hit": k,
    } for (mid, msg), k in sorted(counts.items(), key=lambda kv: (-len(who[kv[0]]), -kv[1], kv[0]))[:25]],
        columns=["Mistake", "Message", "Components", "Students", "Share", "Checks hit"])

    per_q: dict[str, dict] = {}
    for r in results.values():
        for q in r.questions:
            d = per_q.setdefault(q.id, {"title": q.title, "max": q.max_score, "answered": 0, "graded": 0, "scores": []})
            d["answered"] += bool(q.answer and str(q.answer).strip())
            if q.score is not None:
                d["graded"] += 1
                d["scores"].append(q.score)
    questions = pd.DataFrame([{
        "Question": clean_text(qid, 40), "Title": clean_text(d["title"], 160), "Answered": d["answered"],
        "Graded": d["graded"], "Mean": (f"{statistics.fmean(d['scores']):.2f} / {fmt_points(d['max'])}" if d["scores"] else "–"),
    } for qid, d in per_q.items()], columns=["Question", "Title", "Answered", "Graded", "Mean"])
    return students, checks, mistakes, questions


def _number_key(number: str):
    parts = []
    for p in str(number).split("."):
        parts.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return parts


def _table(df, cls: str) -> Markup:
    if df.empty:
        return Markup("")
    return Markup(df.to_html(index=False, escape=True, border=0, classes=["data", cls], na_rep="–"))


def _section(assignment: str, results: dict[str, GradeResult]) -> dict:
    """Statistics, histogram and tables of one assignment's results."""
    students, checks, mistakes, questions = summary_tables(results)
    totals = [r.score for r in results.values()]
    maxes = {r.max_score for r in results.values()}
    same_max = len(maxes) == 1
    if same_max:
        values, top, xlabel = totals, next(iter(maxes)), f"total score (of {fmt_points(next(iter(maxes)))})"
    else:
        values = [100 * r.score / r.max_score if r.max_score else 0.0 for r in results.values()]
        top, xlabel = 100.0, "total score (% of maximum)"
    stats = {
        "mean": f"{statistics.fmean(values):.1f}", "median": f"{statistics.median(values):.1f}",
        "lo": f"{min(values):.1f}", "hi": f"{max(values):.1f}",
        "max": fmt_points(top) if same_max else "100%",
        "pending": sum(q.score is None for r in results.values() for q in r.questions),
    }
    return {"assignment": clean_text(assignment, 80), "n": len(results), "stats": stats,
            "histogram": _histogram(values, top, xlabel),
            "checks_table": _table(checks, "checks-t"), "all_passed": checks.attrs.get("all_passed", 0),
            "mistakes_table": _table(mistakes, "mistakes-t"),
            "questions_table": _table(questions, "questions-t"), "students_table": _table(students, "students-t")}


def summary_html(results_dir: Path) -> str:
    results_dir = Path(results_dir).resolve()
    broken: list[tuple[Path, str]] = []
    loaded = load_results(results_dir, broken)
    results = {s: r for s, (_, r) in loaded.items()}
    by_assignment: dict[str, dict[str, GradeResult]] = defaultdict(dict)
    for student, r in results.items():
        by_assignment[r.assignment][student] = r
    sections = [_section(aid, rs) for aid, rs in sorted(by_assignment.items())]
    graded = [r.graded_at for r in results.values() if r.graded_at]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(SUMMARY_TEMPLATE).render(
        css=stylesheet(), n=len(results), folder=results_dir.name,  # its name only: the grading machine's absolute path is nobody's business
        assignments=", ".join(sorted({clean_text(r.assignment, 80) for r in results.values()})) or "no results",
        generated_at=datetime.now(timezone.utc).strftime("%d %b %Y, %H:%M UTC"),
        last_graded=fmt_date(max(graded)) if graded else "–",
        broken=[(str(p), clean_text(w, 500)) for p, w in broken], sections=sections,
    )


def render_summary(results_dir: Path) -> Path:
    """Write `results_dir/summary.html` and `results_dir/summary.pdf`; return the PDF's path."""
    results_dir = Path(results_dir).resolve()
    html = summary_html(results_dir)
    write_atomic(results_dir / "summary.html", html.encode("utf-8"))
    return html_to_pdf(html, results_dir, results_dir / "summary.pdf")
