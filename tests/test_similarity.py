"""`grade similarity`: planted disguised copies rank above every pair of independent work, a partial
copy ranks near the top, shared starter code and idioms are not flagged, bad input is listed.

The class: independently written solutions of the `vae` assignment (tests/similarity_corpus.py),
copies planted with each disguise of grader/similarity/disguise.py and with all of them at once,
and one partial copy (one class copied into otherwise own work).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from grader.cli import main
from grader.similarity import run_similarity
from grader.similarity.compare import Document, compare_documents, make_document, starter_hashes
from grader.similarity.disguise import DISGUISES, disguise, transplant
from grader.similarity.output import FLAG, render_html
from grader.similarity.tokens import tokenize_source
from tests.similarity_corpus import SOLUTIONS, _starter, build, write_class

PARTIAL_OWN, PARTIAL_DONOR, PARTIAL_UNIT = "gus", "eli", "MoGPrior"
AUTHORS = [s for s in SOLUTIONS if s != PARTIAL_OWN]


def _texts(tokens) -> list[str]:
    return [t.text for t in tokens]


def _body(src: str) -> list[str]:
    return _texts(tokenize_source(src))


# ---- the normalisation, one disguise at a time -------------------------------------------------

@pytest.mark.parametrize("a, b", [
    ("def f(x):\n    return torch.sum(x, dim=1)\n", "def g(y):\n    return y.sum(1)\n"),
    ("def f(x, y):\n    return x * y + 1\n", "def f(x, y):\n    return 1 + y * x\n"),
    ("def f(a, b):\n    t = a + b\n    return t * 2\n", "def f(a, b):\n    return (a + b) * 2\n"),
    ("def f(xs):\n    out = []\n    for v in xs:\n        out.append(v * 2)\n    return out\n",
     "def f(xs):\n    return [v * 2 for v in xs]\n"),
    ('def f(x):\n    """Doc."""\n    # a comment\n    return x  # trailing\n', "def f(x):\n    return x\n"),
    ("def f(x):\n    return x\n    print('never')\n", "def f(x):\n    if False:\n        y = 3\n    return x\n"),
    ("def f(x):\n    unused = 5 * 2\n    return x\n", "def f(x):\n    return x\n"),
    ("def f(x):\n    x += 1\n    return x\n", "def f(x):\n    x = x + 1\n    return x\n"),
])
def test_disguises_normalise_to_the_same_tokens(a, b):
    assert _body(a) == _body(b), "the two spellings should give the same canonical tokens"


def test_different_code_gives_different_tokens():
    assert _body("def f(x):\n    return x.sum(1)\n") != _body("def f(x):\n    return x.mean(1)\n")
    assert _body("def f(x, y):\n    return x.exp() - y\n") != _body("def f(x, y):\n    return y - x.exp()\n"), \
        "subtraction is not commutative: its operands must keep their order"


def test_tokens_point_at_original_lines():
    src = "import torch\n\n\ndef f(x):\n    t = x + 1\n    return t * 2\n"
    lines = {t.line for t in tokenize_source(src)}
    assert lines <= {4, 5, 6}, f"tokens should carry the lines they came from, got {sorted(lines)}"


# ---- a class with planted copies --------------------------------------------------------------

def _origin(name: str) -> str:
    return name.split("-of-")[-1] if "-of-" in name else name


@pytest.fixture(scope="module")
def planted_class(tmp_path_factory) -> tuple[Path, list]:
    root = write_class(tmp_path_factory.mktemp("class"), AUTHORS)
    kinds = list(DISGUISES) + ["all"]
    for i, kind in enumerate(kinds):
        source = AUTHORS[i % len(AUTHORS)]
        folder = root / f"copy{i}-{kind}-of-{source}"
        folder.mkdir()
        (folder / "vae.py").write_text(disguise(build(source), list(DISGUISES) if kind == "all" else [kind], seed=i))
    folder = root / "partial"
    folder.mkdir()
    (folder / "vae.py").write_text(transplant(build(PARTIAL_OWN), build(PARTIAL_DONOR), PARTIAL_UNIT))
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    return root, comparison


def test_every_planted_copy_ranks_above_every_independent_pair(planted_class):
    _, comparison = planted_class
    planted = [p for p in comparison.pairs if "partial" not in (p.a, p.b) and _origin(p.a) == _origin(p.b)]
    independent = [p for p in comparison.pairs if "partial" not in (p.a, p.b) and _origin(p.a) != _origin(p.b)]
    assert len(planted) >= len(DISGUISES) + 1
    lowest = min(planted, key=lambda p: p.score)
    highest = max(independent, key=lambda p: p.score)
    assert lowest.score > highest.score, (f"planted copy {lowest.a}/{lowest.b} scored {lowest.score:.2f}, below the "
                                          f"independent pair {highest.a}/{highest.b} at {highest.score:.2f}")
    with_original = [p for p in planted if "-of-" not in p.a or "-of-" not in p.b]
    worst = min(with_original, key=lambda p: p.score)
    assert worst.score >= FLAG, f"a planted copy ({worst.a}/{worst.b}) should be flagged, got {worst.score:.2f}"
    assert highest.score < FLAG, f"independent work ({highest.a}/{highest.b}) was flagged at {highest.score:.2f}"


@pytest.mark.parametrize("kind", list(DISGUISES) + ["all"])
def test_each_disguise_is_found(planted_class, kind):
    _, comparison = planted_class
    copy = next(d.student for d in comparison.documents if f"-{kind}-of-" in d.student)
    pair = next(p for p in comparison.pairs if copy in (p.a, p.b) and _origin(p.a) == _origin(p.b))
    assert pair.score >= FLAG, f"the copy disguised by {kind!r} scored {pair.score:.2f} against its original"
    assert pair.fragments, "a flagged pair should come with evidence"


def test_partial_copy_ranks_near_the_top(planted_class):
    _, comparison = planted_class
    rank = next(i for i, p in enumerate(comparison.pairs) if {p.a, p.b} == {"partial", PARTIAL_DONOR})
    pair = comparison.pairs[rank]
    independent = [p for p in comparison.pairs if "partial" not in (p.a, p.b) and _origin(p.a) != _origin(p.b)]
    assert pair.score >= FLAG and pair.score > max(p.score for p in independent), \
        f"the partial copy scored {pair.score:.2f} (rank {rank + 1})"
    assert pair.partial_unit.endswith(PARTIAL_UNIT), f"the copied unit should be named, got {pair.partial_unit!r}"


def test_starter_only_pair_is_not_flagged(tmp_path):
    """Two students who filled in different parts of the template share only the starter."""
    one = dict(SOLUTIONS["ana"])
    two = dict(SOLUTIONS["ben"])
    keep_one = {"log_normal_diag", "log_standard_normal", "Encoder.reparameterization"}
    SOLUTIONS["only-one"] = {k: v for k, v in one.items() if k in keep_one}
    SOLUTIONS["only-two"] = {k: v for k, v in two.items() if k in {"Decoder.decode", "MoGPrior.log_prob"}}
    SOLUTIONS["untouched"] = {}
    try:
        root = write_class(tmp_path / "class", ["only-one", "only-two", "untouched"])
    finally:
        for k in ("only-one", "only-two", "untouched"):
            del SOLUTIONS[k]
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    for p in comparison.pairs:
        assert p.score < FLAG, f"{p.a}/{p.b} share only the starter but scored {p.score:.2f}"


def test_without_the_starter_removed_the_template_alone_looks_like_a_copy(tmp_path):
    """The control for the test above: the starter is what made the difference."""
    root = write_class(tmp_path / "class", ["ana", "ben"])
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with_starter, _ = run_similarity(root, "vae", use_cache=False)
    without, _ = run_similarity(root, "vae", starter=empty, use_cache=False)
    assert without.pairs[0].whole > with_starter.pairs[0].whole + 0.2


def test_shared_idioms_weigh_little():
    """A helper that half the class writes the same way does not make them copies of each other."""
    helper = ("\n\ndef kl_normal(mu, log_var):\n    return -0.5 * torch.sum(1 + log_var - mu ** 2 - log_var.exp(), dim=-1)\n"
              "\n\ndef count_params(model):\n    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n")
    docs = [make_document(s, "vae.py", build(s) + helper, use_cache=False) for s in AUTHORS]
    assert max(p.score for p in compare_documents(docs, starter_hashes(_starter())).pairs) < FLAG
    # and the template itself, when no starter is given, is such an idiom too
    assert max(p.score for p in compare_documents(docs).pairs) < FLAG


def test_notebook_copy_is_found(tmp_path):
    root = write_class(tmp_path / "class", AUTHORS[:4])
    nb = nbformat.v4.new_notebook()
    source = disguise(build(AUTHORS[0]), ["rename"], seed=3)
    chunks = source.split("\nclass ")
    nb.cells = [nbformat.v4.new_markdown_cell("# My VAE"), nbformat.v4.new_code_cell(chunks[0])] + \
               [nbformat.v4.new_code_cell("class " + c) for c in chunks[1:]]
    (root / "nb-student").mkdir()
    nbformat.write(nb, root / "nb-student" / "homework.ipynb")
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    top = comparison.pairs[0]
    assert {top.a, top.b} == {"nb-student", AUTHORS[0]} and top.score >= FLAG
    assert "homework.ipynb" in next(d.origin for d in comparison.documents if d.student == "nb-student")


# ---- bad input, outputs, cache ----------------------------------------------------------------

def test_bad_submissions_are_listed_not_fatal(tmp_path):
    root = write_class(tmp_path / "class", AUTHORS[:3])
    (root / "broken").mkdir()
    (root / "broken" / "vae.py").write_text("def f(:\n")
    (root / "empty").mkdir()
    (root / "empty" / "vae.py").write_text("   \n")
    (root / "nothing").mkdir()
    (root / "loose.zip").write_bytes(b"PK\x03\x04")
    (root / "linked").mkdir()
    (root / "linked" / "vae.py").symlink_to(root / AUTHORS[0] / "vae.py")
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    reasons = {s.student: s.reason for s in comparison.skipped}
    assert set(reasons) == {"broken", "empty", "nothing", "loose.zip", "linked"}
    assert "does not parse" in reasons["broken"] and "line 1" in reasons["broken"]
    assert "empty" in reasons["empty"]
    assert "folder" in reasons["loose.zip"]
    assert {d.student for d in comparison.documents} == set(AUTHORS[:3])


def test_cli_writes_csv_and_html(tmp_path):
    root = write_class(tmp_path / "class", AUTHORS[:4])
    (root / "copycat").mkdir()
    (root / "copycat" / "vae.py").write_text(disguise(build(AUTHORS[1]), ["rename", "reorder"], seed=1))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["similarity", str(root), "--out", str(out), "--assignment", "vae"])
    assert result.exit_code == 0, result.output
    rows = (out / "similarity.csv").read_text().splitlines()
    assert rows[0] == "student_a,student_b,score"
    assert len(rows) - 1 == 5 * 4 // 2, "one row per pair"
    scores = [float(r.split(",")[2]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True)
    assert set(rows[1].split(",")[:2]) == {"copycat", AUTHORS[1]}
    page = (out / "similarity.html").read_text()
    assert "copycat" in page and 'class="ln"' in page and "background: #" in page


def test_cli_bad_input_exits_2(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["similarity", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a folder" in missing.output
    one = write_class(tmp_path / "one", AUTHORS[:1])
    alone = runner.invoke(main, ["similarity", str(one), "--assignment", "vae", "--out", str(tmp_path / "o")])
    assert alone.exit_code == 2 and "at least two" in alone.output
    unknown = runner.invoke(main, ["similarity", str(one), "--assignment", "nope"])
    assert unknown.exit_code == 2 and "unknown assignment" in unknown.output
    bad_starter = runner.invoke(main, ["similarity", str(one), "-a", "vae", "--starter", str(tmp_path / "x.py")])
    assert bad_starter.exit_code == 2 and "--starter" in bad_starter.output


def test_html_escapes_student_code(tmp_path):
    evil = "</pre><script>alert(1)</script>"
    docs = [make_document("a", "vae.py", build("ana") + f"\n# {evil}\n", use_cache=False),
            make_document("b<img>", "vae.py", build("ana"), use_cache=False)]
    page = render_html(compare_documents(docs), "vae")
    assert "<script>alert(1)" not in page and "b<img>" not in page


def test_fingerprints_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    first = make_document("a", "vae.py", build("ana"))
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 1
    files[0].write_text("{not json")  # a damaged entry is recomputed, never trusted
    again = make_document("a", "vae.py", build("ana"))
    assert again.fingerprints == first.fingerprints
    assert json.loads(files[0].read_text())["fingerprints"]


def test_guess_assignment_and_mixed_folders(tmp_path):
    root = write_class(tmp_path / "class", AUTHORS[:3])
    comparison, rubric = run_similarity(root, use_cache=False)
    assert rubric.id == "vae" and len(comparison.documents) == 3


def test_documents_without_fingerprints_score_zero():
    docs = [Document("a", "vae.py", "", [], []), Document("b", "vae.py", "", [], [])]
    assert compare_documents(docs).pairs[0].score == 0.0


# ---- the web app's page (staff only) ------------------------------------------------------------

def test_serve_similarity_page(tmp_path):
    pytest.importorskip("flask")
    from grader.serve.app import create_app, open_classroom
    from serve_data import make_reports
    from test_serve import TOKEN, _login

    reports = make_reports(tmp_path / "reports", {s: "answer" for s in AUTHORS[:3] + ["copycat"]})
    submissions = write_class(tmp_path / "class", AUTHORS[:3])
    (submissions / "copycat").mkdir()
    (submissions / "copycat" / "vae.py").write_text(disguise(build(AUTHORS[2]), ["rename", "reorder"], seed=2))
    classroom, store = open_classroom(reports, submissions)
    client = create_app(classroom, store, TOKEN, port=1).test_client()
    assert client.get("/similarity").status_code == 302, "the page needs a signed-in TA"
    _login(client)
    page = client.get("/similarity").get_data(as_text=True)
    assert "Code similarity: vae" in page and "copycat" in page and "review" in page
    first = page.index("<tbody>")
    assert "copycat" in page[first:first + 600] and AUTHORS[2] in page[first:first + 600], "the copy ranks first"

    unknown, _ = open_classroom(reports)
    client = create_app(unknown, store, TOKEN, port=1).test_client()
    _login(client)
    assert "--submissions" in client.get("/similarity").get_data(as_text=True)


# ---- shapes found in external validation (docs/similarity.md, "External validation") --------------

def test_transplant_adds_a_unit_the_copier_lacks():
    # public classes rarely share unit names: a copied class the copier's file did not have must be
    # added, not silently dropped (the copy would then be the copier's unchanged own work)
    own = "import torch\n\n\ndef helper(x):\n    return x + 1\n"
    donor = "import torch\n\n\nclass Prior:\n    def log_prob(self, z):\n        return -0.5 * (z ** 2).sum(-1)\n"
    out = transplant(own, donor, "Prior")
    assert "def helper" in out and "class Prior" in out, f"both the own code and the copied class expected:\n{out}"
    with pytest.raises(ValueError, match="no top-level function or class 'Missing'"):
        transplant(own, donor, "Missing")


def test_partial_copy_of_a_unit_the_copier_lacks_is_found(tmp_path):
    # the shape of a student who copies an extra class (here the MoG prior) into a file that lacked it
    import ast as _ast

    root = write_class(tmp_path / "class", AUTHORS)
    tree = _ast.parse(build(PARTIAL_OWN))
    tree.body = [n for n in tree.body if getattr(n, "name", None) != PARTIAL_UNIT]
    (root / "partial").mkdir()
    (root / "partial" / "vae.py").write_text(transplant(_ast.unparse(tree), build(PARTIAL_DONOR), PARTIAL_UNIT))
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    pair = next(p for p in comparison.pairs if {p.a, p.b} == {"partial", PARTIAL_DONOR})
    others = [p for p in comparison.pairs if p is not pair]
    assert pair.score >= FLAG and pair.score > max(p.score for p in others), \
        f"the added copied class scored {pair.score:.2f}; best other pair {max(p.score for p in others):.2f}"
    assert pair.partial_unit.endswith(PARTIAL_UNIT), f"the copied unit should be named, got {pair.partial_unit!r}"


def test_copied_unit_is_named_only_when_the_score_is_worth_reading():
    # on public code, pairs at ~0.02 named a "largest copied unit" (the partial score won by a hair): noise
    from grader.similarity.compare import Comparison, Pair

    pairs = [Pair("ann", "bob", score=0.60, whole=0.10, partial=0.60, partial_unit="bob:BigPrior"),
             Pair("cat", "dan", score=0.03, whole=0.02, partial=0.03, partial_unit="dan:TinyHelper")]
    page = render_html(Comparison(documents=[], skipped=[], pairs=pairs, starter=""), "vae")
    assert "BigPrior" in page, "a unit that decides a high score should be named"
    assert "TinyHelper" not in page, "a unit behind a 0.03 score should not be named"


# ---- student content read in the grader's own process (issue 19, outside the sandbox) ----------

# Each must cost its own submission (listed with a reason), never the run: the parser and the normalisers
# run in this process, so a C-stack crash would end it (none of these does on CPython 3.11).
DEEP = {"sum": "x = " + "+".join(["a"] * 100_000), "lists": "x = " + "[" * 10_000 + "]" * 10_000,
        "minus": "x = " + "-" * 20_000 + "a", "lambdas": "x = " + "lambda: " * 1_000 + "0",
        "calls": "x = a" + "()" * 100_000, "ifs": "".join(" " * i + "if a:\n" for i in range(120)) + " " * 120 + "pass",
        "nul": "x = 1\0", "big_power": "x = 10**10**8"}


def test_hostile_code_costs_its_submission_only(tmp_path):
    root = write_class(tmp_path / "class", AUTHORS[:2])
    for name, tail in DEEP.items():
        (root / name).mkdir()
        (root / name / "vae.py").write_text(build(AUTHORS[2]) + "\n" + tail + "\n")
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    reasons = {s.student: s.reason for s in comparison.skipped}
    compared = {d.student for d in comparison.documents}
    assert set(AUTHORS[:2]) <= compared and set(DEEP) == set(reasons) | (compared & set(DEEP))
    assert {"sum", "lists", "minus", "calls", "nul"} <= set(reasons) and "big_power" in compared  # parsed, never folded
    assert all("vae.py" in why for why in reasons.values())


def test_a_byte_order_mark_or_a_coding_cookie_does_not_hide_a_copy(tmp_path):
    """Python imports a module saved with a UTF-8 BOM (Windows editors) or a latin-1 cookie: grading runs it,
    so the comparison must read it too, not skip it as 'does not parse'."""
    root = write_class(tmp_path / "class", AUTHORS[:3])
    source = build(AUTHORS[0])
    (root / "bom").mkdir()
    (root / "bom" / "vae.py").write_bytes(b"\xef\xbb\xbf" + source.encode())
    (root / "latin").mkdir()
    (root / "latin" / "vae.py").write_bytes(("# -*- coding: latin-1 -*-\n# caf\xe9\n" + source).encode("latin-1"))
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    assert not comparison.skipped
    score = {frozenset((p.a, p.b)): p.score for p in comparison.pairs}
    assert score[frozenset(("bom", AUTHORS[0]))] >= FLAG and score[frozenset(("latin", AUTHORS[0]))] >= FLAG


HOSTILE_NAMES = ["=HYPERLINK(\"x.example?\"&A1,\"y\")", "+cmd|' calc'!A0", "[bold]b", "x\x1b]0;pwned\x07\x1b[2Jy",
                 "[link=x.example]z", "a\u202egnp.exe"]


def test_hostile_folder_names_neither_run_in_a_sheet_nor_steer_the_terminal(tmp_path):
    root = write_class(tmp_path / "class", AUTHORS[:1])
    for i, name in enumerate(HOSTILE_NAMES):
        (root / name).mkdir()
        (root / name / "vae.py").write_text(build(AUTHORS[i % 3]))
    (root / "\x1b[31mbroken[bold]b").mkdir()
    (root / "\x1b[31mbroken[bold]b" / "vae.py").write_text("def f(:\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["similarity", str(root), "--out", str(out), "-a", "vae", "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output and "\x07" not in result.output
    assert "[bold]b" in result.output and "[link=x.example]z" in result.output and "\\x1b]0;pwned" in result.output  # shown as text, not obeyed
    import csv

    with open(out / "similarity.csv", newline="") as f:
        names = {cell for row in list(csv.reader(f))[1:] for cell in row[:2]}
    assert names == {AUTHORS[0], *("'" + n if n[0] in "=+" else n for n in HOSTILE_NAMES)}


def test_a_huge_module_costs_seconds_not_minutes(tmp_path):
    """2 MB of "x=1" lines took 71 s and 1.2 GB of `grade similarity` (parse 9 s): a file past MAX_BYTES is
    not read, a tree past MAX_NODES is not normalised; both listed with the reason."""
    import time

    root = write_class(tmp_path / "class", AUTHORS[:2])
    for name, text in (("huge", "x = 1\n" * 350_000), ("flat", "x=1\n" * 72_000)):
        (root / name).mkdir()
        (root / name / "vae.py").write_text(text)
    started = time.perf_counter()
    comparison, _ = run_similarity(root, "vae", use_cache=False)
    assert time.perf_counter() - started < 20
    reasons = {s.student: s.reason for s in comparison.skipped}
    assert "more than 300 kB" in reasons["huge"] and "syntax-tree nodes" in reasons["flat"]
    assert {d.student for d in comparison.documents} == set(AUTHORS[:2])
