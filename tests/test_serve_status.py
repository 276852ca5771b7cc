"""The web overview's status column: 'failed' means the grading broke (a grader error), never that the
student's code raised (carol's completed grading, with exceptions in her code, is 'graded' once her answers are)."""

from __future__ import annotations

from grader.results import GradeResult, QuestionResult, save_result
from grader.results import TestResult as Check
from grader.serve.app import open_classroom, overview_rows


def _result(student: str, error: str, errors: list[str]) -> GradeResult:
    return GradeResult(student=student, assignment="vae", graded_at="2026-11-22T22:50:00+00:00", errors=errors,
                       tests=[Check("log_categorical", "5.1", 0.0, 1.5, error=error, component="log_categorical")],
                       questions=[QuestionResult("Q1", "t", 1.0, "answer", 1.0)])


def test_student_code_errors_are_graded_and_grader_errors_are_failed(tmp_path):
    save_result(_result("carol", "exception", []), tmp_path)
    save_result(_result("mallory", "internal", ["internal error in log_categorical: Traceback ..."]), tmp_path)
    classroom, store = open_classroom(tmp_path)
    try:
        status = {row["student"]: row["status"] for row in overview_rows(classroom, store)}
    finally:
        store.close()
    assert status == {"carol": "graded", "mallory": "failed"}
