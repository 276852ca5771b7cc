"""Tests of the `arm-transformer` assignment (scaffolded by `grade new`; extend them with the assignment).

The grader is honest only if a wrong implementation loses points: every mutant is planted in a copy
of the reference and must cost points on its own component and be named in the feedback.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest

from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics, lint_rubric
from reference.arm_transformer_mistakes import MUTANTS

REPO = Path(__file__).resolve().parents[1]
MODULE = "arm_transformer.py"


@pytest.fixture(scope="module")
def rubric():
    return available_rubrics()["arm-transformer"]


def _planted(mutant) -> str:
    src = textwrap.dedent(inspect.getsource(mutant.fn))
    body = re.sub(r"def \w+\(", "def _planted(", "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("@")), count=1)
    owner, _, attr = mutant.component.rpartition(".")
    install = f"{owner}.{attr} = _planted" if owner else f"{attr} = _planted"
    return f"\n\n# --- planted mistake: {mutant.id} ---\n{body}\n{install}\n"


def test_rubric_lints(rubric):
    assert lint_rubric(rubric) == []


def test_example_gets_full_marks(rubric):
    result = grade_submission(REPO / "submissions" / "arm-transformer-example", rubric, GradeOptions(device="cpu"))
    assert not result.errors, result.errors
    assert result.autograded_score == result.autograded_max, [t.output for t in result.tests if t.status != "passed"]


@pytest.mark.parametrize("mistake_id", sorted(MUTANTS))
def test_each_mistake_costs_points_on_its_component_and_is_named(tmp_path, rubric, mistake_id):
    mutant = MUTANTS[mistake_id]
    component = next(m.component for m in rubric.mistakes if m.id == mistake_id)
    (tmp_path / MODULE).write_text((REPO / "reference" / MODULE).read_text() + _planted(mutant))
    result = grade_submission(tmp_path, rubric, GradeOptions(device="cpu"))
    lost = {t.component for t in result.tests if t.score < t.max_score}
    assert lost == {component}, [(t.check, t.output) for t in result.tests if t.score < t.max_score]
    assert mistake_id in {m["id"] for t in result.tests for m in t.mistakes}
