"""The `grade serve` web app (Flask, jinja2 templates, static files shipped in the package; no build step).

Pages: `/` class overview, `/s/<student>` a student's scores, report and code, `/q/<question>` grade by
question. JSON API under `/api/` (each call one store transaction, answering with the question's new state).

Access: every page but /login, /static and /favicon.ico needs a session that gave the token printed at start
(on every interface, loopback included: on a shared machine any local account can reach 127.0.0.1) and named
its TA (kept with every decision, for attribution only: the token is the secret). The sign-in link printed at
start carries the token (`/login?token=...`, as Jupyter does); the server takes it out of the address at once.
Every POST carries the session's CSRF token (form field `csrf` or header `X-CSRF-Token`) and, when the browser
sends one, an Origin of this server. Cookies are SameSite=Strict and HttpOnly; pages carry a CSP that allows no
foreign content.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from pathlib import Path

from flask import Flask, g, jsonify, redirect, render_template, request, session, url_for
from markupsafe import Markup

from grader.report.manual import ManualGradeError, check_manual_csv
from grader.serve.classroom import Classroom, question_key
from grader.serve.groups import group_answers
from grader.serve.markup import answer_html
from grader.serve.rendering import RenderJob, render_changed  # noqa: F401 (render_changed: part of this API)
from grader.manual_grades.scoring import ScoreError
from grader.manual_grades.store import GradeStore, StoreError, open_store

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TA_NAME_MAX = 60
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'self'; "
       "base-uri 'none'; object-src 'none'")
# the report pages: figures are files of the student's folder, served beside the page (img-src 'self')
REPORT_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; font-src data:; frame-ancestors 'self'"
# (file, label): the instructor's view first (hidden checks' details: what a TA needs), then what the student got
REPORT_VIEWS = (("instructor.html", "TA view"), ("report.html", "student's view"))
FIGURE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
                ".gif": "image/gif", ".webp": "image/webp"}


class BadRequest(Exception):
    """Bad input from the browser: answered with `status` and the message, nothing written."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def new_token() -> str:
    """A fresh access token (144 random bits), one per server start."""
    return secrets.token_urlsafe(18)


def sign_in_url(base: str, token: str, next_path: str = "/") -> str:
    """The link printed at start: opening it proves the token; the TA then only types their name."""
    from urllib.parse import urlencode

    query = {"token": token} | ({"next": next_path} if next_path != "/" else {})
    return f"{base.rstrip('/')}/login?{urlencode(query)}"


def create_app(classroom: Classroom, store: GradeStore, token: str, host: str = "127.0.0.1",
               port: int = 0) -> Flask:
    """The app for one reports folder. `token`: the secret every session must give before anything is served
    (`new_token()`; required, whatever the interface)."""
    if not token or len(token) < 16:
        raise ValueError("grade serve needs an access token of at least 16 characters (new_token())")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=_secret_key(classroom.dir),
        SESSION_COOKIE_NAME=f"gradekit_{port}",  # two servers on one host keep their sessions apart
        SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
        MAX_CONTENT_LENGTH=5 * 1024 * 1024, TEMPLATES_AUTO_RELOAD=False,
    )
    app.jinja_env.globals.update(fmt=_fmt)
    token_hash = _digest(token)
    local = host in LOOPBACK

    job = RenderJob(classroom, store)
    app.extensions["gradekit_render_job"] = job

    def state_for(qid: str) -> dict:
        return question_state(classroom, store, qid)

    # ---- access ---------------------------------------------------------------------------------
    @app.before_request
    def guard():
        if request.endpoint in ("static", "favicon"):
            return None
        if local and request.host.rsplit(":", 1)[0].strip("[]") not in LOOPBACK:
            return _error_page("This server only answers requests addressed to 127.0.0.1/localhost.", 400)
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(24)
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin.split("://", 1)[-1] != request.host:
                return _error_page("Cross-site request refused (its Origin is not this server).", 403)
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf", "")
            if not hmac.compare_digest(str(sent), session["csrf"]):
                return _error_page("Missing or stale form token (CSRF): reload the page and try again.", 403)
        if request.endpoint in ("login", "logout"):
            return None
        if not session.get("ta") or not hmac.compare_digest(str(session.get("token", "")), token_hash):
            if request.path.startswith("/api/"):
                return jsonify(error="not signed in: reload the page"), 401
            return redirect(url_for("login", next=request.full_path if request.args else request.path))
        g.ta = session["ta"]
        classroom.refresh()
        return None

    @app.after_request
    def headers(resp):
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(BadRequest)
    def bad_request(e: BadRequest):
        if request.path.startswith("/api/"):
            return jsonify(error=str(e)), e.status
        return _error_page(str(e), e.status)

    @app.errorhandler(ScoreError)
    def bad_score(e: ScoreError):
        return bad_request(BadRequest(str(e)))

    @app.errorhandler(StoreError)
    def store_error(e: StoreError):
        return bad_request(BadRequest(str(e), 503))

    @app.errorhandler(404)
    def not_found(e):
        return bad_request(BadRequest(f"Nothing at {request.path}: go back to the overview.", 404))

    @app.route("/login", methods=["GET", "POST"])
    def login():
        error = ""
        nxt = request.values.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        proven = hmac.compare_digest(str(session.get("token", "")), token_hash)
        if request.method == "GET" and "token" in request.args:
            # the printed link: remember the proof in the session and take the token out of the address bar
            # (history, Referer) before anything else is shown
            if hmac.compare_digest(_digest(request.args["token"].strip()), token_hash):
                session["token"] = token_hash
                return redirect(url_for("login", **({"next": nxt} if nxt != "/" else {})))
            error = "This sign-in link is not valid for this server (it changes at every start): copy the " \
                    "link or the token from the terminal where `grade serve` runs now."
        if request.method == "POST":
            name = " ".join(request.form.get("name", "").split())[:TA_NAME_MAX]
            given = request.form.get("token", "").strip()
            if not (proven or hmac.compare_digest(_digest(given), token_hash)):
                error = "Wrong or missing token: open the sign-in link printed by `grade serve`, or copy its " \
                        "token from that terminal."
            elif not name:
                error = "Give your name: it is recorded with every grade you enter."
            else:
                session.clear()
                session.update(ta=name, token=token_hash, csrf=secrets.token_urlsafe(24))
                return redirect(nxt)
        return render_template("login.html", error=error, need_token=not proven, next=nxt,
                               name=session.get("ta", "")), (400 if error else 200)

    @app.get("/favicon.ico")
    def favicon():
        return app.send_static_file("favicon.svg")

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"))

    # ---- pages ----------------------------------------------------------------------------------
    @app.get("/")
    def overview():
        rows = overview_rows(classroom, store)
        questions = classroom.questions
        progress = {q.key: sum(1 for r in rows if r["questions"].get(q.key, {}).get("score") is not None)
                    for q in questions}
        counts = {q.key: sum(1 for r in rows if q.key in r["questions"]) for q in questions}
        pending = [r["student"] for r in rows if r["stale"]]
        return render_template("overview.html", rows=rows, questions=questions, progress=progress,
                               counts=counts,
                               histogram=Markup(histogram_svg([100 * r["total"] / r["max"] for r in rows if r["max"]], 100)),
                               pending=pending, classroom=classroom, message=request.args.get("msg", ""),
                               render=job.state())

    @app.get("/s/<student>")
    def student_page(student: str):
        _student(classroom, student)
        row = next(r for r in overview_rows(classroom, store) if r["student"] == student)
        mine = [q for q in classroom.questions if q.assignment == classroom.results[student].assignment]
        folder = classroom.dir / student
        views = [(name, label) for name, label in REPORT_VIEWS if (folder / name).is_file()]
        shown = request.args.get("view", views[0][0] if views else "")
        if shown not in dict(views):
            shown = views[0][0] if views else ""
        return render_template("student.html", row=row, questions=mine,
                               result=classroom.results[student], code=classroom.code_files(student),
                               views=views, shown=shown, history=store.history(50, student=student),
                               classroom=classroom)

    @app.get("/s/<student>/report")
    def student_report(student: str):
        """Old address of the report: the TA's view of it."""
        _student(classroom, student)
        return redirect(url_for("student_file", student=student, name=REPORT_VIEWS[0][0]))

    @app.get("/s/<student>/view/<path:name>")
    def student_file(student: str, name: str):
        """A report page of the student's results folder, or a figure it shows (relative addresses resolve
        here); nothing else of the folder (results.json, PDFs, the database) is served this way."""
        _student(classroom, student)
        folder = (classroom.dir / student).resolve()
        path = (folder / name).resolve()
        kind = "report" if name in dict(REPORT_VIEWS) else FIGURE_TYPES.get(path.suffix.lower())
        if not kind or not path.is_relative_to(folder) or not path.is_file():
            if name in dict(REPORT_VIEWS):
                raise BadRequest(f"{student} has no {name} yet: press 'Re-render PDFs' or run `grade report`.", 404)
            raise BadRequest(f"{student}'s results folder serves no {name!r}.", 404)
        if kind == "report":
            resp = app.response_class(path.read_bytes(), mimetype="text/html")
            resp.headers["Content-Security-Policy"] = REPORT_CSP  # the report's own HTML: no script, nothing foreign
        else:
            resp = app.response_class(path.read_bytes(), mimetype=kind)
            # a figure opened on its own (an SVG is a document): no script, and an origin of its own
            resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
        return resp

    @app.get("/similarity")
    def similarity_page():
        """Code similarity across the class (grade similarity), for staff only: never shown to a student."""
        from grader.similarity import run_similarity
        from grader.similarity.load import SimilarityError
        from grader.similarity.output import render_html

        assignments = classroom.assignments
        chosen = request.args.get("assignment") or (assignments[0] if assignments else "")
        if chosen not in assignments:
            raise BadRequest(f"No assignment {chosen!r} in this class; choose one of: {', '.join(assignments)}.", 404)
        body, problem = "", ""
        if classroom.submissions_dir is None:
            problem = ("The submissions folder is not known: start the server with "
                       "`grade serve REPORTS --submissions CLASS_FOLDER` to compare the students' code.")
        else:
            try:
                comparison, rubric = run_similarity(classroom.submissions_dir, chosen)
                body = render_html(comparison, rubric.id, embedded=True) if len(comparison.documents) > 1 else ""
                problem = "" if body else "Fewer than two submissions could be read: nothing to compare."
            except SimilarityError as e:
                problem = str(e)
        return render_template("similarity.html", assignments=assignments, chosen=chosen,
                               body=Markup(body), problem=problem, classroom=classroom)

    @app.get("/q/<qid>")
    def question_page(qid: str):
        q = _question(classroom, qid)
        answers = classroom.answers(qid)
        cards = [{"student": s, "html": answer_html(t)} for s, t in answers.items()]
        siblings = [x for x in classroom.questions if x.assignment == q.assignment]
        return render_template("question.html", q=q, cards=cards, state=state_for(qid), questions=siblings,
                               title=classroom.title(q.assignment),
                               key_html=answer_html(q.reference) if q.reference else None)

    # ---- API: each call one transaction, answered with the question's new state -------------------
    @app.get("/api/q/<qid>")
    def api_state(qid: str):
        _question(classroom, qid)
        return jsonify(state_for(qid))

    @app.post("/api/q/<qid>/items")
    def api_create_item(qid: str):
        q = _question(classroom, qid)
        data = _json()
        item = store.create_item(qid, data.get("points"), data.get("comment"), g.ta, q.max_score)
        return jsonify(dict(state_for(qid), created=item.id))

    @app.post("/api/q/<qid>/items/<int:item_id>")
    def api_update_item(qid: str, item_id: int):
        q = _question(classroom, qid)
        item = store.item(item_id)
        if item is None or item.question != qid:
            raise BadRequest(f"no rubric item {item_id} for {qid}", 404)
        data = _json()
        store.update_item(item_id, data.get("points"), data.get("comment"), g.ta, q.max_score)
        return jsonify(state_for(qid))

    @app.post("/api/q/<qid>/grade/<student>")
    def api_grade(qid: str, student: str):
        q = _question(classroom, qid)
        _answer(classroom, student, qid)
        data = _json()
        op = data.get("op")
        if op == "item":
            try:
                item_id = int(data.get("item"))
            except (TypeError, ValueError):
                raise BadRequest("item: give a rubric item's id") from None
            store.set_item(student, qid, item_id, bool(data.get("applied")), g.ta)
        elif op == "comment":
            store.set_comment(student, qid, data.get("comment", ""), g.ta)
        elif op == "override":
            store.set_override(student, qid, data.get("score"), g.ta, q.max_score)
        else:
            raise BadRequest("op must be item, comment or override")
        return jsonify(state_for(qid))

    @app.post("/api/q/<qid>/copy/<student>")
    def api_copy(qid: str, student: str):
        _question(classroom, qid)
        _answer(classroom, student, qid)
        targets = _json().get("targets")
        if not isinstance(targets, list) or not targets:
            raise BadRequest("targets: give the students to copy the grade to")
        for t in targets:
            _answer(classroom, str(t), qid)
        store.copy_grade(student, [str(t) for t in targets], qid, g.ta)
        return jsonify(state_for(qid))

    # ---- finishing, import/export -------------------------------------------------------------------
    @app.post("/render")
    def render_changed_reports():
        """Start re-rendering in the background (or join the job running); the overview shows its progress."""
        job.start(g.ta)
        if request.is_json:
            return jsonify(job.state())
        return redirect(url_for("overview"))

    @app.get("/api/render")
    def render_state():
        return jsonify(job.state())

    @app.get("/export/manual.csv")
    def export_csv():
        text = manual_csv_text(classroom, store)
        return app.response_class(text, mimetype="text/csv",
                                  headers={"Content-Disposition": "attachment; filename=manual.csv"})

    @app.post("/import")
    def import_csv():
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise BadRequest("Choose a manual.csv file to import.")
        tmp = classroom.dir / f".import-{secrets.token_hex(4)}.csv"
        try:
            tmp.write_bytes(upload.read())
            entries = check_manual_csv(tmp, classroom.results)
            rows = csv_rows(classroom, entries)
        except ManualGradeError as e:
            raise BadRequest(str(e).replace(str(tmp), upload.filename)) from None
        finally:
            tmp.unlink(missing_ok=True)
        n = store.import_rows(rows, g.ta)
        return redirect(url_for("overview", msg=f"Imported {n} row(s) from {upload.filename}."))

    return app


# ---- helpers shared by pages and API ----------------------------------------------------------------
def _secret_key(reports_dir: Path) -> bytes:
    """Kept in the reports folder (mode 600) so sessions survive a restart of the server."""
    path = Path(reports_dir) / ".grade-serve-secret"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except OSError:
        pass
    data = secrets.token_bytes(32)
    try:
        tmp = path.with_suffix(f".{secrets.token_hex(4)}")
        tmp.write_bytes(data)
        tmp.chmod(0o600)
        tmp.replace(path)
    except OSError:
        pass  # read-only folder: sessions last as long as this server
    return data


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _fmt(x) -> str:
    return "–" if x is None else f"{round(x, 2):g}"


def _error_page(message: str, status: int):
    return render_template("error.html", message=message, status=status), status


def _json() -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object")
    return data


def _student(classroom: Classroom, student: str) -> None:
    if student not in classroom.results:
        raise BadRequest(f"Unknown student {student!r}: no {student}/results.json in {classroom.dir}.", 404)


def _question(classroom: Classroom, qid: str):
    q = classroom.question(qid)
    if q is None:
        same = [x.key for x in classroom.questions if x.assignment == qid.split(":", 1)[0]]
        known = ", ".join(same or [x.key for x in classroom.questions]) or "none"
        raise BadRequest(f"Unknown question {qid!r}: the written questions here are {known}.", 404)
    return q


def _answer(classroom: Classroom, student: str, key: str) -> None:
    _student(classroom, student)
    r = classroom.results[student]
    if not any(question_key(r.assignment, q.id) == key for q in r.questions):
        raise BadRequest(f"{student}'s results ({r.assignment}) have no question {key}.", 404)


def csv_rows(classroom: Classroom, entries) -> list[tuple[str, str, float | None, str]]:
    """Validated manual.csv entries -> (student, question key, score, comment) rows for the database."""
    from grader.report.manual import find_question

    rows = []
    for e in entries:
        r = classroom.results[e.student]
        rows.append((e.student, question_key(r.assignment, find_question(r, e.question).id), e.score, e.comment))
    return rows


def question_state(classroom: Classroom, store: GradeStore, qid: str) -> dict:
    """Everything the grading page needs about question `qid` (JSON-ready)."""
    q = classroom.question(qid)
    items = store.items(qid)
    points = {i.id: i.points for i in items}
    grades = store.grades(question=qid)
    answers = classroom.answers(qid)
    groups = group_answers(answers)
    group_of = {s: grp.id for grp in groups for s in grp.members}
    students = {}
    for s, text in answers.items():
        gr = grades.get((s, qid))
        stored = next((x for x in classroom.results[s].questions if x.id == q.id), None)
        score = gr.score(points, q.max_score) if gr else (stored.score if stored else None)
        students[s] = {"score": score, "items": gr.items if gr else [], "override": gr.override if gr else None,
                       "comment": gr.comment if gr else (stored.comment if stored else ""),
                       "by": gr.graded_by if gr else "", "at": gr.graded_at if gr else "",
                       "group": group_of.get(s), "empty": not (text or "").strip()}
    dup_of = {}
    for grp in groups:
        for d in grp.duplicate_sets:
            for s in d:
                dup_of[s] = [x for x in d if x != s]
    for s, others in dup_of.items():
        students[s]["duplicates"] = others
    return {
        "question": {"id": q.key, "qid": q.id, "title": q.title, "max": q.max_score},
        "items": [{"id": i.id, "points": i.points, "comment": i.comment, "by": i.updated_by,
                   "uses": sum(1 for gr in grades.values() if i.id in gr.items)} for i in items],
        "students": students, "order": list(answers),
        "groups": [{"id": grp.id, "members": grp.members, "empty": grp.empty,
                    "duplicates": grp.duplicate_sets} for grp in groups],
        "graded": sum(1 for v in students.values() if v["score"] is not None), "total": len(students),
    }


def overview_rows(classroom: Classroom, store: GradeStore) -> list[dict]:
    """One row per student: autograded, manual and total score, per-question scores, status, stale report."""
    items = {i.id: i.points for i in store.items()}
    grades = store.grades()
    decided = store.decided(classroom.maxima())
    rows = []
    for s in classroom.students:
        r = classroom.results[s]
        qs, manual, stale = {}, 0.0, False
        for q in r.questions:
            key = question_key(r.assignment, q.id)
            gr = grades.get((s, key))
            score = gr.score(items, q.max_score) if gr else q.score
            qs[key] = {"score": score, "max": q.max_score}
            manual += score or 0.0
            if gr and (s, key) in decided and decided[(s, key)] != (q.score, q.comment):
                stale = True
        ungraded = sum(1 for v in qs.values() if v["score"] is None)
        # failed: the grading itself broke (a grader error); the student's code raising is a graded outcome
        failed = any(e.startswith("internal error") for e in r.errors) or any(t.error == "internal" for t in r.tests)
        status = "failed" if failed else ("graded" if ungraded == 0 else "not yet")
        rows.append({"student": s, "assignment": r.assignment, "auto": r.autograded_score, "auto_max": r.autograded_max, "manual": manual,
                     "manual_max": sum(q.max_score for q in r.questions), "total": r.autograded_score + manual,
                     "max": r.max_score, "questions": qs, "ungraded": ungraded, "status": status, "stale": stale,
                     "errors": r.errors})
    return rows


def histogram_svg(totals: list[float], maximum: float, bins: int = 10) -> str:
    """Inline SVG bar chart of the totals over [0, maximum] (bars escaped numbers only)."""
    if not totals or maximum <= 0:
        return ""
    counts = [0] * bins
    for t in totals:
        counts[min(int(t / maximum * bins), bins - 1)] += 1
    w, h, pad = 420, 140, 22
    bw = (w - 2 * pad) / bins
    top = max(counts)
    parts = [f'<svg class="hist" viewBox="0 0 {w} {h + 30}" width="{w}" height="{h + 30}" role="img" '
             f'aria-label="histogram of total scores">']
    for i, c in enumerate(counts):
        bh = (h - 20) * c / top if top else 0
        x = pad + i * bw
        parts.append(f'<rect x="{x + 1:.1f}" y="{h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}"><title>'
                     f'{maximum * i / bins:g}–{maximum * (i + 1) / bins:g}: {c}</title></rect>')
        if c:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{h - bh - 4:.1f}" text-anchor="middle">{c}</text>')
        parts.append(f'<text x="{x:.1f}" y="{h + 16}" text-anchor="middle" class="tick">{maximum * i / bins:g}</text>')
    parts.append(f'<text x="{w - pad:.1f}" y="{h + 16}" text-anchor="middle" class="tick">{maximum:g}</text>')
    parts.append(f'<line x1="{pad}" y1="{h}" x2="{w - pad}" y2="{h}" /></svg>')
    return "".join(parts)


def manual_csv_text(classroom: Classroom, store: GradeStore) -> str:
    """The database's decisions as manual.csv (student,question,score,comment)."""
    import csv

    from grader.fileio import csv_cell

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["student", "question", "score", "comment"])
    for (s, key), (score, comment) in sorted(store.decided(classroom.maxima()).items()):
        # names and comments neutralised for spreadsheets; `read_manual_csv` takes the apostrophe off again
        w.writerow([csv_cell(s), key.split(":", 1)[1], "" if score is None else f"{score:g}", csv_cell(comment)])
    return buf.getvalue()


def open_classroom(reports_dir: Path, submissions_dir: Path | None = None) -> tuple[Classroom, GradeStore]:
    """Check the folder and the database before serving (raises ClassroomError / StoreError, nothing written
    when either is unusable). A new database imports REPORTS_DIR/manual.csv when there is one."""
    classroom = Classroom(reports_dir, submissions_dir)
    new = not (classroom.dir / "grades.sqlite").exists()
    store = open_store(classroom.dir)
    csv_path = classroom.dir / "manual.csv"
    if new and csv_path.is_file():
        try:
            store.import_rows(csv_rows(classroom, check_manual_csv(csv_path, classroom.results)), "manual.csv")
        except ManualGradeError:
            store.close()
            (classroom.dir / "grades.sqlite").unlink(missing_ok=True)
            raise
    return classroom, store
