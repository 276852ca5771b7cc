"""`grade run --only <component>` scores every check exactly as the full run does.

A composite's score must depend on its own code only (docs/grading.md, "Isolation"), so selecting
one component cannot change what any of its checks earns. For every bundled example submission
with unit checks, correct and buggy, each component is graded alone (the engine API, as
`--only` does) and compared check by check with the full unit-check run.
"""

from __future__ import annotations

import pytest

from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics
from tests.conftest import SUBMISSIONS, unit_tags

EXAMPLES = {  # submission -> assignment (judy and ken are alice's and bob's code in a notebook)
    "alice": "vae", "bob": "vae", "carol": "vae",
    "dana": "kmeans-autoencoder", "eve": "kmeans-autoencoder",
    "frank": "density-models", "grace": "density-models",
    "heidi": "amortized-vs-lo", "ivan": "amortized-vs-lo",
}


def _scores(result) -> dict[str, float]:
    return {t.check: round(t.score, 4) for t in result.tests}


@pytest.mark.slow  # every component of nine submissions graded alone: about a minute per submission under load
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_only_one_component_scores_each_check_as_the_full_run(name):
    rubric = available_rubrics()[EXAMPLES[name]]
    tags = unit_tags(rubric)
    secret = "0" * 32  # one set of check inputs for every grading compared (grader/checks/inputs.py)
    full = _scores(grade_submission(SUBMISSIONS / name, rubric, GradeOptions(device="cpu", only=tags, secret=secret)))
    differ = {}
    for tag in tags:
        alone = _scores(grade_submission(SUBMISSIONS / name, rubric, GradeOptions(device="cpu", only=[tag],
                                                                                  secret=secret)))
        assert alone, f"--only {tag} graded nothing"
        differ.update({f"--only {tag}: {check}": (full[check], score) for check, score in alone.items()
                       if score != full.get(check)})
    assert not differ, f"{name}: (full run, alone) per check: {differ}"
