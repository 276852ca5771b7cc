"""Manual grades of written answers in REPORTS_DIR/grades.sqlite (standard library sqlite3).

Tables: `items` (rubric items per question: points, comment, who made/edited them), `grades` (one row per
student and question a TA has touched: score override, free comment, who and when), `applied` (which items an
answer got), `history` (every decision: when, which TA, what). Scores are not stored; `scoring.question_score`
computes them, so editing an item's points changes every student who got it.

Every decision is one `BEGIN IMMEDIATE` transaction that also appends its history row: a crash or a killed
server leaves the database before or after a decision, never between; two TAs (two server threads or two
processes) are serialised by SQLite's write lock (WAL journal, busy timeout) and their decisions both land.
A database whose `user_version` is newer than this code's is refused before anything is written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from grader.manual_grades.scoring import ScoreError, feedback_text, parse_number, question_score

DB_NAME = "grades.sqlite"
SCHEMA_VERSION = 1
APP_ID = "gradekit-grades"
COMMENT_MAX_CHARS = 4000
ITEM_TEXT_MAX_CHARS = 500

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY, question TEXT NOT NULL, points REAL NOT NULL, comment TEXT NOT NULL,
    created_by TEXT NOT NULL, created_at TEXT NOT NULL, updated_by TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX items_question ON items(question);
CREATE TABLE grades (
    student TEXT NOT NULL, question TEXT NOT NULL, override REAL, comment TEXT NOT NULL DEFAULT '',
    graded_by TEXT NOT NULL, graded_at TEXT NOT NULL, PRIMARY KEY (student, question));
CREATE TABLE applied (
    student TEXT NOT NULL, question TEXT NOT NULL, item_id INTEGER NOT NULL REFERENCES items(id),
    PRIMARY KEY (student, question, item_id));
CREATE TABLE history (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, ta TEXT NOT NULL, action TEXT NOT NULL,
    student TEXT, question TEXT, detail TEXT NOT NULL);
"""


class StoreError(RuntimeError):
    """The grades database cannot be used (newer version, not a database, locked too long); says what to do."""


@dataclass(frozen=True)
class Item:
    id: int
    question: str
    points: float
    comment: str
    created_by: str
    created_at: str
    updated_by: str
    updated_at: str


@dataclass
class Grade:
    """What the database holds for one student's answer to one question."""

    student: str
    question: str
    items: list[int] = field(default_factory=list)
    override: float | None = None
    comment: str = ""
    graded_by: str = ""
    graded_at: str = ""

    def score(self, points: dict[int, float], max_score: float) -> float | None:
        return question_score([points[i] for i in self.items if i in points], self.override, max_score)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _clean(text: object, limit: int, what: str) -> str:
    text = str(text if text is not None else "").replace("\r\n", "\n").strip()
    if len(text) > limit:
        raise ScoreError(f"{what}: {len(text)} characters, at most {limit} allowed")
    return text


class GradeStore:
    """The grades database of one reports folder. Safe to share between threads (one connection per thread)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._check_and_migrate()

    # ---- connection & schema --------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=15, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 15000")
            self._local.conn = conn
        return conn

    def _check_and_migrate(self) -> None:
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            conn = self._conn()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if existed:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a gradekit grades database ({e}); move it away or pass "
                             "another reports folder") from None
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer gradekit (database schema {version}, this "
                             f"version reads up to {SCHEMA_VERSION}); upgrade gradekit (pip install -U gradekit). "
                             "Nothing was changed.")
        if existed and version == 0 and tables:
            raise StoreError(f"{self.path}: an SQLite file that gradekit did not write (tables: "
                             f"{', '.join(sorted(tables))}); move it away. Nothing was changed.")
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            if version == 0:
                with self.transaction() as c:
                    if c.execute("PRAGMA user_version").fetchone()[0] == 0:  # another process may have won
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                c.execute(statement)
                        c.execute("INSERT INTO meta VALUES ('app', ?), ('created_at', ?)", (APP_ID, now()))
                        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.OperationalError as e:
            raise StoreError(f"{self.path}: cannot write the grades database ({e}); check the folder's "
                             "permissions and free space") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work: everything inside commits together or not at all."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"{self.path}: the database stayed locked ({e}); another process holds it, retry") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @staticmethod
    def _log(conn: sqlite3.Connection, ta: str, action: str, student: str | None, question: str | None,
             **detail) -> None:
        conn.execute("INSERT INTO history (at, ta, action, student, question, detail) VALUES (?, ?, ?, ?, ?, ?)",
                     (now(), ta, action, student, question, json.dumps(detail, sort_keys=True)))

    # ---- reading --------------------------------------------------------------------------------
    def items(self, question: str | None = None) -> list[Item]:
        sql = "SELECT * FROM items" + (" WHERE question = ?" if question is not None else "") + " ORDER BY id"
        return [Item(*row) for row in self._conn().execute(sql, () if question is None else (question,))]

    def item(self, item_id: int) -> Item | None:
        row = self._conn().execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return Item(*row) if row else None

    def grades(self, question: str | None = None, student: str | None = None) -> dict[tuple[str, str], Grade]:
        """(student, question) -> Grade for every answer a TA has touched (filtered by question/student)."""
        where, args = [], []
        if question is not None:
            where.append("question = ?"), args.append(question)
        if student is not None:
            where.append("student = ?"), args.append(student)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        conn = self._conn()
        out: dict[tuple[str, str], Grade] = {}
        # one read transaction, so grades and applied items are from the same moment
        conn.execute("BEGIN")
        try:
            for s, q, override, comment, by, at in conn.execute(
                    f"SELECT student, question, override, comment, graded_by, graded_at FROM grades{clause}", args):
                out[(s, q)] = Grade(s, q, [], override, comment, by, at)
            for s, q, item_id in conn.execute(f"SELECT student, question, item_id FROM applied{clause} "
                                              "ORDER BY item_id", args):
                out.setdefault((s, q), Grade(s, q)).items.append(item_id)
        finally:
            conn.execute("COMMIT")
        return out

    def history(self, limit: int = 200, student: str | None = None) -> list[dict]:
        sql = "SELECT id, at, ta, action, student, question, detail FROM history"
        args: tuple = ()
        if student is not None:
            sql, args = sql + " WHERE student = ?", (student,)
        rows = self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(id=r[0], at=r[1], ta=r[2], action=r[3], student=r[4], question=r[5], detail=json.loads(r[6]))
                for r in rows]

    # ---- decisions (each one transaction) -------------------------------------------------------
    @staticmethod
    def _touch(conn: sqlite3.Connection, student: str, question: str, ta: str) -> None:
        conn.execute("INSERT INTO grades (student, question, graded_by, graded_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (student, question) DO UPDATE SET graded_by = excluded.graded_by, "
                     "graded_at = excluded.graded_at", (student, question, ta, now()))

    def create_item(self, question: str, points: object, comment: object, ta: str, max_score: float) -> Item:
        value = parse_number(points, -max_score, max_score, "item points")
        text = _clean(comment, ITEM_TEXT_MAX_CHARS, "item text")
        if not text:
            raise ScoreError("item text: say what the item stands for, e.g. 'Correct formula'")
        stamp = now()
        with self.transaction() as c:
            cur = c.execute("INSERT INTO items (question, points, comment, created_by, created_at, updated_by, "
                            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", (question, value, text, ta, stamp, ta, stamp))
            item_id = cur.lastrowid
            self._log(c, ta, "create_item", None, question, item=item_id, points=value, comment=text)
        return self.item(item_id)

    def update_item(self, item_id: int, points: object, comment: object, ta: str, max_score: float) -> list[str]:
        """Change an item's points/text; return the students who have it (their scores change with it)."""
        value = parse_number(points, -max_score, max_score, "item points")
        text = _clean(comment, ITEM_TEXT_MAX_CHARS, "item text")
        if not text:
            raise ScoreError("item text: cannot be empty")
        with self.transaction() as c:
            old = c.execute("SELECT points, comment FROM items WHERE id = ?", (item_id,)).fetchone()
            if old is None:
                raise ScoreError(f"no rubric item {item_id}")
            c.execute("UPDATE items SET points = ?, comment = ?, updated_by = ?, updated_at = ? WHERE id = ?",
                      (value, text, ta, now(), item_id))
            students = [r[0] for r in c.execute("SELECT student FROM applied WHERE item_id = ? ORDER BY student",
                                                (item_id,))]
            self._log(c, ta, "update_item", None, None, item=item_id, points=[old[0], value], comment=[old[1], text],
                      affected=students)
        return students

    def set_item(self, student: str, question: str, item_id: int, applied: bool, ta: str) -> None:
        """Apply (or remove) an item to one answer. Idempotent: two TAs applying it once is once."""
        with self.transaction() as c:
            row = c.execute("SELECT question FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None or row[0] != question:
                raise ScoreError(f"rubric item {item_id} does not belong to question {question}")
            if applied:
                c.execute("INSERT OR IGNORE INTO applied VALUES (?, ?, ?)", (student, question, item_id))
            else:
                c.execute("DELETE FROM applied WHERE student = ? AND question = ? AND item_id = ?",
                          (student, question, item_id))
            self._touch(c, student, question, ta)
            self._log(c, ta, "apply_item" if applied else "remove_item", student, question, item=item_id)

    def set_comment(self, student: str, question: str, comment: object, ta: str) -> None:
        text = _clean(comment, COMMENT_MAX_CHARS, "comment")
        with self.transaction() as c:
            self._touch(c, student, question, ta)
            c.execute("UPDATE grades SET comment = ? WHERE student = ? AND question = ?", (text, student, question))
            self._log(c, ta, "comment", student, question, comment=text)

    def set_override(self, student: str, question: str, score: object, ta: str, max_score: float) -> None:
        """Set the score by hand (blank text clears it: the items decide again)."""
        value = None if score is None or str(score).strip() == "" else parse_number(score, 0, max_score, "score")
        with self.transaction() as c:
            self._touch(c, student, question, ta)
            c.execute("UPDATE grades SET override = ? WHERE student = ? AND question = ?", (value, student, question))
            self._log(c, ta, "override", student, question, score=value)

    def copy_grade(self, source: str, targets: Iterable[str], question: str, ta: str) -> list[str]:
        """Give each target student the source's decision (items, override, comment): one transaction."""
        targets = [t for t in dict.fromkeys(targets) if t != source]
        with self.transaction() as c:
            row = c.execute("SELECT override, comment FROM grades WHERE student = ? AND question = ?",
                            (source, question)).fetchone()
            items = [r[0] for r in c.execute("SELECT item_id FROM applied WHERE student = ? AND question = ?",
                                             (source, question))]
            if row is None and not items:
                raise ScoreError(f"{source} has no grade for {question} yet: grade that answer first")
            override, comment = row if row else (None, "")
            for t in targets:
                c.execute("DELETE FROM applied WHERE student = ? AND question = ?", (t, question))
                c.executemany("INSERT INTO applied VALUES (?, ?, ?)", [(t, question, i) for i in items])
                self._touch(c, t, question, ta)
                c.execute("UPDATE grades SET override = ?, comment = ? WHERE student = ? AND question = ?",
                          (override, comment, t, question))
            self._log(c, ta, "copy_grade", source, question, to=targets, items=items, override=override,
                      comment=comment)
        return targets

    def import_rows(self, rows: Iterable[tuple[str, str, float | None, str]], ta: str) -> int:
        """(student, question key, score or None, comment) rows, e.g. from a validated manual.csv ->
        score overrides + comments, all in one transaction."""
        n = 0
        with self.transaction() as c:
            for student, question, score, comment in rows:
                self._touch(c, student, question, ta)
                c.execute("UPDATE grades SET override = ?, comment = ? WHERE student = ? AND question = ?",
                          (score, comment, student, question))
                n += 1
            self._log(c, ta, "import_csv", None, None, rows=n)
        return n

    # ---- what the grades mean for results.json ------------------------------------------------
    def decided(self, maxima: dict[tuple[str, str], float]) -> dict[tuple[str, str], tuple[float | None, str]]:
        """(student, question) -> (score or None, feedback text) for every touched answer named in `maxima`
        (which maps each known answer to its question's maximum)."""
        items = {i.id: i for i in self.items()}
        points = {i: it.points for i, it in items.items()}
        out = {}
        for key, g in self.grades().items():
            if key not in maxima:
                continue  # a student or question no longer in the reports folder
            applied = [(items[i].points, items[i].comment) for i in g.items if i in items]
            out[key] = (g.score(points, maxima[key]), feedback_text(applied, g.comment))
        return out


def open_store(results_dir: Path, create: bool = True) -> GradeStore | None:
    """The grades database of `results_dir` (None when it has none and `create` is False)."""
    path = Path(results_dir) / DB_NAME
    if not create and not path.exists():
        return None
    return GradeStore(path)


def stored_entries(results_dir: Path, results: dict) -> list:
    """The database's decisions as ManualEntry rows (student -> GradeResult in `results`); [] without a database.
    The database names questions "assignment:Q1"; a row counts for a student only under their assignment."""
    from grader.report.manual import ManualEntry

    store = open_store(results_dir, create=False)
    if store is None:
        return []
    try:
        keys = {(s, f"{r.assignment}:{q.id}"): (q.id, q.max_score) for s, r in results.items() for q in r.questions}
        decided = store.decided({k: m for k, (_, m) in keys.items()})
    finally:
        store.close()
    return [ManualEntry(s, keys[(s, k)][0], score, comment, 0) for (s, k), (score, comment) in sorted(decided.items())]


def apply_stored_grades(results_dir: Path, results: Iterable) -> set[str]:
    """Set the manual scores/comments of `results` (GradeResult objects, in memory) from the database.
    Returns the students whose questions changed."""
    from grader.report.manual import apply_manual

    by_student = {r.student: r for r in results}
    entries = stored_entries(results_dir, by_student)
    return {s for s, r in by_student.items() if entries and apply_manual(r, entries, s)}
