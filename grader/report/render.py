"""Per-student report: results.json -> report.html + report.pdf (jinja2 + WeasyPrint; no LaTeX, no browser).

`render_report(result, result_dir)` needs only the GradeResult and the folder that holds its results.json
(figures are read from there); it never runs or reads the student's submission.

Safety: every field is escaped (jinja2 autoescape; Markdown with raw HTML disabled), text is cleaned of
lone surrogates/control characters and truncated, and WeasyPrint loads nothing but local files under
the results folder or templates/ and data: URLs (`LocalOnlyFetcher`), so a report never touches the network.

Students' Markdown answers: `$…$`, `$$…$$`, `\\(…\\)` and `\\[…\\]` outside code are cut out before
Markdown sees them (so `_` and `\\\\` inside math are not taken for emphasis or escapes), drawn with
matplotlib's mathtext into a 300-dpi PNG and put back as `<img src="data:image/png;base64,…">` sitting on the
text baseline. TeX that mathtext cannot parse is shown as its source in monospace.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import re
import secrets
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from grader import glossary
from grader.fileio import write_atomic
from grader.glossary import fmt_points  # noqa: F401 (one rounding for every reader; imported from here since v0.1)
from grader.redact import machine_paths, redact_paths
from grader.report import display
from grader.report.handed_in import handed_in_context
from grader.report.pages import render_without_near_empty_last_page
from grader.resources import data_dir
from grader.results import GradeResult, TestResult

TEMPLATES_DIR = data_dir("templates")  # the checkout's templates/, or the installed package's
HIDDEN_VISIBILITIES = ("after_published", "hidden")
INSTRUCTOR_HTML = "instructor.html"  # the instructor's view, next to the student's report.html/report.pdf

OUTPUT_MAX_LINES, OUTPUT_MAX_CHARS = 200, 20_000  # the student's captured stdout/stderr
CHECK_OUTPUT_MAX_LINES, CHECK_OUTPUT_MAX_CHARS = 80, 6_000  # one check's feedback
ANSWER_MAX_LINES, ANSWER_MAX_CHARS = 600, 30_000  # one written answer
FIELD_MAX_CHARS = 2_000  # names, messages, hints, comments, captions
FIGURE_MAX_BYTES = 25 * 1024 * 1024
FIGURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}

# Rendering budgets (a report must render in seconds whatever the answers hold): beyond them, formulas are shown
# as their TeX source and the answer carries a note saying what was cut.
# The counts decide (the same answers always render the same way); the time limit is a safety net for a loaded
# machine only (a formula takes ~10-40 ms to draw unloaded, so 250 of them take a few seconds).
MAX_MATH_PER_ANSWER = 100  # formulas drawn per answer
MAX_MATH_PER_REPORT = 250  # formulas drawn in the whole report
MATH_SECONDS_PER_REPORT = 20.0  # wall time spent drawing formulas in one report
ANSWERS_MAX_CHARS = 60_000  # all written answers together (each one is also cut at ANSWER_MAX_CHARS)
MAX_MATH_CHARS = 800  # longer expressions are shown as TeX source
MATH_FONT_PT = 10.5


# ---- text hygiene -------------------------------------------------------------------------------
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: object, max_chars: int | None = None) -> str:
    """Any value -> a str safe for HTML/XML/PDF: lone surrogates replaced, control characters dropped."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text)
    if max_chars is not None and len(text) > max_chars + 1000:
        text = text[: max_chars + 1000]  # don't clean megabytes we'll cut anyway
    text = text.encode("utf-8", "replace").decode("utf-8", "replace")  # lone surrogates -> '?'
    text = _CONTROL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


def truncate(text: str, max_chars: int, max_lines: int, original: str | None = None) -> tuple[str, str]:
    """Cut `text` to at most `max_lines` lines and `max_chars` characters; return (text, note or '').

    `original` (the raw text before cleaning/pre-cutting) is what the note measures, when given."""
    lines = text.count("\n") + 1
    cut = text
    if lines > max_lines:
        cut = "\n".join(cut.split("\n", max_lines)[:max_lines])
    if len(cut) > max_chars:
        cut = cut[:max_chars]
    if cut == text:
        return text, ""
    full = str(original) if original is not None else text
    full = full.rstrip("\n")
    return cut, (f"Truncated for the report: showing {cut.count(chr(10)) + 1:,} of {full.count(chr(10)) + 1:,} lines "
                 f"({_size(len(cut.encode('utf-8')))} of {_size(len(full.encode('utf-8', 'replace')))}).")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:,.1f} kB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MB"


def fmt_date(iso: str) -> str:
    if not iso:
        return "unknown"
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return clean_text(iso, 60)
    if dt.tzinfo is None:
        return dt.strftime("%d %b %Y, %H:%M")
    if dt.utcoffset() == timezone.utc.utcoffset(None):
        return dt.strftime("%d %b %Y, %H:%M UTC")
    return dt.strftime("%d %b %Y, %H:%M UTC%z")


# ---- math ---------------------------------------------------------------------------------------
# LaTeX commands students use that mathtext lacks, and their closest mathtext equivalent.
_TEX_SUBSTITUTES = {r"\tfrac": r"\frac", r"\dfrac": r"\frac", r"\displaystyle": "", r"\textstyle": "",
                    r"\boldsymbol": r"\mathbf", r"\bm": r"\mathbf", r"\pmb": r"\mathbf", r"\textbf": r"\mathbf",
                    r"\textit": r"\mathit", r"\emph": r"\mathit", r"\mathbbm": r"\mathbb",
                    r"\lVert": r"\|", r"\rVert": r"\|", r"\lvert": "|", r"\rvert": "|",
                    r"\ge": r"\geq", r"\le": r"\leq", r"\iff": r"\Leftrightarrow", r"\implies": r"\Rightarrow",
                    r"\coloneqq": ":=", r"\mathop": "", r"\underbrace": "", r"\overbrace": "",
                    # size commands: mathtext sizes \left/\right itself and has no fixed sizes
                    r"\big": "", r"\Big": "", r"\bigg": "", r"\Bigg": "", r"\bigl": "", r"\bigr": "",
                    r"\Bigl": "", r"\Bigr": "", r"\biggl": "", r"\biggr": "",
                    r"\middle": "", r"\nonumber": "", r"\notag": ""}
_TEX_COMMAND = re.compile(r"\\[A-Za-z]+")
# Rewrites that are not one command for another: \frac12 (digits without braces), \operatorname*{…}, and
# aligned/array-free multi-line environments drawn on one line (mathtext has no line breaks or alignment).
_TEX_REWRITES = [(re.compile(r"\\frac\s*(\d)\s*(\d)"), r"\\frac{\1}{\2}"),
                 (re.compile(r"\\operatorname\*"), r"\\operatorname"),
                 (re.compile(r"\\(?:begin|end)\{(?:aligned|align\*?|split|gathered|equation\*?)\}"), ""),
                 (re.compile(r"\\\\"), r"\\quad "),
                 (re.compile(r"(?<!\\)&"), "")]


def _mathtext_dialect(tex: str) -> str:
    for pattern, replacement in _TEX_REWRITES:
        tex = pattern.sub(replacement, tex)
    return _TEX_COMMAND.sub(lambda m: _TEX_SUBSTITUTES.get(m.group(0), m.group(0)), tex)


MATH_DPI = 300  # PNG, not SVG: WeasyPrint draws an SVG formula ~40x slower, and 300 dpi prints crisply


@lru_cache(maxsize=4096)
def math_png(tex: str, display: bool = False) -> tuple[bytes, float, float, float] | None:
    """TeX (no dollars) -> (PNG bytes, width pt, height pt, depth pt), or None when mathtext can't draw it."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.mathtext import MathTextParser

    tex = _mathtext_dialect(" ".join(tex.split()))
    if not tex or len(tex) > MAX_MATH_CHARS:
        return None
    size = MATH_FONT_PT * (1.1 if display else 1.0)
    rc = {"mathtext.fontset": "cm", "text.usetex": False}
    try:
        with matplotlib.rc_context(rc):
            prop = FontProperties(size=size)
            width, height, depth, _, _ = MathTextParser("path").parse(f"${tex}$", dpi=72, prop=prop)
            if not (0 < width <= 2000 and 0 < height <= 1000):
                return None
            fig = Figure(figsize=(width / 72, height / 72))
            FigureCanvasAgg(fig)
            fig.text(0, depth / height, f"${tex}$", fontproperties=prop)
            buf = io.BytesIO()
            fig.savefig(buf, dpi=MATH_DPI, format="png", transparent=True, metadata={"Software": None})
    except Exception:  # ValueError on bad TeX; anything else also means "show the source"
        return None
    return buf.getvalue(), float(width), float(height), float(depth)


def math_html(tex: str, display: bool) -> Markup:
    source = f"$${tex}$$" if display else f"${tex}$"
    drawn = math_png(tex, display)
    if drawn is None:
        cls = "tex-src display" if display else "tex-src"
        return Markup('<code class="{}" title="TeX that could not be rendered">{}</code>').format(cls, source)
    png, w, h, d = drawn
    data = base64.b64encode(png).decode("ascii")
    img = Markup('<img class="math" alt="{}" src="data:image/png;base64,{}" '
                 'style="width:{:.2f}pt;height:{:.2f}pt;vertical-align:{:.2f}pt">').format(source, data, w, h, -d)
    return Markup('<span class="math-display">{}</span>').format(img) if display else img


# ---- Markdown -----------------------------------------------------------------------------------
_FENCE_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_INLINE_CODE_RE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
# A formula spans at most MAX_MATH_SPAN characters: with `.+?` every opener without its closer scanned to the end
# of the answer (quadratic: 20 000 unclosed "\[" in a 40 kB answer took 5 s, in the report and in `grade serve`).
MAX_MATH_SPAN = 1000  # (longer ones would be shown as TeX source anyway: MAX_MATH_CHARS)
_MATH_RE = re.compile(
    r"\$\$(?P<d1>.{1,%d}?)\$\$"  # $$ display $$
    r"|\\\[(?P<d2>.{1,%d}?)\\\]"  # \[ display \]
    r"|\\\((?P<i2>.{1,%d}?)\\\)"  # \( inline \)
    # $inline$: not after a backslash, no space just inside the dollars, not followed by a digit ($5 and $6)
    r"|(?<![\\$])\$(?![\s$])(?P<i1>(?:\\.|[^$\\\n])+?)(?<![\s\\])\$(?!\d)" % ((MAX_MATH_SPAN,) * 3),
    re.S,
)


def _make_md() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])

    def image(self, tokens, idx, options, env):  # never fetch an image an answer names
        tok = tokens[idx]
        alt = "".join(c.content for c in (tok.children or [])) or tok.content
        src = clean_text(tok.attrGet("src") or "", 200)
        return str(Markup('<span class="md-image">[image not shown: {} {}]</span>').format(alt, src))

    md.add_render_rule("image", image)
    return md


_MD = _make_md()


def _split_code(text: str) -> list[tuple[bool, str]]:
    """Split Markdown into (is_code, chunk): fenced code blocks and inline code spans are code."""
    blocks: list[tuple[bool, list[str]]] = []
    fence = ""
    for line in text.split("\n"):
        if fence:
            blocks[-1][1].append(line)
            s = line.strip()
            if s.startswith(fence) and s.strip(fence[0]) == "":
                fence = ""
            continue
        m = _FENCE_RE.match(line)
        if m:
            fence = m.group(1)
            blocks.append((True, [line]))
        elif blocks and not blocks[-1][0]:
            blocks[-1][1].append(line)
        else:
            blocks.append((False, [line]))
    out: list[tuple[bool, str]] = []
    for i, (is_code, lines) in enumerate(blocks):
        chunk = "\n".join(lines) + ("\n" if i < len(blocks) - 1 else "")
        if is_code:
            out.append((True, chunk))
            continue
        pos = 0
        for m in _INLINE_CODE_RE.finditer(chunk):
            out.append((False, chunk[pos:m.start()]))
            out.append((True, m.group(0)))
            pos = m.end()
        out.append((False, chunk[pos:]))
    return out


class MathBudget:
    """How many formulas one report may still draw, and for how long; counts what it had to leave as TeX."""

    def __init__(self, per_answer: int = MAX_MATH_PER_ANSWER, per_report: int = MAX_MATH_PER_REPORT,
                 seconds: float = MATH_SECONDS_PER_REPORT):
        self.per_answer, self.left, self.deadline = per_answer, per_report, time.monotonic() + seconds
        self.per_report, self.seconds = per_report, seconds

    def why_not(self, drawn_in_answer: int) -> str:
        """'' when one more formula may be drawn, else the budget that ran out, in words."""
        if drawn_in_answer >= self.per_answer:
            return f"the report draws at most {self.per_answer} formulas per answer"
        if self.left <= 0:
            return f"the report draws at most {self.per_report} formulas in all"
        if time.monotonic() > self.deadline:
            return f"the report spends at most {self.seconds:g} s drawing formulas"
        return ""


_PLACEHOLDER_RE = re.compile(r"gkmath[0-9a-f]{8}n\d+x")


def markdown_to_html(text: str, math=None, budget: MathBudget | None = None, cut: list[str] | None = None) -> Markup:
    """Markdown with TeX math -> HTML that is safe to embed (raw HTML in the source comes out escaped).
    `math(tex, display) -> Markup` draws each formula (default `math_html`: a PNG; `grade serve` leaves TeX for KaTeX).

    `budget` (one per report; a fresh one when None) bounds the formulas drawn; those beyond it are shown as
    TeX source and, when `cut` is given, a sentence saying so is appended to it."""
    math = math or math_html
    text = clean_text(text)
    budget = budget or MathBudget()
    nonce = secrets.token_hex(4)
    pieces: dict[str, Markup] = {}
    drawn, as_source, why = 0, 0, ""

    def replace(m: re.Match) -> str:
        nonlocal drawn, as_source, why
        display = m.group("d1") is not None or m.group("d2") is not None
        tex = next(g for g in (m.group("d1"), m.group("d2"), m.group("i1"), m.group("i2")) if g is not None)
        key = f"gkmath{nonce}n{len(pieces)}x"
        reason = budget.why_not(drawn) if tex.strip() else "empty"
        if reason:
            pieces[key] = Markup('<code class="tex-src">{}</code>').format(m.group(0))
            if tex.strip():
                as_source += 1
                why = why or reason
        else:
            pieces[key] = math(tex.strip(), display)
            drawn += 1
            budget.left -= 1
        return key

    parts = [chunk if is_code else _MATH_RE.sub(replace, chunk) for is_code, chunk in _split_code(text)]
    html = _MD.render("".join(parts))
    if pieces:  # one compiled pattern for every call (a pattern per nonce was compiled per answer)
        html = _PLACEHOLDER_RE.sub(lambda m: pieces.get(m.group(0), m.group(0)), html)
    if as_source and cut is not None:
        cut.append(f"{as_source:,} of {drawn + as_source:,} formulas are shown as TeX source, not drawn: {why}.")
    return Markup(html)


# ---- the page's data ----------------------------------------------------------------------------
def _status(t: TestResult) -> tuple[str, str]:
    if t.status == "passed":
        return "passed", "✓"
    return ("partial", "◐") if t.score > 0 else ("failed", "✗")


def _mistake(m: object) -> dict:
    if not isinstance(m, dict):
        return {"id": "", "message": clean_text(m, FIELD_MAX_CHARS), "hint": ""}
    return {k: clean_text(m.get(k, ""), FIELD_MAX_CHARS) for k in ("id", "message", "hint")}


# Lines of a check's output that say the kind of fault, not the test: a hidden check that costs points shows
# them (the rubric allows the component and the kind of fault), and they are never hidden from its student.
_REASON_PREFIXES = ("Likely cause", "Diagnosis: training", "Diagnosis: the validation", "Diagnosis: posterior",
                    "Not judged", "Not run")


def _feedback_lines(t: TestResult, shown_as_boxes: bool) -> list[str]:
    """The check's output without what the report shows in its own boxes: the diagnosis lines the engine
    appends for each diagnosed mistake, and the rubric's hint (one diagnosis box per check). A check that
    charges nothing for a mistake charged in another check says so first (its cases below still fail)."""
    out, first = [], []
    for line in clean_text(t.output, CHECK_OUTPUT_MAX_CHARS + 1).rstrip("\n").split("\n"):
        s = line.strip()
        if s.startswith("Diagnosis: ") and any(
                s.startswith(f"Diagnosis: {clean_text(m.get('message', '') if isinstance(m, dict) else m)}")
                for m in t.mistakes) and (shown_as_boxes or _charged_elsewhere(t, m_all=True)):
            continue
        if t.hint and s == f"Hint: {clean_text(t.hint)}":
            continue
        (first if s.startswith("Not charged again here") else out).append(line)
    return first + out


def _charged_elsewhere(t: TestResult, mistake: object = None, m_all: bool = False) -> bool:
    """Whether `mistake` (m_all: every diagnosed mistake of `t`) is charged in another check, not in `t`
    (grader/charging.py: that check's feedback names it; the box is shown there, once)."""
    elsewhere = {c.get("cause") for c in t.charged_once if isinstance(c, dict) and c.get("charged_in") != t.check}
    ids = [m.get("id") for m in t.mistakes if isinstance(m, dict)] if m_all else \
        [mistake.get("id") if isinstance(mistake, dict) else None]
    return bool(ids) and all(i and f"mistake:{i}" in elsewhere for i in ids)


def _hidden_reason(t: TestResult, title: str) -> list[str]:
    """What a student may read about a hidden check that cost points: the component and the kind of fault."""
    if t.error == "blocked":  # why it could not run is about the student's other code, not this test
        return [line.strip() for line in clean_text(t.output, CHECK_OUTPUT_MAX_CHARS).split("\n") if line.strip()]
    if t.status == "passed":
        return []
    where = "your trained model" if "model" in t.tags and title == glossary.COMPONENT_TITLES["model"] else title
    reasons = [f"This hidden check found a fault in {where}."]
    # the kind of fault the failing cases show (the more precise), else how the run of the code ended
    kinds = [] if t.mistakes else glossary.fault_kinds(t.output)[:2]
    kind = glossary.failure_kind(t.error)
    if kinds:
        reasons += [f"{k[0].upper()}{k[1:]}." for k in kinds]
    elif kind:
        reasons.append(f"What happened: {kind}.")
    for m in t.mistakes:
        msg = clean_text(m.get("message", "") if isinstance(m, dict) else m, FIELD_MAX_CHARS)
        if msg:
            reasons.append(f"Diagnosed mistake: {msg}.")
    lines = [line.strip() for line in clean_text(t.output, CHECK_OUTPUT_MAX_CHARS).split("\n")]
    if "model" in t.tags:  # a trained model's failures describe the student's model, not the hidden test
        reasons += [line.removeprefix("- ") for line in lines if line.startswith("- ")][:5]
    reasons += [line for line in lines if line.startswith(_REASON_PREFIXES)]
    return [_E_NOTATION.sub(lambda m: display.fmt_value(float(m.group(0))), r) for r in reasons]


_BACKQUOTED = re.compile(r"`([^`\n]+)`")


def _with_code(text: str) -> Markup:
    """Escaped text whose `backquoted` names (the student's own code) are set as code, not shown with backquotes."""
    return Markup(_BACKQUOTED.sub(lambda m: str(Markup("<code>{}</code>").format(m.group(1))), str(Markup.escape(text))))


def _said_once(checks: list[dict]) -> None:
    """A component's hidden checks share their diagnosis and likely causes (a trained model's four measures fail
    for one reason): each such line in full in the first check that says it, then 'as in check N'."""
    first: dict[str, str] = {}
    kinds: dict[tuple, str] = {}  # a hidden check's fault kinds -> the first check that said them
    for c in checks:
        said = tuple(str(r) for r in c["hidden_reason"][1:] if not str(r).startswith(("Likely cause", "Diagnosis")))
        if c["hidden_reason"] and said and said in kinds and str(c["hidden_reason"][0]).startswith("This hidden check"):
            # carol's missing log_categorical: six checks, each 'a function … is missing from your code'
            c["hidden_reason"] = [c["hidden_reason"][0], f"The same kind of fault as check {kinds[said]}."] + [
                r for r in c["hidden_reason"] if str(r).startswith(("Likely cause", "Diagnosis"))]
        elif said:
            kinds.setdefault(said, c["number"])
        kept, same = [], []
        for r in c["hidden_reason"]:
            head = next((p for p in ("Likely cause", "Diagnosis") if str(r).startswith(p)), "")
            if head and r in first:
                if head not in same:
                    same.append(head)
                continue
            if head:
                first[r] = c["number"]
            kept.append(r)
        if same:
            numbers = sorted({first[r] for r in c["hidden_reason"] if r in first and first[r] != c["number"]})
            words = " and ".join([same[0], same[1].lower()] if len(same) > 1 else same)
            kept.append(f"{words}: the same as in check {', '.join(numbers)}.")
        c["hidden_reason"] = [_with_code(r) for r in kept]


_E_NOTATION = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?e[+-]?\d+\b")  # 6.376e+22 -> 6.38 × 10²² in the report's words


def _check(t: TestResult, instructor: bool = False, title: str = "", tag: str = "") -> dict:
    status, symbol = _status(t)
    if t.error == "blocked":
        status, symbol = "not-judged", "–"
    hidden = t.visibility in HIDDEN_VISIBILITIES and not instructor
    # a mistake charged in another check has its box there; here, the first line says where (grader/charging.py)
    mistakes = [] if hidden else [_mistake(m) for m in t.mistakes if not _charged_elsewhere(t, m)]
    lines = _feedback_lines(t, bool(mistakes))
    output, note = truncate("\n".join(lines), CHECK_OUTPUT_MAX_CHARS, CHECK_OUTPUT_MAX_LINES, original=t.output)
    hint = clean_text(t.hint, FIELD_MAX_CHARS)
    # the hint only when it adds something: a diagnosed mistake's fix says what to do more precisely
    show_hint = not hidden and bool(hint) and t.status != "passed" and not any(m["hint"] for m in mistakes)
    return {
        "number": clean_text(t.number, 20),
        "name": clean_text(glossary.check_title(t.name, title, tag) if title else t.name, FIELD_MAX_CHARS),
        "score": fmt_points(t.score), "max": fmt_points(t.max_score), "status": status, "symbol": symbol,
        "hidden": hidden, "output": "" if hidden else output.strip("\n"), "output_note": "" if hidden else note,
        "hidden_reason": _hidden_reason(t, title) if hidden else [],
        "mistakes": mistakes, "hint": hint if show_hint else "",
        "error": "" if hidden else glossary.failure_kind(t.error),
        "hidden_shown": instructor and t.visibility in HIDDEN_VISIBILITIES,  # instructor's view: marked, not masked
        # long blocks may break across pages; short ones are kept whole
        "long": not hidden and (len(output) > 1200 or output.count("\n") > 15 or len(t.mistakes) > 2),
    }


def _component_targets(assignment: str) -> dict[str, str]:
    """The rubric's [components] (tag -> name in the student's code) of `assignment`, {} when unknown."""
    try:
        from grader.rubric import available_rubrics

        rubric = available_rubrics().get(assignment)
    except Exception:  # a broken rubric folder must not stop a report: tags are shown as they are
        return {}
    return dict(rubric.component_targets) if rubric is not None else {}


def _components(result: GradeResult, instructor: bool = False) -> list[dict]:
    groups: dict[str, list[TestResult]] = {}
    for t in result.tests:
        name = t.component or (t.tags[0] if t.tags else "") or "other"
        groups.setdefault(clean_text(name, 200), []).append(t)
    targets = _component_targets(result.assignment)
    out = []
    for tag, tests in groups.items():
        name = clean_text(glossary.component_title(tag, targets.get(tag, "")), 200)
        score, top = sum(t.score for t in tests), sum(t.max_score for t in tests)
        frac = score / top if top > 0 else 1.0
        checks = [_check(t, instructor, name, tag) for t in tests]
        _said_once(checks)
        out.append({
            "name": name, "score": fmt_points(score), "max": fmt_points(top), "n": len(tests),
            "passed": sum(t.status == "passed" for t in tests), "pct": round(100 * max(0.0, min(1.0, frac))),
            "level": _level(frac), "checks": checks,
        })
    return out


def _level(frac: float) -> str:
    return "good" if frac >= 0.85 else "ok" if frac >= 0.6 else "low"


def _figures(result: GradeResult, result_dir: Path) -> list[dict]:
    out = []
    for i, fig in enumerate(result.figures, 1):
        fig = fig if isinstance(fig, dict) else {"path": str(fig)}
        rel = clean_text(fig.get("path", ""), 500)
        item = {"n": i, "caption": clean_text(fig.get("caption", ""), FIELD_MAX_CHARS),
                "tag": clean_text(fig.get("tag", ""), 200), "path": rel, "src": "", "note": ""}
        path = (result_dir / rel).resolve() if rel else None
        if path is None or not rel:
            item["note"] = "Figure entry without a path."
        elif not path.is_relative_to(result_dir):
            item["note"] = f"Figure {rel} lies outside the results folder; not shown."
        elif not path.is_file():
            item["note"] = f"Figure file {rel} is missing; it was not produced or has been moved."
        elif path.suffix.lower() not in FIGURE_SUFFIXES:
            item["note"] = f"Figure {rel} has an unsupported format ({path.suffix or 'no extension'})."
        elif path.stat().st_size > FIGURE_MAX_BYTES:
            item["note"] = f"Figure {rel} is too large to embed ({_size(path.stat().st_size)})."
        else:
            item["src"] = quote(path.relative_to(result_dir).as_posix())
        out.append(item)
    return out


def _questions(result: GradeResult) -> list[dict]:
    out = []
    budget, chars_left = MathBudget(), ANSWERS_MAX_CHARS
    for q in result.questions:
        item = {"id": clean_text(q.id, 40), "title": clean_text(q.title, FIELD_MAX_CHARS),
                "max": fmt_points(q.max_score), "score": None if q.score is None else fmt_points(q.score),
                "comment": clean_text(q.comment, FIELD_MAX_CHARS * 2), "answer_html": None, "note": "",
                "level": "pending" if q.score is None else _level(q.score / q.max_score if q.max_score else 1.0)}
        if q.answer is not None and str(q.answer).strip():
            limit = max(1000, min(ANSWER_MAX_CHARS, chars_left))
            answer, item["note"] = truncate(clean_text(q.answer, limit + 1), limit, ANSWER_MAX_LINES)
            notes = []
            if item["note"]:  # report the true size of what was submitted
                full = str(q.answer)
                notes.append(f"This answer is long ({_size(len(full.encode('utf-8', 'replace')))}, "
                             f"{full.count(chr(10)) + 1:,} lines); the report shows its first "
                             f"{_size(len(answer.encode('utf-8')))}"
                             + (" (all answers together are limited too)." if limit < ANSWER_MAX_CHARS else "."))
            chars_left -= len(answer)
            item["answer_html"] = markdown_to_html(answer, budget=budget, cut=notes)
            item["note"] = " ".join(notes)
        out.append(item)
    return out


def _metrics(result: GradeResult) -> dict:
    return display.metric_tables(result.metrics, result.metric_info)


def _sandbox(result: GradeResult) -> dict:
    active, inactive = display.sandbox_sentences(result.sandbox)
    return {"active": active, "inactive": inactive}


def _no_model_values(result: GradeResult) -> str:
    """Why the trained-model measures hold no values of the student's model ('' when they do): the first
    model-level check whose run of the student's code failed says it."""
    for t in result.tests:
        if "model" in t.tags and t.error:
            lines = [line.strip().removeprefix("- ") for line in clean_text(t.output, FIELD_MAX_CHARS).split("\n")]
            said = [line for line in lines if line.startswith(("Not judged", "your code", "Not run"))] or lines[:1]
            return f"Your model has no values here (check {clean_text(t.number, 20)}): {said[0]}" if said else ""
    return ""


def _student_error(error: str) -> str:
    """A problem as its student reads it: a grader error in one sentence, without the grader's traceback
    (the instructor's view and results.json keep it)."""
    if error.startswith("internal error in "):
        return ("The grader itself failed in one of its checks (not your fault); that check is marked in the "
                "list below and the course staff has the details.")
    return error


def _short_hash(h: str) -> str:
    h = clean_text(h, 200)
    if ":" in h:
        h = h.split(":", 1)[1]
    return h[:12] if h else "unknown"


def report_context(result: GradeResult, result_dir: Path, instructor: bool = False) -> dict:
    """Everything the template shows, as plain escaped-on-output strings, lists and dicts.

    `instructor`: the instructor's view (hidden checks' details, bookkeeping metrics, the sandbox's raw record)."""
    result_dir = Path(result_dir).resolve()
    total, top = result.score, result.max_score
    frac = total / top if top > 0 else 0.0
    pending = [q for q in result.questions if q.score is None]
    written_max = sum(q.max_score for q in result.questions)
    output, output_note = truncate(clean_text(result.student_output, OUTPUT_MAX_CHARS + 1).rstrip("\n"),
                                   OUTPUT_MAX_CHARS, OUTPUT_MAX_LINES, original=result.student_output)
    return {
        "student": clean_text(result.student, 200) or "(unnamed student)",
        "assignment": clean_text(result.assignment, 200) or "(unknown assignment)",
        "graded_at": fmt_date(result.graded_at),
        "grader_version": clean_text(result.grader_version, 40) or "unknown",
        "submission_hash": _short_hash(result.submission_hash),
        "submission_hash_full": clean_text(result.submission_hash, 200),
        "device": clean_text(result.device, 80) or "unknown",
        "execution_time": f"{result.execution_time:.1f} s",
        "score": fmt_points(total), "max_score": fmt_points(top),
        "pct": f"{100 * frac:.0f}", "level": _level(frac),
        "auto_score": fmt_points(result.autograded_score), "auto_max": fmt_points(result.autograded_max),
        "written_score": fmt_points(sum(q.score or 0.0 for q in result.questions)),
        "written_max": fmt_points(written_max), "has_questions": bool(result.questions),
        "pending": [clean_text(q.id, 40) for q in pending],
        "pending_points": fmt_points(sum(q.max_score for q in pending)),
        "sandbox": _sandbox(result), "instructor": instructor,
        "sandbox_raw": [(clean_text(k, 80), clean_text(v, 2000)) for k, v in (result.sandbox or {}).items()] if instructor else [],
        "errors": [clean_text(e if instructor else _student_error(e), FIELD_MAX_CHARS * 2) for e in result.errors],
        "components": (components := _components(result, instructor)),
        "any_hidden": any(t["hidden"] for c in components for t in c["checks"]),
        "n_checks": len(result.tests), "n_passed": sum(t.status == "passed" for t in result.tests),
        "metrics": _metrics(result), "metrics_note": _no_model_values(result),
        "figures": _figures(result, result_dir),
        "questions": _questions(result),
        "handed_in": handed_in_context(result, result_dir, clean_text),
        "student_output": output, "student_output_note": output_note,
        "generated_at": datetime.now(timezone.utc).strftime("%d %b %Y, %H:%M UTC"),
    }


# ---- templates & rendering ----------------------------------------------------------------------
@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def stylesheet() -> Markup:
    """templates/report.css, to inline in a <style> (the HTML file then stands alone)."""
    css = (TEMPLATES_DIR / "report.css").read_text(encoding="utf-8")
    return Markup(css.replace("</", "<\\/"))


def build_html(result: GradeResult, result_dir: Path, instructor: bool = False) -> str:
    """The report as one self-contained HTML page. The student's view (the default) shows no hidden check's
    details, no bookkeeping and no path of the grading machine; `instructor=True` shows everything."""
    result_dir = Path(result_dir).resolve()
    html = _env().get_template("report.html.j2").render(css=stylesheet(),
                                                         **report_context(result, result_dir, instructor))
    if instructor:
        return html
    return redact_html(html, machine_paths(result_dir, result_dir.parent))


_DATA_URL = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


def redact_html(html: str, roots: list[str]) -> str:
    """`redact_paths` over the page, leaving data: URLs (whose base64 may hold a '/tmp/') untouched."""
    out, pos = [], 0
    for m in _DATA_URL.finditer(html):
        out.append(redact_paths(html[pos:m.start()], roots))
        out.append(m.group(0))
        pos = m.end()
    out.append(redact_paths(html[pos:], roots))
    return "".join(out)


def _local_fetcher_class():
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class LocalOnlyFetcher(URLFetcher):
        """Serves data: URLs and files under the allowed folders; refuses everything else (no network)."""

        def __init__(self, roots, **kwargs):
            super().__init__(allowed_protocols=("file", "data"), **kwargs)
            self.roots = [Path(r).resolve() for r in roots]
            self.refused: list[str] = []

        def fetch(self, url, headers=None):
            scheme = url.split(":", 1)[0].lower()
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme == "file":
                path = Path(url2pathname(urlsplit(url).path)).resolve()
                if path.is_file() and any(path.is_relative_to(r) for r in self.roots):
                    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                    return URLFetcherResponse(path.as_uri(), path.read_bytes(), {"Content-Type": mime})
            self.refused.append(url[:200])
            raise ValueError(f"gradekit reports load only local files and data: URLs; refused {url[:200]!r}")

    return LocalOnlyFetcher


def local_only_fetcher(*roots: Path):
    """A WeasyPrint url_fetcher that serves data: URLs and files under `roots` (and nothing else)."""
    return _local_fetcher_class()(roots)


def html_to_pdf(html: str, base_dir: Path, pdf_path: Path) -> Path:
    import weasyprint

    base_dir = Path(base_dir).resolve()
    fetcher = local_only_fetcher(base_dir, TEMPLATES_DIR)
    html_doc = weasyprint.HTML(string=html, base_url=base_dir.as_uri() + "/", url_fetcher=fetcher)
    write_atomic(pdf_path, render_without_near_empty_last_page(html_doc).write_pdf())
    return pdf_path


def render_report(result: GradeResult, result_dir: Path) -> tuple[Path, Path]:
    """Write the student's `report.html` and `report.pdf` and the instructor's `instructor.html` (hidden checks'
    details, bookkeeping) into `result_dir`; return the student's two paths."""
    result_dir = Path(result_dir).resolve()
    html = build_html(result, result_dir)
    html_path, pdf_path = result_dir / "report.html", result_dir / "report.pdf"
    write_atomic(html_path, html.encode("utf-8"))
    write_atomic(result_dir / INSTRUCTOR_HTML, build_html(result, result_dir, instructor=True).encode("utf-8"))
    html_to_pdf(html, result_dir, pdf_path)
    return html_path, pdf_path
