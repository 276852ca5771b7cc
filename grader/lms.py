"""Learning-management systems: export grades (Canvas, Moodle, plain CSV), import bulk downloads safely.

    export_gradebook(Path("reports"), "canvas", roster=Path("roster.csv"))  # -> reports/canvas_grades.csv
    import_archive("canvas", Path("submissions.zip"), Path("class/"))       # -> class/<lastfirst>/...

A roster CSV (columns folder, name, id, sis_user_id, sis_login_id, section, email) maps submission
folder names to LMS identities; students missing from it are exported under their folder name with
a warning.

Imports never trust the archive: absolute paths, `..`, symlink entries, zip bombs (total size,
compression ratio, entry count), encrypted entries and names that do not follow the LMS's pattern
are skipped with a reason; an existing student folder is never overwritten unless `force=True`.

Student folders are keyed by the LMS's user id, `<name>_<user id>`: the name (Unicode NFKC, zero-width
and other format characters removed) is for people only, so two students with the same name never
share a folder, and two uploads of the same file by the same user id are a resubmission (the newer
is kept and the report says so). Budgets: an entry over MAX_ENTRY_BYTES is skipped, a student over
MAX_STUDENT_BYTES or MAX_STUDENT_FILES is skipped alone (the rest of the class is imported), and
the archive as a whole is refused only past MAX_TOTAL_BYTES / MAX_ENTRIES.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024  # the whole class
MAX_ENTRY_BYTES = 50 * 1024 * 1024  # one uploaded file
MAX_STUDENT_BYTES = 100 * 1024 * 1024  # one student's upload
MAX_STUDENT_FILES = 500
MAX_RATIO = 100
RATIO_MIN_BYTES = 1024 * 1024  # small files may compress well (a file of spaces); only big ones are bombs
MAX_ENTRIES = 200_000
ROSTER_COLUMNS = ("folder", "name", "id", "sis_user_id", "sis_login_id", "section", "email")
EXPORT_FILES = {"canvas": "canvas_grades.csv", "moodle": "moodle_grades.csv", "csv": "grades.csv"}
MOODLE_COLUMNS = ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments"]
CANVAS_FIXED = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


class LmsError(ValueError):
    """Bad input for an export or import (the message says what to do)."""


# ---- export ------------------------------------------------------------------------------------
def load_roster(path: Path | None) -> dict[str, dict]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise LmsError(f"roster {path} does not exist; pass a CSV with columns {', '.join(ROSTER_COLUMNS)}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "folder" not in cols:
            raise LmsError(f"roster {path} has no 'folder' column (columns: {', '.join(cols) or 'none'}); "
                           f"expected {', '.join(ROSTER_COLUMNS)}")
        out = {}
        for row in reader:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if row.get("folder"):
                out[row["folder"]] = row
        return out


def _rubric_titles() -> dict[str, str]:
    try:
        from grader.rubric import available_rubrics

        return {k: r.title for k, r in available_rubrics().items()}
    except Exception:
        return {}


def _moodle_date(iso: str) -> str:
    try:
        d = _dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return "-"
    return d.strftime("%A, %d %B %Y, %I:%M %p")


def export_gradebook(out: Path, fmt: str, roster: Path | None = None, warnings: list[str] | None = None,
                     return_warnings: bool = False):
    """Write OUT/<canvas|moodle>_grades.csv or OUT/grades.csv from every OUT/*/results.json; return its path.

    Warnings (students not in the roster, roster entries without results) are appended to `warnings`;
    with `return_warnings=True` the call returns (path, warnings).
    """
    from grader.batch import collect_results, write_csv_atomic
    import pandas as pd

    out = Path(out)
    warnings = [] if warnings is None else warnings
    if fmt not in EXPORT_FILES:
        raise LmsError(f"unknown format {fmt!r}: use canvas, moodle or csv")
    if not out.is_dir():
        raise LmsError(f"{out} is not a folder: pass the folder `grade batch --out` wrote (default: reports)")
    results = collect_results(out)
    if not results:
        raise LmsError(f"{out} holds no */results.json: grade the class first (`grade batch ROOT --out {out}`)")
    people = load_roster(roster)
    if fmt in ("canvas", "moodle") and roster is None:
        warnings.append(f"no --roster: the {fmt.title()} ID columns are empty and students are named by their "
                        f"folder, so {fmt.title()} may not match them; pass --roster roster.csv "
                        f"(columns {', '.join(ROSTER_COLUMNS)})")
    ungraded = [f"{r.student} ({', '.join(q.id for q in r.questions if q.score is None)})"
                for r in results if any(q.score is None for q in r.questions)]
    if ungraded:
        warnings.append(f"{len(ungraded)} student(s) have written answers not graded yet, exported as 0 points "
                        f"for now: {', '.join(ungraded[:10])}{' …' if len(ungraded) > 10 else ''}; grade them in "
                        "`grade serve` (or manual.csv) and export again")
    for r in results:
        if people and r.student not in people:
            warnings.append(f"{r.student} is not in the roster: exported under its folder name")
    graded = {r.student for r in results}
    for folder in people:
        if folder not in graded:
            warnings.append(f"{folder} (roster) has no results in {out}")
    titles = _rubric_titles()

    if fmt == "canvas":
        assignments = sorted({r.assignment for r in results})
        col = {a: f"{titles.get(a, a)} ({a})" for a in assignments}
        maxes = {a: max(r.max_score for r in results if r.assignment == a) for a in assignments}
        rows = [dict({c: "" for c in CANVAS_FIXED}, Student="Points Possible", **{col[a]: f"{maxes[a]:g}" for a in assignments})]
        by_student: dict[str, dict] = {}
        for r in results:
            p = people.get(r.student, {})
            row = by_student.setdefault(r.student, {
                "Student": p.get("name") or r.student, "ID": p.get("id", ""), "SIS User ID": p.get("sis_user_id", ""),
                "SIS Login ID": p.get("sis_login_id", ""), "Section": p.get("section", "")})
            row[col[r.assignment]] = f"{r.score:g}"
        rows += list(by_student.values())
        df = pd.DataFrame(rows, columns=CANVAS_FIXED + [col[a] for a in assignments]).fillna("")
    elif fmt == "moodle":
        rows = []
        for r in results:
            p = people.get(r.student, {})
            rows.append({
                "Identifier": f"Participant {p['id']}" if p.get("id") else r.student,
                "Full name": p.get("name") or r.student, "Email address": p.get("email", ""),
                "Status": "Submitted for grading - Graded", "Grade": f"{r.score:g}", "Maximum Grade": f"{r.max_score:g}",
                "Grade can be changed": "Yes", "Last modified (submission)": "-",
                "Last modified (grade)": _moodle_date(r.graded_at), "Feedback comments": r.summary_line(),
            })
        df = pd.DataFrame(rows, columns=MOODLE_COLUMNS)
    else:
        rows = []
        for r in results:
            p = people.get(r.student, {})
            rows.append({"student": r.student, "name": p.get("name", ""), "id": p.get("id", ""),
                         "email": p.get("email", ""), "assignment": r.assignment, "score": r.score,
                         "max_score": r.max_score, "autograded_score": r.autograded_score,
                         "autograded_max": r.autograded_max, "graded_at": r.graded_at})
        df = pd.DataFrame(rows)
    path = write_csv_atomic(df, out / EXPORT_FILES[fmt])
    return (path, warnings) if return_warnings else path


# ---- import ------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    imported: dict[str, list[str]] = field(default_factory=dict)  # student folder -> files written
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry or student, reason)
    resubmitted: set[str] = field(default_factory=set)  # LMS user ids that uploaded a file more than once


CANVAS_NAME = re.compile(r"^(?P<student>[^_/]+)_(?:late_)?(?P<user>\d+)_(?P<sub>\d+)_(?P<orig>.+)$", re.IGNORECASE)
CANVAS_COPY_SUFFIX = re.compile(r"^(?P<stem>.+?)-\d+(?P<ext>\.[^./]+)?$")
MOODLE_DIR = re.compile(r"^(?P<name>.+)_(?P<id>\d+)_assign(?:submission|feedback)_[a-z]+_?$")


def _safe_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("._")


def display_name(text: str) -> str:
    """A name as people read it: NFKC-normalised, zero-width and other format characters removed."""
    text = unicodedata.normalize("NFKC", text)
    return _safe_name("".join(c for c in text if unicodedata.category(c) != "Cf"))


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _unsafe_reason(name: str) -> str | None:
    if "\0" in name:
        return "NUL byte in the name"
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "absolute path (zip-slip)"
    if any(part == ".." for part in norm.split("/")):
        return "'..' in the path (zip-slip)"
    return None


def _target(kind: str, name: str) -> tuple[str, str, str] | str:
    """(LMS user id, display name, relative path inside the student's folder), or the reason the
    entry does not fit the LMS's pattern."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if kind == "canvas":
        m = CANVAS_NAME.match(parts[-1]) if parts else None
        if not m:
            return "name does not follow Canvas's lastfirst_userid_submissionid_filename pattern"
        orig = m.group("orig")
        c = CANVAS_COPY_SUFFIX.match(orig)
        if c:  # Canvas appends -N to resubmitted files: vae-1.py is vae.py
            orig = c.group("stem") + (c.group("ext") or "")
        user, student, rel = m.group("user"), display_name(m.group("student")), _safe_name(orig)
    elif kind == "moodle":
        m = MOODLE_DIR.match(parts[0]) if len(parts) >= 2 else None
        if not m:
            return "path does not start with Moodle's 'Full Name_ID_assignsubmission_file_/' folder"
        user, student = m.group("id"), display_name(m.group("name"))
        rel = "/".join(_safe_name(p) for p in parts[1:])
    else:
        raise LmsError(f"unknown archive kind {kind!r}: use canvas or moodle")
    if not rel or any(not p for p in rel.split("/")):
        return "empty file name after cleaning"
    return user.lstrip("0") or "0", student or "student", rel


def import_archive(kind: str, archive: Path, into: Path, force: bool = False,
                   max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO,
                   max_entries: int = MAX_ENTRIES) -> ImportReport:
    """Unpack an LMS bulk-download zip into INTO/<student>/ (see the module docstring)."""
    if kind not in ("canvas", "moodle"):
        raise LmsError(f"unknown archive kind {kind!r}: use canvas or moodle")
    archive, into = Path(archive), Path(into)
    if not archive.is_file():
        raise LmsError(f"{archive} does not exist: pass the zip downloaded from {kind.title()}")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise LmsError(f"{archive} is not a zip file: download the submissions again from {kind.title()}") from None
    report = ImportReport()
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            raise LmsError(f"{archive} holds {len(infos)} entries (limit {max_entries}): refusing a possible zip bomb")
        chosen: dict[tuple[str, str], zipfile.ZipInfo] = {}  # (user id, file) -> entry
        names: dict[str, tuple] = {}  # user id -> (date, display name) of their newest entry
        for info in infos:
            name = info.filename
            if info.is_dir():
                continue
            reason = _unsafe_reason(name)
            if reason is None and _is_symlink(info):
                reason = "symbolic link entry"
            if reason is None and info.flag_bits & 0x1:
                reason = "encrypted entry"
            if reason is None and info.file_size > MAX_ENTRY_BYTES:
                reason = f"{info.file_size / 2**20:.0f} MiB, over the {MAX_ENTRY_BYTES >> 20} MiB limit for one file"
            if reason is None and info.file_size > RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
                reason = f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 above {max_ratio:g}:1 (zip bomb?)"
            if reason is None:
                t = _target(kind, name)
                if isinstance(t, str):
                    reason = t
                else:
                    user, display, rel = t
                    names[user] = max(names.get(user, (info.date_time, display)), (info.date_time, display))
                    key = (user, rel)
                    if key in chosen:
                        other = chosen[key]
                        newer, older = (info, other) if info.date_time > other.date_time else (other, info)
                        chosen[key] = newer
                        report.skipped.append((older.filename, f"resubmission by the same LMS user ({user}) of {rel}: "
                                                                f"kept the newer {newer.filename}"))
                        report.resubmitted.add(user)
                    else:
                        chosen[key] = info
                    continue
            report.skipped.append((name, reason))
        if not chosen and report.skipped and all(r.startswith(("name does not follow", "path does not start"))
                                                 for _, r in report.skipped):
            other = "moodle" if kind == "canvas" else "canvas"
            raise LmsError(f"{archive} is not a {kind.title()} bulk download: none of its {len(report.skipped)} "
                           f"file(s) is named the way {kind.title()} names submissions (e.g. "
                           f"{report.skipped[0][0]!r}). Download 'Download Submissions' from {kind.title()} again, "
                           f"try `grade import {other}`, or unpack it by hand into one folder per student")
        by_student: dict[str, list[tuple[str, zipfile.ZipInfo]]] = {}
        for (user, rel), info in chosen.items():
            by_student.setdefault(f"{names[user][1]}_{user}", []).append((rel, info))
        for student, files in list(by_student.items()):  # one student's oversized upload costs only them
            size = sum(i.file_size for _, i in files)
            if size > MAX_STUDENT_BYTES or len(files) > MAX_STUDENT_FILES:
                del by_student[student]
                report.skipped.append((student, f"upload of {len(files)} files, {size / 2**20:.0f} MiB: over the "
                                                f"{MAX_STUDENT_FILES} files / {MAX_STUDENT_BYTES >> 20} MiB limit per student"))
        total = sum(i.file_size for files in by_student.values() for _, i in files)
        if total > max_total_bytes:
            raise LmsError(f"{archive} would unpack to {total / 1e6:.0f} MB (limit {max_total_bytes / 1e6:.0f} MB): "
                           "refusing a possible zip bomb; unpack it by hand if it is genuine")
        into.mkdir(parents=True, exist_ok=True)
        for student, files in sorted(by_student.items()):
            dest = into / student
            if (dest.exists() or dest.is_symlink()) and not force:
                report.skipped.append((student, f"{dest} already exists; pass --force to replace it"))
                continue
            staging = Path(tempfile.mkdtemp(prefix=f".{student}.", dir=into))
            try:
                written = []
                for rel, info in sorted(files):
                    target = staging.joinpath(*PurePosixPath(rel).parts)
                    if staging.resolve() not in target.resolve().parents:
                        report.skipped.append((info.filename, "path leaves the student folder"))
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        _extract_capped(zf, info, target, limit=info.file_size)
                    except (LmsError, zipfile.BadZipFile, OSError, RuntimeError) as e:
                        target.unlink(missing_ok=True)
                        report.skipped.append((info.filename, str(e)))
                        continue
                    written.append(rel)
                if not written:
                    continue
                if dest.is_symlink() or dest.is_file():
                    dest.unlink()
                elif dest.exists():
                    shutil.rmtree(dest)
                os.replace(staging, dest)
                report.imported[student] = written
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return report


def _extract_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> None:
    """Copy one entry, stopping at its declared size (a lying header cannot grow it)."""
    done = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            done += len(chunk)
            if done > limit:
                raise LmsError("entry is larger than its header says (zip bomb?)")
            dst.write(chunk)
