"""The results of grading one submission, and their on-disk form.

`results.json` follows Gradescope's autograder schema (top level: `score`, `max_score`,
`execution_time`, `output`, `tests`; each test: `name`, `number`, `score`, `max_score`,
`status`, `output`, `tags`, `visibility`) so the same file feeds Gradescope, the gradebook
and the report. gradekit's own data rides in `extra_data`, which Gradescope ignores:
see docs/results-format.md for every field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grader.fileio import write_atomic
from grader.glossary import fmt_points

SCHEMA_VERSION = 1


@dataclass
class TestResult:
    """One graded check. `score` is in [0, max_score]; `status` is 'passed' or 'failed'."""

    name: str
    number: str
    score: float
    max_score: float
    output: str = ""
    tags: list[str] = field(default_factory=list)
    visibility: str = "visible"  # Gradescope: visible | hidden | after_due_date | after_published
    check: str = ""  # the check's id in the rubric
    component: str = ""  # the reference component it judges (also the first tag)
    mistakes: list[dict] = field(default_factory=list)  # [{id, message, hint}] diagnosed known mistakes
    hint: str = ""
    error: str = ""  # kind of failure when the student's code did not run: exception|timeout|crash|...
    duration: float = 0.0
    # one root cause seen by several checks of a component is charged once (grader/charging.py):
    # [{"cause", "charged_in", "seen_by": [check ids]}] for each such cause this check saw
    charged_once: list[dict] = field(default_factory=list)
    lost_by_cause: dict = field(default_factory=dict, repr=False)  # cause -> points lost to it (grading only)

    @property
    def status(self) -> str:
        return "passed" if self.score >= self.max_score - 1e-9 else "failed"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "number": self.number,
            "score": round(self.score, 4),
            "max_score": self.max_score,
            "status": self.status,
            "output": self.output,
            "tags": list(self.tags),
            "visibility": self.visibility,
            "extra_data": {
                "check": self.check,
                "component": self.component,
                "mistakes": self.mistakes,
                "hint": self.hint,
                "error": self.error,
                "duration": round(self.duration, 4),
                **({"charged_once": self.charged_once} if self.charged_once else {}),
            },
        }

    @classmethod
    def from_json(cls, d: dict) -> "TestResult":
        extra = d.get("extra_data", {}) or {}
        return cls(
            name=d["name"], number=d.get("number", ""), score=float(d["score"]),
            max_score=float(d["max_score"]), output=d.get("output", ""), tags=list(d.get("tags", [])),
            visibility=d.get("visibility", "visible"), check=extra.get("check", ""),
            component=extra.get("component", ""), mistakes=list(extra.get("mistakes", [])),
            hint=extra.get("hint", ""), error=extra.get("error", ""), duration=float(extra.get("duration", 0.0)),
            charged_once=list(extra.get("charged_once", [])),
        )


@dataclass
class QuestionResult:
    """A written question: the student's answer text and, once an instructor enters it, a manual score."""

    id: str  # "Q1"
    title: str
    max_score: float
    answer: str | None  # Markdown, None when the student gave no answer
    score: float | None = None  # None until graded by hand
    comment: str = ""


@dataclass
class GradeResult:
    student: str
    assignment: str
    tests: list[TestResult]
    questions: list[QuestionResult] = field(default_factory=list)
    execution_time: float = 0.0
    grader_version: str = ""
    submission_hash: str = ""
    rubric_hash: str = ""  # sha256 of the rubric file: a changed rubric means a regrade
    graded_at: str = ""  # ISO 8601, UTC
    device: str = "cpu"
    sandbox: dict = field(default_factory=dict)  # protections that were active: {name: bool|str}
    student_output: str = ""  # captured stdout/stderr of the student's code, truncated; quote, never interpret
    errors: list[str] = field(default_factory=list)  # submission-level problems (e.g. module failed to import)
    figures: list[dict] = field(default_factory=list)  # [{path (relative to results dir), caption, tag}]
    metrics: dict = field(default_factory=dict)  # model-level numbers, e.g. {"nll": {"student": .., "reference": ..}}
    metric_info: dict = field(default_factory=dict)  # how each metric is shown: {key: grader.metrics.Metric.to_json()}
    submission: dict = field(default_factory=dict)  # what was handed in: module_from, left_out, answers_from, figures (grader.submission)
    inputs_secret: str = ""  # the per-run secret the checks' inputs were derived from (grader.checks.inputs); `--seed` regrades the same

    @property
    def autograded_score(self) -> float:
        return sum(t.score for t in self.tests)

    @property
    def autograded_max(self) -> float:
        return sum(t.max_score for t in self.tests)

    @property
    def score(self) -> float:
        return self.autograded_score + sum(q.score or 0.0 for q in self.questions)

    @property
    def max_score(self) -> float:
        return self.autograded_max + sum(q.max_score for q in self.questions)

    def to_json(self) -> dict:
        return {
            "score": round(self.score, 4),
            "max_score": self.max_score,
            "execution_time": round(self.execution_time, 3),
            "output": self.summary_line(),
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": [t.to_json() for t in self.tests],
            "extra_data": {
                "gradekit": {
                    "schema": SCHEMA_VERSION,
                    "student": self.student,
                    "assignment": self.assignment,
                    "grader_version": self.grader_version,
                    "submission_hash": self.submission_hash,
                    "rubric_hash": self.rubric_hash,
                    "graded_at": self.graded_at,
                    "device": self.device,
                    "sandbox": self.sandbox,
                    "autograded_score": round(self.autograded_score, 4),
                    "autograded_max": self.autograded_max,
                    "questions": [asdict(q) for q in self.questions],
                    "student_output": self.student_output,
                    "errors": self.errors,
                    "figures": self.figures,
                    "metrics": strict_numbers(self.metrics),
                    "metric_info": self.metric_info,
                    "submission": self.submission,
                    "inputs_secret": self.inputs_secret,
                }
            },
        }

    def summary_line(self) -> str:
        pending = [q.id for q in self.questions if q.score is None]
        text = f"{self.student}: {fmt_points(self.score)}/{fmt_points(self.max_score)} on {self.assignment}"
        if pending:
            text += f" (written answers {', '.join(pending)} not graded yet)"
        return text

    @classmethod
    def from_json(cls, d: dict) -> "GradeResult":
        g = d.get("extra_data", {}).get("gradekit", {})
        return cls(
            student=g.get("student", ""), assignment=g.get("assignment", ""),
            tests=[TestResult.from_json(t) for t in d.get("tests", [])],
            questions=[QuestionResult(**q) for q in g.get("questions", [])],
            execution_time=float(d.get("execution_time", 0.0)), grader_version=g.get("grader_version", ""),
            submission_hash=g.get("submission_hash", ""), rubric_hash=g.get("rubric_hash", ""), graded_at=g.get("graded_at", ""),
            device=g.get("device", "cpu"), sandbox=g.get("sandbox", {}), student_output=g.get("student_output", ""),
            errors=list(g.get("errors", [])), figures=list(g.get("figures", [])), metrics=dict(g.get("metrics", {})),
            metric_info=dict(g.get("metric_info", {})),
            submission=dict(g.get("submission", {})),
            inputs_secret=str(g.get("inputs_secret", "")),
        )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of either."""
    write_atomic(path, json.dumps(data, indent=2, allow_nan=False, default=_jsonable))


def strict_numbers(obj: Any) -> Any:
    """`obj` with every non-finite number written as text ("nan", "inf", "-inf"): results.json is strict
    JSON, and a model-level metric of a broken model is NaN (k-means centres that became NaN crashed
    `grade run` while writing results.json). Numpy and torch scalars are unwrapped."""
    if isinstance(obj, dict):
        return {k: strict_numbers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_numbers(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0 and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def save_result(result: GradeResult, out_dir: Path) -> Path:
    """Write `out_dir/<student>/results.json` atomically; return its path."""
    path = Path(out_dir) / result.student / "results.json"
    write_json_atomic(path, result.to_json())
    return path


def load_result(path: Path) -> GradeResult:
    """Read a results.json written by `save_result` (a folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    with open(path, encoding="utf-8") as f:
        return GradeResult.from_json(json.load(f))
