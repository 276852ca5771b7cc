"""The reports folder as `grade serve` sees it: every */results.json (cached, reloaded when a file changes),
the assignment's written questions (with the rubric's key when it has one), and students' code when the
submissions folder is known."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from grader.results import GradeResult, load_result

CODE_SUFFIXES = {".py", ".md", ".txt", ".toml", ".json", ".yaml", ".yml", ".cfg", ".ipynb"}
CODE_MAX_BYTES = 300_000
CODE_MAX_FILES = 40


class ClassroomError(ValueError):
    """The reports folder cannot be served (no results, several assignments); the message says what to do."""


@dataclass(frozen=True)
class QuestionInfo:
    """A written question of one assignment. `key` ("vae:Q1") names it in URLs and in the grades database."""

    assignment: str
    id: str  # "Q1", as in results.json and manual.csv
    title: str
    max_score: float
    reference: str = ""  # the rubric's reference answer / marking key, "" when it has none

    @property
    def key(self) -> str:
        return question_key(self.assignment, self.id)


def question_key(assignment: str, qid: str) -> str:
    return f"{assignment}:{qid}"


class Classroom:
    """Thread-safe read-only view of a reports folder. `refresh()` is cheap (one stat per results.json)."""

    def __init__(self, reports_dir: Path, submissions_dir: Path | None = None):
        self.dir = Path(reports_dir)
        self.submissions_dir = Path(submissions_dir) if submissions_dir else None
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], GradeResult]] = {}
        self.broken: dict[str, str] = {}
        if not self.dir.is_dir():
            raise ClassroomError(f"{self.dir} is not a folder; pass the folder `grade batch --out` wrote "
                                 "(default: reports)")
        self.refresh()
        if not self.results:
            extra = f" ({len(self.broken)} unreadable: {', '.join(sorted(self.broken))})" if self.broken else ""
            raise ClassroomError(f"no */results.json under {self.dir}{extra}; grade the class first: "
                                 f"`grade batch SUBMISSIONS --out {self.dir}`")
        self.rubrics = self._rubrics()

    def refresh(self) -> None:
        with self._lock:
            seen: dict[Path, tuple[tuple[int, int], GradeResult]] = {}
            broken: dict[str, str] = {}
            for path in sorted(self.dir.glob("*/results.json")):
                try:
                    st = path.stat()
                    stamp = (st.st_mtime_ns, st.st_size)
                    cached = self._cache.get(path)
                    result = cached[1] if cached and cached[0] == stamp else load_result(path)
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                    broken[path.parent.name] = f"{type(e).__name__}: {e}"
                    continue
                result.student = path.parent.name  # the folder names the student (as grade batch does)
                seen[path] = (stamp, result)
            changed = seen.keys() != self._cache.keys() or any(seen[p][0] != self._cache[p][0] for p in seen)
            self._cache, self.broken = seen, broken
            self.results: dict[str, GradeResult] = {r.student: r for _, r in seen.values()}
            if changed or not hasattr(self, "_questions"):
                self._questions: list[QuestionInfo] | None = None

    @staticmethod
    def _rubrics() -> dict:
        try:
            from grader.rubric import available_rubrics

            return available_rubrics()
        except Exception:  # rubrics only add titles and reference answers; serving works without them
            return {}

    @property
    def assignments(self) -> list[str]:
        return sorted({r.assignment for r in self.results.values()})

    def title(self, assignment: str) -> str:
        r = self.rubrics.get(assignment)
        return r.title if r else assignment

    @property
    def students(self) -> list[str]:
        return sorted(self.results)

    def result_path(self, student: str) -> Path:
        return self.dir / student / "results.json"

    @property
    def questions(self) -> list[QuestionInfo]:
        """The written questions of every assignment in the folder, by assignment, in the rubric's order
        (computed once per change of the folder)."""
        if self._questions is None:
            self._questions = self._find_questions()
        return self._questions

    def _find_questions(self) -> list[QuestionInfo]:
        found: dict[str, QuestionInfo] = {}
        for r in self.results.values():
            rubric = self.rubrics.get(r.assignment)
            refs = {q.id: getattr(q, "key", "") for q in rubric.questions} if rubric else {}
            for q in r.questions:
                info = QuestionInfo(r.assignment, q.id, q.title, q.max_score, refs.get(q.id, ""))
                found.setdefault(info.key, info)

        def order(q: QuestionInfo):
            rubric = self.rubrics.get(q.assignment)
            ids = [x.id for x in rubric.questions] if rubric else []
            return (q.assignment, ids.index(q.id) if q.id in ids else len(ids), q.id)

        return sorted(found.values(), key=order)

    def question(self, key: str) -> QuestionInfo | None:
        return next((q for q in self.questions if q.key == key), None)

    def answers(self, key: str) -> dict[str, str | None]:
        """student -> answer text (None: no answer) for every student whose results carry question `key`."""
        out = {}
        for s in self.students:
            r = self.results[s]
            q = next((q for q in r.questions if question_key(r.assignment, q.id) == key), None)
            if q is not None:
                out[s] = q.answer
        return out

    def maxima(self) -> dict[tuple[str, str], float]:
        """(student, question key) -> the question's maximum, for every answer in the folder."""
        return {(s, question_key(r.assignment, q.id)): q.max_score for s, r in self.results.items() for q in r.questions}

    def code_files(self, student: str) -> list[tuple[str, str]]:
        """(relative path, text) of the student's submitted text files; [] when the submissions folder is unknown.
        `student` must be a known student (checked by the caller); nothing outside its folder is read."""
        if self.submissions_dir is None or student not in self.results:
            return []
        root = (self.submissions_dir / student).resolve()
        if not root.is_dir() or root.parent != self.submissions_dir.resolve():
            return []
        files = []
        for path in sorted(root.rglob("*")):
            if len(files) >= CODE_MAX_FILES:
                break
            if path.is_symlink() or not path.is_file() or path.suffix.lower() not in CODE_SUFFIXES:
                continue
            if any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts):
                continue
            data = path.read_bytes()[:CODE_MAX_BYTES]
            text = data.decode("utf-8", errors="replace")
            if path.stat().st_size > CODE_MAX_BYTES:
                text += f"\n… (truncated at {CODE_MAX_BYTES} bytes)"
            files.append((str(path.relative_to(root)), text))
        return files
