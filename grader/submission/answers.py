"""Written answers from wherever the student wrote them: answers.md, a LaTeX or PDF report, notebook markdown.

Every source becomes text, and one parser finds the questions by their headings:

* "Question 3 (4pts)", "Q3", "q3:", "## Q3: …", "Exercise 3", "Problem 3", "Task 3" (case and spacing tolerant,
  with or without Markdown `#`/`**`) — used whenever a source has any of these;
* otherwise Markdown-style headings that start with the number ("## 3 Results", "# 3. …"), and only when a
  source has none of those either, plain "3." / "3)" lines.
Question numbers must increase down the document (a "1." list inside answer 3 is not question 1); a body's
leading "Answer" label is dropped, and with it the question's prompt above it.

`collect_answers` reads every source present and keeps the one answering the most of the rubric's questions
(ties: answers.md, then .tex, then .pdf, then the notebook), and says which one it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_ANSWER_CHARS = 100_000  # one answer
MAX_SOURCE_BYTES = 50 * 1024 * 1024  # a report file read no further than this

_STRONG = re.compile(r"^\s{0,3}(?:#{1,6}\s*)?(?:\*\*|__)?\s*(?:question|exercise|problem|task|q)\s*\.?\s*(\d{1,3})(?!\d|\.\d)"
                     r"(?:\*\*|__)?\s*(?:\([^)]*\))?[\s.:)\-–]*(.*)$", re.IGNORECASE)
_MD_NUMBER = re.compile(r"^\s{0,3}#{1,6}\s*(?:\*\*)?\s*(\d{1,3})(?!\d|\.\d)[.)]?(?:\s+|$)(.*)$")
_PLAIN_NUMBER = re.compile(r"^\s{0,3}(\d{1,3})[.)](?!\d)\s*(.*)$")
_ANSWER_LABEL = re.compile(r"^\s*(?:\*\*|__)?(?:answer|solution)(?:\*\*|__)?(?:\s*[:.–]|\s+-(?=\s)|(?=\s)|$)\s*"
                           r"(?:\*\*|__)?\s*", re.IGNORECASE)


@dataclass
class AnswerSet:
    """The answers of one submission: {"Q3": markdown}, where they were taken from, and notes for the report."""
    answers: dict = field(default_factory=dict)
    source: str = ""  # "answers.md", "report.pdf", "vae.ipynb (markdown cells)"; "" when none was found
    found: dict = field(default_factory=dict)  # every source read -> number of the rubric's questions it answers
    notes: list = field(default_factory=list)


def split_questions(text: str) -> dict[str, str]:
    """Text with question headings -> {"Q<n>": body}. Never raises."""
    lines = text.splitlines()
    for pattern in (_STRONG, _MD_NUMBER, _PLAIN_NUMBER):
        heads = []
        last = 0
        in_code = False
        for i, line in enumerate(lines):
            if line.lstrip().startswith("```"):
                in_code = not in_code
            if in_code:
                continue
            m = pattern.match(line)
            if m and int(m.group(1)) > last:
                heads.append((i, int(m.group(1)), m.group(2).strip()))
                last = int(m.group(1))
        if heads:
            break
    out: dict[str, str] = {}
    for k, (i, n, rest) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        body_lines = lines[i + 1:end]
        for j, line in enumerate(body_lines):  # "Answer: …" starts the answer; the prompt above it is the question's
            if _ANSWER_LABEL.match(line) and (len(line) > 7 or j + 1 < len(body_lines)):
                first = _ANSWER_LABEL.sub("", line, count=1)
                body_lines = ([first] if first.strip() else []) + body_lines[j + 1:]
                break
        else:
            if rest and pattern is not _STRONG and not _STRONG.match(rest):
                body_lines = [rest] + body_lines  # "3. The answer starts on the heading line"
        body = "\n".join(body_lines).strip()
        if len(body) > MAX_ANSWER_CHARS:
            body = body[:MAX_ANSWER_CHARS] + "\n\n[... answer truncated ...]"
        out[f"Q{n}"] = body
    return out


def parse_answers(path: Path) -> dict[str, str]:
    """`## Q<n>` sections of answers.md -> {"Q<n>": markdown}. Lenient about bytes and size; {} when absent."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, "rb") as f:
        text = f.read(4 * MAX_ANSWER_CHARS).decode("utf-8", errors="replace")
    return _markdown_sections(text)


def _markdown_sections(text: str) -> dict[str, str]:
    # answers.md keeps its historical, stricter rule: a Markdown heading names the question.
    answers: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\s{0,3}#{1,6}\s*(?:Question\s*)?Q?(\d+)\b[\s.:)-]*(.*)$", line, re.IGNORECASE)
        if m:
            current = f"Q{int(m.group(1))}"
            answers.setdefault(current, [])
            continue
        if current:
            answers[current].append(line)
    out = {}
    for qid, lines in answers.items():
        body = "\n".join(lines).strip()
        if len(body) > MAX_ANSWER_CHARS:
            body = body[:MAX_ANSWER_CHARS] + "\n\n[... answer truncated ...]"
        out[qid] = body
    return out


# ---- sources --------------------------------------------------------------------------------------
class NoText(Exception):
    """A report from which no text could be extracted (message says why)."""


PDF_READ_TIMEOUT_S = 30  # wall clock for one PDF (its reader also has a 10 s CPU-time limit)


def pdf_text(path: Path) -> str:
    """The text of a PDF report, page after page. Raises NoText for encrypted, damaged, image-only or
    oversized files.

    The PDF is read in a process of its own (`grader/submission/pdf_reader.py`: memory, CPU-time and
    inflated-size limits), so a hostile file costs its student a message, never the grader's memory
    or time. pypdfium2 (Google's PDFium) extracts ~20x faster than pure-Python pypdf (0.05 s vs 1 s for
    3 pages, bench/bench_inputs.py); pypdf is the fallback where pypdfium2 is not installed."""
    import json
    import subprocess
    import sys

    from grader.submission import pdf_reader

    path = Path(path)
    if path.stat().st_size > MAX_SOURCE_BYTES:
        raise NoText(f"{path.name} is larger than {MAX_SOURCE_BYTES >> 20} MB; hand in a smaller PDF")
    try:
        proc = subprocess.run([sys.executable, "-I", pdf_reader.__file__, str(path)], capture_output=True,
                              timeout=PDF_READ_TIMEOUT_S, stdin=subprocess.DEVNULL)
        reply = json.loads(proc.stdout.decode("utf-8", "replace").splitlines()[-1]) if proc.stdout.strip() else None
    except subprocess.TimeoutExpired:
        raise NoText(f"{path.name} was not read: extracting its text took longer than {PDF_READ_TIMEOUT_S} s; "
                     "hand in a simpler PDF (e.g. exported again from your editor) or type the answers into "
                     "answers.md") from None
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not ("pages" in reply or "error" in reply):
        raise NoText(f"{path.name} was not read: reading it needs more than {pdf_reader.MEMORY_MB} MiB of memory "
                     f"or {pdf_reader.CPU_S} s (the reader stopped, exit status {proc.returncode}); hand in a "
                     "simpler PDF or type the answers into answers.md")
    if "error" in reply:
        kind, message = reply.get("error"), str(reply.get("message", ""))[:200]
        if kind == "encrypted":
            raise _encrypted(path)
        if kind == "too_large":
            raise NoText(f"{path.name} was not read: {message} (a report's text needs far less); hand in a "
                         "simpler PDF (e.g. exported again from your editor) or type the answers into answers.md")
        if kind == "missing":
            raise NoText(f"{path.name} was not read: {message}")
        raise NoText(f"{path.name} could not be read as a PDF ({message}): no text could be extracted")
    pages = [p for p in reply["pages"] if isinstance(p, str)]
    text = pdf_lines("\n".join(pages))
    if not text.strip():
        raise NoText(f"no text could be extracted from {path.name} (it holds only images, e.g. a scan or photos "
                     "of handwriting); hand in a PDF with selectable text, or type the answers into answers.md")
    return text


# PDFium marks a hyphen at a line's end with U+FFFE and joins the two lines; a heading on the next
# line ("gradient-" then "Question 2") then sits mid-line and its answer lands under the previous question.
_JOINED_AT_HYPHEN = re.compile("\ufffe(?=([^\\n]?))")


def pdf_lines(text: str) -> str:
    """Extracted PDF text -> lines as laid out: the break PDFium removed after a line-end hyphen is
    put back, except inside a word broken over two lines ("gradi-" + "ent" stays "gradi-ent")."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _JOINED_AT_HYPHEN.sub(lambda m: "-" if m.group(1).islower() else "-\n", text)


# A line of a PDF is layout, not Markdown: a line that a Markdown renderer would turn into a list
# item, a heading, a quote or a rule ("* eps" after a wrapped "z = mu + sigma") is escaped.
_MARKDOWN_LINE_START = re.compile(r"^(\s*\d{1,9}|\s*)([.)](?=\s|$)|[*+\-](?=\s|$)|#{1,6}(?=\s|$)|>|=+\s*$|-{2,}\s*$)")


def literal_lines(body: str) -> str:
    """`body` with every line start that Markdown would read as structure escaped (the text reads the same)."""
    return "\n".join(_MARKDOWN_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), line)
                     for line in body.split("\n"))


def _encrypted(path: Path) -> NoText:
    return NoText(f"{path.name} is encrypted (password-protected): no text could be extracted; hand in a PDF "
                  "without a password")


_LATEX_TEXT_CMDS = {"textbf": "**{}**", "textit": "*{}*", "emph": "*{}*", "texttt": "`{}`", "underline": "{}",
                    "url": "{}", "cite": "[{}]", "citep": "[{}]", "citet": "[{}]", "ref": "{}", "eqref": "({})",
                    "footnote": " ({})", "text": "{}", "mathrm": None}


_MATH_ENVS = ("equation", "equation*", "displaymath", "align", "align*", "gather", "gather*", "multline", "multline*")
_MATH_ENV = re.compile(r"\\begin\{(equation|equation\*|displaymath|align|align\*|gather|gather\*|multline\*?)\}")
_END_ENV = {e: re.compile(re.escape(f"\\end{{{e}}}")) for e in _MATH_ENVS}
_FLOAT_ENV = re.compile(r"\\begin\{(figure|table)\*?\}")
_END_FLOAT = {e: re.compile(r"\\end\{" + e + r"\*?\}") for e in ("figure", "table")}
_OPEN_DISPLAY, _CLOSE_DISPLAY = re.compile(r"\\\["), re.compile(r"\\\]")
_OPEN_INLINE, _CLOSE_INLINE = re.compile(r"\\\("), re.compile(r"\\\)")


def _sub_blocks(text: str, opener: re.Pattern, closer, repl) -> str:
    """`re.sub(opener + "(.*?)" + closer, repl, text, flags=re.S)` in linear time: `closer(m)` is the pattern that
    ends the block `m` opens, `repl(m, body)` its replacement. re.sub scans to the end of the text for every opener
    without a closer (quadratic: 20 000 unclosed "\\begin{equation}" took 70 s, a 50 MB report days); here a closer
    known to be absent after some position is not searched for again."""
    out, pos, i, absent = [], 0, 0, {}
    while (m := opener.search(text, i)) is not None:
        close = closer(m)
        c = None if absent.get(close.pattern, len(text) + 1) <= m.end() else close.search(text, m.end())
        if c is None:
            absent[close.pattern] = min(absent.get(close.pattern, len(text) + 1), m.end())
            i = m.start() + 1
            continue
        out += [text[pos:m.start()], repl(m, text[m.end():c.start()])]
        pos = i = c.end()
    out.append(text[pos:])
    return "".join(out)


def latex_to_markdown(tex: str) -> str:
    """A LaTeX report -> Markdown with its maths kept as `$…$` / `$$…$$` (the report renders those as maths);
    sectioning commands become Markdown headings ("\\section{Question 3}" -> "# Question 3")."""
    tex = tex.replace("\r\n", "\n")
    m = re.search(r"\\begin\{document\}(.*?)(\\end\{document\}|$)", tex, re.S)
    if m:
        tex = m.group(1)
    tex = re.sub(r"(?<!\\)%[^\n]*", "", tex)  # comments
    counters = {"section": 0}

    def section(m: re.Match) -> str:
        level, star, title = m.group(1), m.group(2), m.group(3).strip()
        depth = {"section": 1, "subsection": 2, "subsubsection": 3, "paragraph": 4}.get(level, 1)
        if level == "section" and not star:
            counters["section"] += 1
            if not re.match(r"\s*(?:question|exercise|problem|task|q)?\s*\d", title, re.I):
                title = f"{counters['section']} {title}"  # LaTeX numbers it; the student sees that number
        return "\n" + "#" * depth + " " + title + "\n"
    tex = re.sub(r"\\(section|subsection|subsubsection|paragraph)(\*?)\s*\{((?:[^{}]|\{[^{}]*\})*)\}", section, tex)
    tex = _sub_blocks(tex, _MATH_ENV, lambda m: _END_ENV[m.group(1)], lambda m, body: _display_math(m.group(1), body))
    tex = _sub_blocks(tex, _OPEN_DISPLAY, lambda m: _CLOSE_DISPLAY, lambda m, body: "\n$$" + body.strip() + "$$\n")
    tex = _sub_blocks(tex, _OPEN_INLINE, lambda m: _CLOSE_INLINE, lambda m, body: "$" + body.strip() + "$")
    # Outside maths: text commands, lists, figures.
    parts = re.split(r"(\$\$.*?\$\$|\$[^$\n]+\$)", tex, flags=re.S)
    for i in range(0, len(parts), 2):
        t = parts[i]
        t = _sub_blocks(t, _FLOAT_ENV, lambda m: _END_FLOAT[m.group(1)], lambda m, body: "\n*(figure in the report)*\n")
        t = re.sub(r"\\includegraphics(\[[^\]]*\])?\{[^}]*\}", "*(figure)*", t)
        t = re.sub(r"\\(begin|end)\{(itemize|enumerate|description|center|flushleft|abstract|quote)\}", "", t)
        t = re.sub(r"\\item\s*(\[[^\]]*\])?", lambda m: "\n- " + (m.group(1)[1:-1] + " " if m.group(1) else ""), t)
        for _ in range(3):  # nested \textbf{\emph{..}}
            t = re.sub(r"\\(\w+)\{([^{}]*)\}", lambda m: (_LATEX_TEXT_CMDS.get(m.group(1)) or "{}").format(m.group(2))
                       if m.group(1) in _LATEX_TEXT_CMDS else m.group(0), t)
        t = re.sub(r"\\(label|vspace|hspace|newpage|clearpage|maketitle|noindent|centering|caption)\*?(\{[^}]*\})?", "", t)
        t = t.replace("\\\\", "\n").replace("~", " ").replace("``", '"').replace("''", '"')
        t = re.sub(r"\\([%&_#$])", r"\1", t)
        parts[i] = t
    text = "".join(parts)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _display_math(env: str, body: str) -> str:
    body = re.sub(r"\\label\{[^}]*\}|\\nonumber|\\notag", "", body).strip()
    if env.startswith(("align", "gather", "multline")):
        rows = [r.replace("&", "").strip() for r in re.split(r"\\\\", body) if r.strip()]
        return "\n" + "\n".join(f"$${r}$$" for r in rows) + "\n"
    return f"\n$${body}$$\n"


def notebook_markdown(nb) -> str:
    from grader.submission.notebook import cell_source
    return "\n\n".join(cell_source(c) for c in nb.get("cells", [])
                       if isinstance(c, dict) and c.get("cell_type") == "markdown")


# ---- choosing ---------------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(MAX_SOURCE_BYTES).decode("utf-8", errors="replace")


def collect_answers(folder: Path, question_ids: list[str], answers_file: str = "answers.md",
                    notebook=None, notebook_name: str = "") -> AnswerSet:
    """Read every answer source in `folder` (and the notebook's markdown) and keep the best one. Never raises."""
    folder = Path(folder)
    wanted = set(question_ids)
    out = AnswerSet()
    candidates: list[tuple[str, dict]] = []
    md = folder / answers_file
    if md.is_file():
        candidates.append((answers_file, parse_answers(md)))
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []
    for p in [p for p in files if p.suffix.lower() == ".tex"][:5]:
        try:
            candidates.append((p.name, split_questions(latex_to_markdown(_read_text(p)))))
        except Exception as e:  # a report that breaks the converter is the grader's problem: say so, go on
            out.notes.append(f"{p.name} could not be read ({type(e).__name__}); its answers were not used")
    for p in [p for p in files if p.suffix.lower() == ".pdf"][:5]:
        try:
            candidates.append((p.name, {q: literal_lines(a) for q, a in split_questions(pdf_text(p)).items()}))
        except NoText as e:
            out.notes.append(str(e))
    if notebook is not None:
        candidates.append((f"{notebook_name} (markdown cells)", split_questions(notebook_markdown(notebook))))
    for name, answers in candidates:
        out.found[name] = sum(1 for q, a in answers.items() if q in wanted and a.strip())
    if candidates:
        name, answers = max(candidates, key=lambda c: out.found[c[0]])  # max keeps the first of equals
        if out.found[name] or name == answers_file:
            out.source, out.answers = name, {q: a for q, a in answers.items() if q in wanted}
    if out.source:
        others = [f"{n} ({k} answer{'' if k == 1 else 's'})" for n, k in out.found.items() if n != out.source]
        out.notes.insert(0, f"Answers taken from {out.source} ({out.found[out.source]} of {len(wanted)} questions)"
                         + (f"; also read: {', '.join(others)}" if others else "") + ".")
        missing = [q for q in question_ids if not out.answers.get(q, "").strip()]
        if missing:
            out.notes.append(f"Not answered in {out.source}: {', '.join(missing)} (no heading such as "
                             f"\"Question {missing[0][1:]}\", \"{missing[0]}\" or \"{missing[0][1:]}.\" was found, "
                             "or the section was empty).")
    elif wanted:
        out.notes.append("No written answers were found (looked for " + ", ".join(
            [answers_file, "a .tex or .pdf report", "the notebook's markdown cells"]) + ").")
    return out
