"""`grade serve` end to end in a real browser: Playwright for Python driving the system's Chromium.

Chromium comes from the OS (`apt-get install chromium`; `make test` installs it when run as root); Playwright's
own browser download is never used. Without a Chromium these tests are skipped, saying so.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

pytest.importorskip("flask")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

from grader.serve.store import DB_NAME, GradeStore  # noqa: E402
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
    context.set_default_timeout(30_000)  # the first question page may wait for scikit-learn's import
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
