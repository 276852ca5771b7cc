"""`grade serve` without a browser: scoring rules, the grades database, grouping, access rules, bad input."""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("flask")

from click.testing import CliRunner  # noqa: E402

from grader.serve.app import create_app, open_classroom  # noqa: E402
from grader.serve.classroom import ClassroomError  # noqa: E402
from grader.serve.groups import group_answers  # noqa: E402
from grader.manual_grades.scoring import ScoreError, feedback_text, parse_number, question_score  # noqa: E402
from grader.manual_grades.store import DB_NAME, GradeStore, StoreError, stored_entries  # noqa: E402
from serve_data import Q1, make_reports  # noqa: E402

# ---- scoring rules ----------------------------------------------------------------------------------


def test_question_score_rules():
    assert question_score([], None, 2) is None  # nothing applied: ungraded
    assert question_score([1, 0.5], None, 2) == 1.5
    assert question_score([2, 1], None, 2) == 2  # clipped to the maximum
    assert question_score([1, -3], None, 2) == 0  # deductions never go below 0
    assert question_score([0], None, 2) == 0  # a 0-point item grades the answer
    assert question_score([2], 0.5, 2) == 0.5  # the override wins


@pytest.mark.parametrize("raw, expected", [("1", 1.0), (" 0.5 ", 0.5), ("1,5", 1.5), (2, 2.0), ("0", 0.0)])
def test_parse_number_accepts(raw, expected):
    assert parse_number(raw, 0, 2, "score") == expected


@pytest.mark.parametrize("raw, words", [("abc", "not a number"), ("", "not a number"), ("3", r"outside \[0, 2\]"),
                                        ("-0.5", "outside"), ("nan", "finite"), ("inf", "finite"), (True, "not a number")])
def test_parse_number_refuses(raw, words):
    with pytest.raises(ScoreError, match=words):
        parse_number(raw, 0, 2, "score")


def test_feedback_text():
    assert feedback_text([(1, "Correct formula"), (-0.5, "Sign error")], " see notes ") == \
        "Correct formula (+1)\nSign error (-0.5)\nsee notes"


# ---- the database -----------------------------------------------------------------------------------


@pytest.fixture()
def store(tmp_path):
    s = GradeStore(tmp_path / DB_NAME)
    yield s
    s.close()


def test_item_edit_changes_every_student_who_has_it(store):
    item = store.create_item("vae:Q1", "1", "Correct", "ann", 1)
    other = store.create_item("vae:Q1", "-0.5", "Sign error", "ann", 1)
    for s in ("alice", "bob", "carol"):
        store.set_item(s, "vae:Q1", item.id, True, "ann")
    store.set_item("bob", "vae:Q1", other.id, True, "ann")
    affected = store.update_item(item.id, "0.75", "Mostly correct", "ben", 1)
    assert affected == ["alice", "bob", "carol"]
    decided = store.decided({(s, "vae:Q1"): 1.0 for s in ("alice", "bob", "carol", "dana")})
    assert decided[("alice", "vae:Q1")] == (0.75, "Mostly correct (+0.75)")
    assert decided[("bob", "vae:Q1")] == (0.25, "Mostly correct (+0.75)\nSign error (-0.5)")
    assert ("dana", "vae:Q1") not in decided  # never touched: not in the database's answer


def test_bad_values_write_nothing(store):
    item = store.create_item("vae:Q1", "1", "Correct", "ann", 1)
    before = store.history()
    for call in (lambda: store.create_item("vae:Q1", "2", "Too much", "ann", 1),
                 lambda: store.create_item("vae:Q1", "one", "Text", "ann", 1),
                 lambda: store.create_item("vae:Q1", "1", "   ", "ann", 1),
                 lambda: store.update_item(item.id, "-2", "x", "ann", 1),
                 lambda: store.set_override("alice", "vae:Q1", "1.5", "ann", 1),
                 lambda: store.set_override("alice", "vae:Q1", "-1", "ann", 1),
                 lambda: store.set_item("alice", "vae:Q2", item.id, True, "ann")):  # item of another question
        with pytest.raises(ScoreError):
            call()
    assert store.history() == before and store.grades() == {}


def test_failed_transaction_leaves_no_half_decision(store):
    item = store.create_item("vae:Q1", "1", "Correct", "ann", 1)
    store.set_item("alice", "vae:Q1", item.id, True, "ann")
    with pytest.raises(ScoreError):  # bob has no grade: the copy is refused as a whole
        store.copy_grade("bob", ["carol", "dana"], "vae:Q1", "ann")
    with pytest.raises(RuntimeError):
        with store.transaction() as c:  # a crash in the middle of a decision
            c.execute("INSERT INTO applied VALUES ('carol', 'vae:Q1', ?)", (item.id,))
            raise RuntimeError("killed")
    assert set(store.grades()) == {("alice", "vae:Q1")}


def test_copy_grade_gives_the_whole_decision(store):
    a = store.create_item("vae:Q1", "1", "Correct", "ann", 1)
    store.set_item("bob", "vae:Q1", a.id, True, "ann")
    store.set_comment("bob", "vae:Q1", "Nice", "ann")
    store.set_item("carol", "vae:Q1", store.create_item("vae:Q1", "0", "Wrong", "ann", 1).id, True, "ann")
    assert store.copy_grade("bob", ["carol", "dana", "bob"], "vae:Q1", "ben") == ["carol", "dana"]
    grades = store.grades()
    for s in ("carol", "dana"):
        assert grades[(s, "vae:Q1")].items == [a.id] and grades[(s, "vae:Q1")].comment == "Nice"
        assert grades[(s, "vae:Q1")].graded_by == "ben"
    assert store.history(1)[0]["action"] == "copy_grade"


def test_two_writers_lose_nothing(tmp_path):
    """Two TAs (threads with their own connections) applying items at once: every decision lands."""
    path = tmp_path / DB_NAME
    setup = GradeStore(path)
    item = setup.create_item("vae:Q1", "1", "Correct", "ann", 1)
    students = [f"s{i:03d}" for i in range(60)]

    def grade(ta, mine):
        st = GradeStore(path)
        for s in mine:
            st.set_item(s, "vae:Q1", item.id, True, ta)
            st.set_comment(s, "vae:Q1", f"by {ta}", ta)
        st.close()

    threads = [threading.Thread(target=grade, args=(ta, students[i::2])) for i, ta in enumerate(("ann", "ben"))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    grades = setup.grades()
    assert len(grades) == 60 and all(g.items == [item.id] for g in grades.values())
    assert {g.graded_by for g in grades.values()} == {"ann", "ben"}
    assert len(setup.history(1000)) == 1 + 120


def test_newer_database_is_refused_untouched(tmp_path):
    path = tmp_path / DB_NAME
    GradeStore(path).close()
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer gradekit"):
        GradeStore(path)
    assert path.read_bytes() == before


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / DB_NAME
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE other (x)")
    with pytest.raises(StoreError, match="did not write"):
        GradeStore(path)
    (tmp_path / "junk.sqlite").write_text("not a database at all, just text" * 10)
    with pytest.raises(StoreError, match="not a gradekit"):
        GradeStore(tmp_path / "junk.sqlite")


# ---- grouping -----------------------------------------------------------------------------------------


def test_groups_flag_duplicates_and_keep_everyone_once():
    groups = group_answers(Q1)
    members = [s for g in groups for s in g.members]
    assert sorted(members) == sorted(Q1)
    dup = next(g for g in groups if g.duplicate_sets)
    assert dup.duplicate_sets == [["bob", "carol", "dana"]]  # whitespace differences ignored
    assert next(g for g in groups if g.empty).members == ["frank"]
    assert "alice" not in dup.members  # LaTeX answer is not a rewording of the plain-text one
    assert group_answers(Q1) == groups  # deterministic (and cached)


def test_groups_never_mix_answers_the_key_grades_differently():
    """The labelled set: hand-written answers to five questions, their grade-keeping rewrites and their
    one-token mistakes. The TF-IDF clustering this replaced mixed 15 of its 17 groups (6145 wrong pairs)."""
    from answer_group_cases import measure

    stats = measure(group_answers)
    assert stats["mixed"] == 0, f"groups mixing grades: {stats['examples'][:3]}"
    assert stats["answers"] > 300 and stats["variants"] > 150
    assert stats["variants_joined"] == stats["variants"]  # spacing, case, TeX spelling, a typo: still one group


def test_the_example_classs_ppca_answers_are_not_grouped():
    """frank's correct closed form and grace's (sigma2 = the smallest eigenvalue, no log det C)."""
    from pathlib import Path

    def q3(student):
        text = (Path(__file__).parents[1] / "submissions" / student / "answers.md").read_text()
        return text.split("## Q3", 1)[1].split("## Q4", 1)[0].strip()

    answers = {"frank": q3("frank"), "grace": q3("grace"), "frank2": q3("frank").replace("  ", " ") + "\n"}
    groups = {tuple(g.members) for g in group_answers(answers)}
    assert groups == {("frank", "frank2"), ("grace",)}


@pytest.mark.parametrize("a, b, same", [
    ("z = mu + sigma * eps", "z = mu - sigma * eps", False),
    ("lr 1e-3, batch 128", "lr 1e-3, batch 256", False),
    ("the reparametrization trick", "the reparameterization trick", True),  # one typo in a long word
    ("the reparametrisation trick", "the reparameterization trick", False),  # two: not near-identical
    (r"$\tfrac{1}{2}\left(x\right)$", r"$\frac{1}{2} (x)$", True),
    ("it is biased", "it is not biased", False),
    ("We use Adam.", "we use  adam", True),
])
def test_near_identical_pairs(a, b, same):
    groups = group_answers({"a": a, "b": b})
    assert (len(groups) == 1) == same


# ---- the app (Flask test client) ------------------------------------------------------------------------


TOKEN = "test-token-0123456789abcdef"
PAGES = ("/", "/s/alice", "/s/alice/report", "/s/alice/view/report.html", "/s/alice/view/instructor.html",
         "/q/vae:Q1", "/api/q/vae:Q1", "/export/manual.csv", "/api/render")


def _client(reports, host="127.0.0.1"):
    classroom, store = open_classroom(reports)
    app = create_app(classroom, store, TOKEN, host=host, port=1)
    return app.test_client(), store


def _login(client, name="ann", token=TOKEN):
    client.get("/login")
    with client.session_transaction() as s:
        csrf = s["csrf"]
    r = client.post("/login", data={"csrf": csrf, "name": name, "next": "/", **({"token": token} if token else {})})
    with client.session_transaction() as s:
        return r, s.get("csrf")


def _nothing_to_read_or_write(client, store, csrf):
    """Every page and API call answers with the sign-in page (or 401/403) and the database stays untouched."""
    for path in PAGES:
        r = client.get(path)
        assert r.status_code in (302, 401) and b"bob" not in r.data and b"sigma" not in r.data, path
    headers = {"X-CSRF-Token": csrf or ""}
    for path, body in (("/api/q/vae:Q1/items", {"points": "1", "comment": "Correct"}),
                       ("/api/q/vae:Q1/grade/alice", {"op": "override", "score": "0"}),
                       ("/api/q/vae:Q1/copy/alice", {"targets": ["bob"]}), ("/render", {})):
        assert client.post(path, json=body, headers=headers).status_code in (302, 401, 403), path
    assert store.items() == [] and store.grades() == {} and store.history() == []


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_no_student_data_without_the_token(tmp_path, host):
    """On loopback too: another account of a shared machine reaches 127.0.0.1 and knows a TA's name."""
    make_reports(tmp_path)
    client, store = _client(tmp_path, host=host)
    _nothing_to_read_or_write(client, store, None)
    r, csrf = _login(client, name="Prof. Smith", token=None)  # a name alone opens nothing
    assert r.status_code == 400 and b"Wrong or missing token" in r.data
    _nothing_to_read_or_write(client, store, csrf)
    r, csrf = _login(client, name="Prof. Smith", token="wrong")
    assert r.status_code == 400 and b"Wrong or missing token" in r.data
    _nothing_to_read_or_write(client, store, csrf)
    assert client.get(f"/login?token={TOKEN}x").status_code == 400  # a link of another start
    _nothing_to_read_or_write(client, store, csrf)
    r, csrf = _login(client, token=TOKEN)  # with it, everything works
    assert r.status_code == 302 and b"alice" in client.get("/").data
    assert client.post("/api/q/vae:Q1/grade/alice", json={"op": "override", "score": "0.5"},
                       headers={"X-CSRF-Token": csrf}).status_code == 200
    assert store.grades()[("alice", "vae:Q1")].graded_by == "ann"


def test_sign_in_link_proves_the_token_and_leaves_the_address(tmp_path):
    from grader.serve.app import sign_in_url

    make_reports(tmp_path)
    client, _ = _client(tmp_path)
    url = sign_in_url("http://127.0.0.1:1", TOKEN, "/q/vae:Q1")
    r = client.get(url.split(":1", 1)[1])
    assert r.status_code == 302 and TOKEN not in r.headers["Location"]  # not kept in history or Referer
    page = client.get(r.headers["Location"])
    assert b'id="token-ok"' in page.data and b'name="token"' not in page.data  # only the name is asked now
    with client.session_transaction() as s:
        csrf = s["csrf"]
    assert client.get("/q/vae:Q1").status_code == 302  # proving the token without a name opens nothing yet
    r = client.post("/login", data={"csrf": csrf, "name": "  Ann   Lee ", "next": "/q/vae:Q1"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/q/vae:Q1")
    assert client.get("/q/vae:Q1").status_code == 200 and b"Ann Lee" in client.get("/").data


def test_a_token_is_required_to_build_the_app(tmp_path):
    make_reports(tmp_path)
    classroom, store = open_classroom(tmp_path)
    for token in (None, "", "short"):
        with pytest.raises((ValueError, TypeError)):
            create_app(classroom, store, token)


def test_grade_serve_prints_a_sign_in_link_that_works(tmp_path):
    """The command as a TA starts it, on loopback: without the printed link nothing is served."""
    import http.cookiejar
    import os
    import re
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    make_reports(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "grader.cli", "serve", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        import queue

        lines, out = [], queue.Queue()
        threading.Thread(target=lambda: [out.put(line) for line in proc.stdout], daemon=True).start()
        while not any("access token" in line for line in lines):
            try:
                lines.append(out.get(timeout=120))  # a server that never starts fails the test, never hangs it
            except queue.Empty:
                break
        link = re.search(r"http://127\.0\.0\.1:\d+/login\?token=[\w-]+", "".join(lines))
        assert link, "".join(lines)
        base = link.group(0).split("/login")[0]

        def opener():
            return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        stranger = opener()  # another account: knows the port, not the token
        page = stranger.open(base + "/q/vae:Q1", timeout=30).read().decode()
        assert "Access token" in page and "alice" not in page
        ta = opener()
        page = ta.open(link.group(0), timeout=30).read().decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        data = f"csrf={csrf}&name=Ann&next=/".encode()
        page = ta.open(urllib.request.Request(base + "/login", data=data), timeout=30).read().decode()
        assert "alice" in page and "Class overview" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_csrf_and_origin_are_checked(tmp_path):
    make_reports(tmp_path)
    client, store = _client(tmp_path)
    _, csrf = _login(client)
    body = {"points": "1", "comment": "Correct"}
    assert client.post("/api/q/vae:Q1/items", json=body).status_code == 403  # no token
    assert client.post("/api/q/vae:Q1/items", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert client.post("/api/q/vae:Q1/items", json=body, headers={"X-CSRF-Token": csrf,
                                                                  "Origin": "http://evil.example"}).status_code == 403
    assert client.post("/render", data={}).status_code == 403
    assert store.items() == []
    assert client.post("/api/q/vae:Q1/items", json=body, headers={"X-CSRF-Token": csrf}).status_code == 200


def test_local_server_refuses_other_host_headers(tmp_path):
    """DNS rebinding: a page on another name resolving to 127.0.0.1 gets nothing."""
    make_reports(tmp_path)
    client, _ = _client(tmp_path)
    assert client.get("/login", headers={"Host": "evil.example:8000"}).status_code == 400


@pytest.mark.parametrize("path, words", [("/q/vae:Q9", "Unknown question"), ("/s/mallory", "Unknown student"),
                                         ("/q/nonsense", "Unknown question")])
def test_unknown_names_in_urls(tmp_path, path, words):
    make_reports(tmp_path)
    client, _ = _client(tmp_path)
    _login(client)
    r = client.get(path)
    assert r.status_code == 404 and words.encode() in r.data


@pytest.mark.parametrize("score, words", [("3", "outside [0, 1]"), ("-1", "outside"), ("ten", "not a number")])
def test_malformed_score_is_refused_and_nothing_written(tmp_path, score, words):
    make_reports(tmp_path)
    client, store = _client(tmp_path)
    _, csrf = _login(client)
    r = client.post("/api/q/vae:Q1/grade/alice", json={"op": "override", "score": score},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400 and words in r.json["error"]
    r = client.post("/api/q/vae:Q1/grade/mallory", json={"op": "override", "score": "1"},
                    headers={"X-CSRF-Token": csrf})
    assert r.status_code == 404
    assert store.grades() == {} and store.history() == []


def test_reports_folder_without_results(tmp_path):
    (tmp_path / "alice").mkdir()
    with pytest.raises(ClassroomError, match="no \\*/results.json"):
        open_classroom(tmp_path)
    assert not (tmp_path / DB_NAME).exists()
    from grader.cli import main

    r = CliRunner().invoke(main, ["serve", str(tmp_path), "--port", "0"])
    assert r.exit_code == 2 and "grade batch" in r.output


def test_serve_refuses_newer_database(tmp_path):
    make_reports(tmp_path)
    GradeStore(tmp_path / DB_NAME).close()
    with sqlite3.connect(tmp_path / DB_NAME) as c:
        c.execute("PRAGMA user_version = 7")
    from grader.cli import main

    r = CliRunner().invoke(main, ["serve", str(tmp_path), "--port", "0"])
    assert r.exit_code == 2 and "newer gradekit" in r.output


def test_manual_csv_round_trip_and_report_reads_database(tmp_path):
    make_reports(tmp_path)
    (tmp_path / "manual.csv").write_text("student,question,score,comment\nalice,Q1,1,Good\nbob,q2,0.5,\n")
    client, store = _client(tmp_path)  # a new database imports manual.csv
    _, csrf = _login(client)
    item = client.post("/api/q/vae:Q1/items", json={"points": "0.5", "comment": "Half"},
                       headers={"X-CSRF-Token": csrf}).json["created"]
    client.post("/api/q/vae:Q1/grade/carol", json={"op": "item", "item": item, "applied": True},
                headers={"X-CSRF-Token": csrf})
    text = client.get("/export/manual.csv").data.decode()
    assert text.splitlines() == ["student,question,score,comment", "alice,Q1,1,Good", "bob,Q2,0.5,",
                                 "carol,Q1,0.5,Half (+0.5)"]
    from grader.batch import collect_results
    from grader.results import load_result

    totals = {r.student: r.score for r in collect_results(tmp_path)}  # what gradebook.csv / grade export use
    assert totals["carol"] == 1.5 + 0.5 and totals["alice"] == 1.5 + 1
    entries = stored_entries(tmp_path, {s: load_result(tmp_path / s) for s in Q1})
    assert {(e.student, e.question, e.score) for e in entries} == {("alice", "Q1", 1), ("bob", "Q2", 0.5),
                                                                  ("carol", "Q1", 0.5)}
    # a bad upload changes nothing
    before = store.history(1000)
    r = client.post("/import", data={"csrf": csrf, "file": (__import__("io").BytesIO(
        b"student,question,score,comment\nalice,Q1,7,\n"), "manual.csv")}, content_type="multipart/form-data")
    assert r.status_code == 400 and b"outside [0, 1]" in r.data and store.history(1000) == before


def test_rerender_only_students_whose_grades_changed(tmp_path):
    pytest.importorskip("weasyprint")
    from grader.results import load_result
    from grader.serve.app import render_changed

    make_reports(tmp_path, {"alice": Q1["alice"], "bob": Q1["bob"]})
    classroom, store = open_classroom(tmp_path)
    item = store.create_item("vae:Q1", "1", "Correct", "ann", 1)
    store.set_item("alice", "vae:Q1", item.id, True, "ann")
    bob_before = (tmp_path / "bob" / "results.json").read_bytes()
    done, failed = render_changed(classroom, store)
    assert (done, failed) == (["alice"], [])
    q1 = load_result(tmp_path / "alice").questions[0]
    assert (q1.score, q1.comment) == (1.0, "Correct (+1)")
    assert (tmp_path / "alice" / "report.pdf").stat().st_size > 0 and not (tmp_path / "bob" / "report.pdf").exists()
    assert (tmp_path / "bob" / "results.json").read_bytes() == bob_before
    import pandas as pd

    book = pd.read_csv(tmp_path / "gradebook.csv").set_index("student")
    assert book.loc["alice", "score"] == 1.5 + 1 and book.loc["bob", "score"] == 1.5
    assert render_changed(classroom, store) == ([], [])  # nothing changed since


def test_grade_report_reads_the_database(tmp_path):
    pytest.importorskip("weasyprint")
    from grader.cli import main
    from grader.results import load_result

    make_reports(tmp_path, {"alice": Q1["alice"], "bob": Q1["bob"]})
    (tmp_path / "manual.csv").write_text("student,question,score,comment\nalice,Q1,0,stale export\n")
    store = GradeStore(tmp_path / DB_NAME)  # made after manual.csv: the database is the source now
    store.set_override("alice", "vae:Q1", "0.5", "ann", 1)
    store.set_comment("alice", "vae:Q1", "Half right", "ann")
    store.close()
    r = CliRunner().invoke(main, ["report", str(tmp_path), "--student", "alice"])
    assert r.exit_code == 0, r.output
    q1 = load_result(tmp_path / "alice").questions[0]
    assert (q1.score, q1.comment) == (0.5, "Half right") and "grades.sqlite" in r.output


def test_question_page_shows_the_rubrics_key_and_answers_escaped(tmp_path):
    from types import SimpleNamespace

    make_reports(tmp_path, {"alice": "<script>alert(1)</script> $a_1 * b_2$", "bob": "plain"})
    classroom, store = open_classroom(tmp_path)
    q = SimpleNamespace
    classroom.rubrics = {"vae": q(title="VAE", questions=[q(id="Q1", key=r"$z = \mu + \sigma\epsilon$"), q(id="Q2", key="")])}
    classroom._questions = None
    client = create_app(classroom, store, TOKEN, port=1).test_client()
    _login(client)
    page = client.get("/q/vae:Q1").data.decode()
    assert 'id="key"' in page and r'<span class="tex" data-display="0">z = \mu + \sigma\epsilon</span>' in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<span class="tex" data-display="0">a_1 * b_2</span>' in page  # maths kept whole for KaTeX
    assert 'id="key"' not in client.get("/q/vae:Q2").data.decode()


def test_export_with_a_newer_database_says_so(tmp_path):
    make_reports(tmp_path, {"alice": "x"})
    GradeStore(tmp_path / DB_NAME).close()
    with sqlite3.connect(tmp_path / DB_NAME) as c:
        c.execute("PRAGMA user_version = 5")
    from grader.cli import main

    r = CliRunner().invoke(main, ["export", "--format", "csv", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "newer gradekit" in r.output and not (tmp_path / "grades.csv").exists()


# ---- reports in the app: the TA view, figures, background re-rendering -----------------------------------


PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002"
                    "0001e221bc330000000049454e44ae426082")


def _with_report_pages(reports):
    for name, text in (("instructor.html", "<p>TA view: hidden check details</p>"), ("report.html", "<p>Hidden check</p>")):
        (reports / "alice" / name).write_text(f'<html><body>{text}<img src="figures/loss%201.png"></body></html>')
    (reports / "alice" / "figures").mkdir()
    (reports / "alice" / "figures" / "loss 1.png").write_bytes(PNG)
    (reports / "secret.png").write_bytes(PNG)
    (reports / "alice" / "figures" / "link.png").symlink_to(reports / "secret.png")


def test_student_page_shows_the_ta_view_with_its_figures(tmp_path):
    make_reports(tmp_path)
    _with_report_pages(tmp_path)
    client, _ = _client(tmp_path)
    _login(client)
    page = client.get("/s/alice").data.decode()
    frame = re.search(r'<iframe[^>]*id="report-frame"[^>]*>', page).group(0)
    assert 'src="/s/alice/view/instructor.html"' in frame and 'sandbox="allow-same-origin"' in frame  # no scripts
    assert "student.js" in page  # sizes the frame to the report
    assert 'src="/s/alice/view/report.html"' in client.get("/s/alice?view=report.html").data.decode()
    r = client.get("/s/alice/view/instructor.html")
    assert r.status_code == 200 and b"TA view" in r.data
    csp = r.headers["Content-Security-Policy"]
    assert "img-src 'self' data:" in csp and "script-src" not in csp and "default-src 'none'" in csp
    r = client.get("/s/alice/view/figures/loss%201.png")  # the page's relative address resolves here
    assert r.status_code == 200 and r.mimetype == "image/png" and r.data == PNG
    for path in ("/s/alice/view/results.json", "/s/alice/view/../bob/results.json", "/s/alice/view/figures/link.png",
                 "/s/alice/view/%2e%2e/%2e%2e/secret.png", "/s/bob/view/instructor.html", "/s/mallory/view/report.html"):
        assert client.get(path).status_code == 404, path
    assert client.get("/s/alice/report").headers["Location"].endswith("/s/alice/view/instructor.html")
    assert client.get("/favicon.ico").status_code == 200


def test_render_job_reports_progress_and_runs_once():
    from grader.serve.rendering import RenderJob

    gate, seen = threading.Event(), []

    def slow_render(classroom, store, progress):
        for i, s in enumerate(("alice", "bob")):
            progress(i, 2, s)
            seen.append(s)
            gate.wait(10)
        return ["alice", "bob"], ["carol: OSError: disk full"]

    job = RenderJob(None, None, render=slow_render)
    assert job.start("Ann") and not job.start("Ben")  # a second start joins the running job
    for _ in range(100):
        if job.state()["current"]:
            break
        threading.Event().wait(0.05)
    s = job.state()
    assert s["running"] and s["total"] == 2 and s["current"] == "alice" and s["by"] == "Ann"
    gate.set()
    s = job.wait(10)
    assert not s["running"] and s["done"] == 2 and s["rendered"] == ["alice", "bob"] and s["failed"]
    assert seen == ["alice", "bob"] and s["finished_at"]

    job = RenderJob(None, None, render=lambda c, st, p: 1 / 0)  # a crash is reported, the server lives on
    job.start("Ann")
    assert "ZeroDivisionError" in job.wait(10)["failed"][0]


def test_rerender_button_returns_at_once_and_the_job_goes_on(tmp_path):
    pytest.importorskip("weasyprint")
    make_reports(tmp_path, {"alice": Q1["alice"], "bob": Q1["bob"]})
    client, store = _client(tmp_path)
    _, csrf = _login(client)
    store.set_override("alice", "vae:Q1", "1", "ann", 1)
    r = client.post("/render", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json["by"] == "ann"
    assert r.json["running"] or r.json["rendered"] == ["alice"]
    job = client.application.extensions["gradekit_render_job"]
    s = job.wait(300)
    assert s["rendered"] == ["alice"] and s["failed"] == [] and client.get("/api/render").json == s
    assert (tmp_path / "alice" / "report.pdf").is_file() and (tmp_path / "alice" / "instructor.html").is_file()
    page = client.get("/").data.decode()
    assert 'id="render-status"' in page and "1 report(s) written" in page


WORDS = ["the", "KL", "term", "pulls", "q(z|x)", "toward", "prior", "$z = \\mu + \\sigma\\epsilon$", "not", "sum",
         "mean", "of", "eigenvalues", "learning", "rate", "1e-3", "batch", "128", "+", "-", "$\\frac{1}{2}$", "we"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=25), st.integers(0, 10 ** 6))
def test_groups_join_respellings_and_never_a_changed_number_or_sign(words, seed):
    """Random answers: the same answer re-spaced and re-cased shares its group; with a digit or a sign
    changed it never does."""
    import random

    rng = random.Random(seed)
    text = " ".join(words)
    respelt = "  ".join(w.upper() if w.isalpha() and rng.random() < 0.5 else w for w in words) + " ."
    assert len(group_answers({"a": text, "b": respelt})) == 1
    digits = [i for i, c in enumerate(text) if c.isdigit()]
    signs = [i for i, c in enumerate(text) if c in "+-"]
    for positions, swap in ((digits, lambda c: str((int(c) + 1) % 10)), (signs, lambda c: "-" if c == "+" else "+")):
        if positions:
            i = rng.choice(positions)
            changed = text[:i] + swap(text[i]) + text[i + 1:]
            assert len(group_answers({"a": text, "b": changed})) == 2, (text, changed)


def test_manual_csv_export_never_holds_a_formula_and_reads_back(tmp_path):
    """A student folder "-cmd" and a comment "=SUM(…)" are exported with a leading apostrophe (a spreadsheet
    shows them as text, runs nothing), and that file imports again unchanged."""
    make_reports(tmp_path, {"-cmd": "answer", "alice": "answer"})
    (tmp_path / "manual.csv").write_text("student,question,score,comment\n'-cmd,Q1,1,'=SUM(1)\nalice,Q1,0,+1 idea\n")
    client, store = _client(tmp_path)  # a new database imports manual.csv (apostrophes taken off)
    _login(client)
    text = client.get("/export/manual.csv").data.decode()
    assert text.splitlines() == ["student,question,score,comment", "'-cmd,Q1,1,'=SUM(1)", "alice,Q1,0,'+1 idea"]
    from grader.report.manual import read_manual_csv

    (tmp_path / "again.csv").write_text(text)
    assert [(e.student, e.score, e.comment) for e in read_manual_csv(tmp_path / "again.csv")] == [
        ("-cmd", 1.0, "=SUM(1)"), ("alice", 0.0, "+1 idea")]


def test_figures_in_a_results_folder_never_run_script_in_the_tas_session(tmp_path):
    """Student figures are PNG/JPEG/GIF checked by signature (grader.submission.images), but whatever lies in a
    results folder is served as an image: its declared type (nosniff), no script, an opaque origin."""
    make_reports(tmp_path)
    figures = tmp_path / "alice" / "figures"
    figures.mkdir(parents=True)
    (figures / "plot.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("/export/manual.csv")'
                                      '</script></svg>')
    (figures / "plot.png").write_text("<html><script>alert(1)</script></html>")
    (figures / "plot.html").write_text("<script>alert(1)</script>")
    client, _ = _client(tmp_path)
    _login(client)
    for name, mime in (("plot.svg", "image/svg+xml"), ("plot.png", "image/png")):
        r = client.get(f"/s/alice/view/figures/{name}")
        assert r.status_code == 200 and r.mimetype == mime and r.headers["X-Content-Type-Options"] == "nosniff"
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
    assert client.get("/s/alice/view/figures/plot.html").status_code == 404
