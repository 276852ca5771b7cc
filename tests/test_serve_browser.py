"""`grade serve` end to end in a real browser: Playwright for Python driving the system's Chromium.

Chromium comes from the OS (`apt-get install chromium`; `make test` installs it when run as root); Playwright's
own browser download is never used. Without a Chromium these tests are skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flask")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

from grader.results import load_result  # noqa: E402
from grader.manual_grades.store import DB_NAME, GradeStore  # noqa: E402
from serve_data import RunningServer, make_reports  # noqa: E402

expect = sync_api.expect
expect.set_options(timeout=20_000)  # the machine running the tests may be busy
CHROMIUM = os.environ.get("GRADEKIT_CHROMIUM") or next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: apt-get install chromium "
                                "(or set GRADEKIT_CHROMIUM to a Chrome/Chromium binary)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses its sandbox as root
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


@pytest.fixture()
def reports(tmp_path):
    return make_reports(tmp_path)


@pytest.fixture()
def server(reports):
    s = RunningServer(reports)
    yield s
    s.stop()


def sign_in(browser, server, name):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)  # the machine running the tests may be busy
    page = context.new_page()
    page.goto(server.sign_in_url + "&next=/q/vae:Q1")  # the link `grade serve` prints
    page.fill("#name", name)
    page.click("button[type=submit]")
    expect(page.locator("#current-student")).to_have_text("alice")
    return page


def add_item(page, points, text):
    page.keyboard.press("i")
    page.keyboard.type(points)
    page.keyboard.press("Tab")
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    expect(page.locator("#items li.applied", has_text=text)).to_have_count(1)  # made and given to this answer


def score_in_list(page, student):
    return page.locator(f'#answer-list li[data-student="{student}"] .sc')


def test_grade_a_question_with_the_keyboard(browser, server, reports):
    page = sign_in(browser, server, "Ann")
    expect(page.locator("#progress")).to_have_text("0 / 6")
    expect(page.locator('.answer[data-student="alice"] .katex').first).to_be_visible()  # maths drawn by KaTeX
    add_item(page, "1", "Correct formula")  # a new item goes to the answer in view
    expect(page.locator("#current-score")).to_have_text("1 / 1")
    add_item(page, "0", "Wrong or missing")
    page.keyboard.press("j")
    expect(page.locator("#current-student")).to_have_text("bob")
    page.keyboard.press("2")
    expect(score_in_list(page, "bob")).to_have_text("0")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("1")
    expect(score_in_list(page, "carol")).to_have_text("1")
    page.keyboard.press("k")
    expect(page.locator("#current-student")).to_have_text("bob")
    page.keyboard.press("c")
    page.keyboard.type("Say where eps comes from.")
    page.keyboard.press("Escape")  # leaving the box saves it
    expect(page.locator("#progress")).to_have_text("3 / 6")
    page.keyboard.press("n")  # next ungraded
    expect(page.locator("#current-student")).to_have_text("dana")
    page.keyboard.press("s")
    page.keyboard.type("7")
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_contain_text("outside [0, 1]")  # refused, nothing written
    page.fill("#override", "")
    page.keyboard.press("Escape")
    grades = server.server.store.grades(question="vae:Q1")
    assert set(grades) == {("alice", "vae:Q1"), ("bob", "vae:Q1"), ("carol", "vae:Q1")}
    assert grades[("bob", "vae:Q1")].comment == "Say where eps comes from."
    assert grades[("bob", "vae:Q1")].graded_by == "Ann"


def test_apply_an_item_to_a_group(browser, server):
    page = sign_in(browser, server, "Ann")
    page.locator('#answer-list li[data-student="bob"]').click()
    expect(page.locator("#group-box")).to_contain_text("identical to carol, dana")
    add_item(page, "0.5", "Formula without the noise distribution")
    page.keyboard.press("g")  # every member is shown first; Esc changes nothing
    dialog = page.locator("#group-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#group-members > li")).to_have_count(2)
    for s in ("carol", "dana"):
        expect(dialog.locator("#group-members > li", has_text=s).locator(".answer")).to_contain_text("z = mu + sigma")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(score_in_list(page, "carol")).to_have_text("–")
    page.keyboard.press("g")
    page.keyboard.press("Enter")  # confirmed
    for s in ("bob", "carol", "dana"):
        expect(score_in_list(page, s)).to_have_text("0.5")
    expect(score_in_list(page, "eve")).to_have_text("–")
    expect(page.locator("#progress")).to_have_text("3 / 6")
    page.locator('#answer-list li[data-student="eve"]').click()  # alone in its group: `g` says so
    expect(page.locator("#group-box")).to_contain_text("Alone in its group")
    page.keyboard.press("1")
    page.keyboard.press("g")
    expect(page.locator("#notice")).to_contain_text("alone in its group")
    expect(page.locator("#group-dialog")).to_be_hidden()
    expect(page.locator("#progress")).to_have_text("4 / 6")


def test_editing_an_items_points_changes_every_score(browser, server):
    page = sign_in(browser, server, "Ann")
    add_item(page, "1", "Correct")
    for _ in range(3):
        page.keyboard.press("j")
        page.keyboard.press("1")
    expect(page.locator("#progress")).to_have_text("4 / 6")
    item = page.locator("#items li", has_text="Correct")
    item.locator("button.edit").click()
    page.fill('#items input[name=points]', "0.25")
    page.keyboard.press("Enter")
    for s in ("alice", "bob", "carol", "dana"):
        expect(score_in_list(page, s)).to_have_text("0.25")
    page.goto(server.url + "/")  # the overview's totals follow: 1.5 autograded + 0.25
    expect(page.locator('#students tr[data-student="dana"] .total')).to_contain_text("1.75")
    expect(page.locator('#students tr[data-student="eve"] .total')).to_contain_text("1.5")


def test_everything_is_still_there_after_a_restart(browser, reports):
    first = RunningServer(reports)
    page = sign_in(browser, first, "Ann")
    add_item(page, "1", "Correct")
    page.keyboard.press("j")
    page.keyboard.press("c")
    page.keyboard.type("Almost")
    page.keyboard.press("Escape")
    expect(page.locator("#current-by")).to_contain_text("graded by Ann")  # the comment is saved
    expect(page.locator("#progress")).to_have_text("1 / 6")  # a comment alone grades nothing
    page.context.close()
    first.stop()
    second = RunningServer(reports)
    try:
        page = sign_in(browser, second, "Ben")
        expect(score_in_list(page, "alice")).to_have_text("1")
        expect(page.locator("#current-by")).to_contain_text("graded by Ann")
        page.keyboard.press("j")
        expect(page.locator("#comment")).to_have_value("Almost")
        expect(page.locator("#items li", has_text="Correct")).to_have_count(1)
    finally:
        second.stop()


def test_two_tas_grading_at_once(browser, server, reports):
    ann, ben = sign_in(browser, server, "Ann"), sign_in(browser, server, "Ben")
    add_item(ann, "1", "Correct")
    ben.reload()
    expect(ben.locator("#items li", has_text="Correct")).to_have_count(1)
    ben.locator('#answer-list li[data-student="eve"]').click()
    ben_item = ben.locator("#items li", has_text="Correct")
    for _ in range(2):  # interleaved: Ann grades bob, carol; Ben grades eve, frank
        ann.keyboard.press("j")
        ann.keyboard.press("1")
        ben_item.click()
        ben.keyboard.press("j")
    expect(ann.locator("#progress")).to_have_text(re.compile(r"[3-5] / 6"))
    ann.reload()
    expect(ann.locator("#progress")).to_have_text("5 / 6")
    grades = GradeStore(reports / DB_NAME).grades(question="vae:Q1")
    by = {s: g.graded_by for (s, _), g in grades.items()}
    assert by == {"alice": "Ann", "bob": "Ann", "carol": "Ann", "eve": "Ben", "frank": "Ben"}


# ---- the example class (submissions/), graded once for this module -----------------------------------------
# Grading the eleven examples takes minutes: GRADEKIT_EXAMPLE_REPORTS=FOLDER reuses a folder that
# `grade batch submissions --out FOLDER` wrote (copied, never changed). GRADEKIT_SCREENSHOTS=FOLDER keeps the
# screenshots taken on the way (to look at them as a TA would).

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def example_class(tmp_path_factory):
    out = tmp_path_factory.mktemp("example-class")
    given, log = os.environ.get("GRADEKIT_EXAMPLE_REPORTS"), ""
    if given:
        shutil.copytree(given, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("grades.sqlite*"))
    else:
        r = subprocess.run([sys.executable, "-m", "grader.cli", "batch", str(REPO / "submissions"), "--out", str(out),
                            "-j", "2", "--device", "cpu"], capture_output=True, text=True, timeout=3600)
        log = r.stdout[-3000:] + r.stderr[-3000:]
    students = sorted(p.parent.name for p in out.glob("*/results.json"))
    expected = sorted(p.name for p in (REPO / "submissions").iterdir() if p.is_dir())
    assert students == expected, log or f"{given} lacks some students' results.json"
    return out


@pytest.fixture()
def example_server(example_class):
    s = RunningServer(example_class, REPO / "submissions")  # the students' code on their pages, Similarity
    yield s
    s.stop()


@pytest.fixture()
def shots(tmp_path):
    folder = Path(os.environ.get("GRADEKIT_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watch:
    """Everything a TA's browser console would show: errors, failed loads, CSP violations, uncaught exceptions."""

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        # ERR_ABORTED: a load cancelled because the test moved on to the next page (Chrome's console does not
        # show it; an image that did not load is caught by BROKEN_IMAGES)
        page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "")
                and self.problems.append(f"failed: {r.url} ({r.failure})"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def take(self) -> list[str]:
        out, self.problems = self.problems, []
        return out


BROKEN_IMAGES = "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)"


def sign_in_example(browser, server, name="Ann"):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    watch = Watch(page)
    page.goto(server.sign_in_url)
    expect(page.locator("#token-ok")).to_be_visible()  # the link proved the token: only the name is asked
    page.fill("#name", name)
    page.click("button[type=submit]")
    expect(page.locator("#students")).to_be_visible()
    page.wait_for_load_state("load")
    return page, watch


def check_report_frame(page, student):
    """The report in the student page: loaded, every figure drawn, as tall as its content (no inner scrolling)."""
    frame_el = page.locator("#report-frame")
    frame_el.wait_for()
    frame = frame_el.element_handle().content_frame()
    frame.wait_for_load_state("load")
    page.wait_for_function("""() => { const f = document.getElementById('report-frame');
        const d = f.contentDocument; return d && d.readyState === 'complete'
          && Array.from(d.images).every(i => i.complete)
          && Math.abs(f.getBoundingClientRect().height - d.documentElement.scrollHeight) <= 4; }""")
    assert frame.evaluate(BROKEN_IMAGES) == [], f"{student}: figures that do not load"
    height = page.evaluate("document.getElementById('report-frame').getBoundingClientRect().height")
    assert height > 1500, f"{student}: report frame {height}px high"
    return frame


def test_every_page_of_the_example_class_loads_cleanly(browser, example_server, example_class, shots):
    page, watch = sign_in_example(browser, example_server)
    assert watch.take() == []
    page.goto(example_server.url + "/")
    expect(page.locator("#students tbody tr")).to_have_count(len(example_server.server.classroom.students))
    assert page.evaluate(BROKEN_IMAGES) == [] and watch.take() == [], "overview"
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    for student in example_server.server.classroom.students:
        figures = len(load_result(example_class / student).figures)
        for view in ("instructor.html", "report.html"):
            page.goto(f"{example_server.url}/s/{student}?view={view}")
            frame = check_report_frame(page, student)
            shown = frame.evaluate("document.images.length")
            assert shown >= figures, f"{student} {view}: {shown} images for {figures} figures"
            text = frame.evaluate("document.body.innerText")
            if view == "instructor.html":  # the TA sees what hidden checks found
                assert "details are not shown" not in text, student
            assert watch.take() == [], f"{student} {view}"
        page.screenshot(path=str(shots / f"student-{student}.png"), full_page=True)
    for q in example_server.server.classroom.questions:
        page.goto(f"{example_server.url}/q/{q.key}")
        expect(page.locator("#current-student")).not_to_be_empty()
        page.wait_for_function("""() => Array.from(document.querySelectorAll('.answer:not([hidden]) .tex'))
            .every(s => s.querySelector('.katex, .katex-error'))""")  # the answer in view: its maths drawn
        assert page.evaluate(BROKEN_IMAGES) == [] and watch.take() == [], q.key
    page.screenshot(path=str(shots / "question-last.png"), full_page=True)
    for a in example_server.server.classroom.assignments:
        page.goto(f"{example_server.url}/similarity?assignment={a}")
        expect(page.locator(".similarity")).to_be_visible()
        assert page.evaluate(BROKEN_IMAGES) == [] and watch.take() == [], f"similarity {a}"
    page.screenshot(path=str(shots / "similarity-last.png"), full_page=True)
    page.goto(example_server.url + "/favicon.ico")
    assert watch.take() == []


def test_a_ta_grades_the_ppca_question_and_re_renders(browser, example_server, example_class, shots):
    """frank's PPCA answer is right, grace's wrong: they are not one group; grades land in the PDFs in the
    background, with progress, while the TA looks at grace's report and figures."""
    page, watch = sign_in_example(browser, example_server)
    page.goto(example_server.url + "/q/density-models:Q3#frank")
    expect(page.locator("#current-student")).to_have_text("frank")
    expect(page.locator(".answer[data-student=frank] .katex").first).to_be_visible()
    expect(page.locator("#group-box")).to_contain_text("Alone in its group")
    add_item(page, "2", "Correct closed form and exact log-likelihood")
    page.keyboard.press("g")  # frank's answer is alone: nothing happens to grace, and the TA is told why
    expect(page.locator("#notice")).to_contain_text("alone in its group")
    page.keyboard.press("j")
    expect(page.locator("#current-student")).to_have_text("grace")
    expect(score_in_list(page, "grace")).to_have_text("–")
    add_item(page, "0.5", "sigma2 is the mean of the discarded eigenvalues; log det C is missing")
    expect(page.locator("#progress")).to_have_text("2 / 2")
    page.screenshot(path=str(shots / "grading-ppca.png"), full_page=True)
    assert watch.take() == []
    page.goto(example_server.url + "/")
    expect(page.locator("#render-progress")).to_be_hidden()  # nothing re-rendered yet
    page.click("#render-btn")
    expect(page.locator("#render-status")).to_contain_text("in the background")  # the page is not blocked
    page.screenshot(path=str(shots / "rerendering.png"))
    page.goto(example_server.url + "/s/grace")  # leaving the page stops nothing
    check_report_frame(page, "grace")
    page.screenshot(path=str(shots / "grace-ta-view.png"), full_page=True)
    assert watch.take() == []
    state = page.context.request.get(example_server.url + "/api/render").json()
    deadline = time.monotonic() + 600
    while state["running"] and time.monotonic() < deadline:
        time.sleep(1)
        state = page.context.request.get(example_server.url + "/api/render").json()
    assert state["rendered"] == ["frank", "grace"] and state["failed"] == [], state
    page.goto(example_server.url + "/")
    expect(page.locator("#render-status")).to_contain_text("2 report(s) written")
    q3 = next(q for q in load_result(example_class / "grace").questions if q.id == "Q3")
    assert q3.score == 0.5 and "log det C" in q3.comment
    page.goto(example_server.url + "/s/grace")
    frame = check_report_frame(page, "grace")
    assert "log det C is missing" in frame.evaluate("document.body.innerText")
    assert watch.take() == []
