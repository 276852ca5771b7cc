"""Every assignment, tested on the day it is added: a flat list of small `check_<property>(rubric)` functions
(as scikit-learn's `parametrize_with_checks` runs estimator checks), each run on every rubric under rubrics/.

An assignment registers itself in its rubric: `examples` (folders under submissions/ that get full marks) and
`probe` (the function that runs its components in process, for mutation testing). Nothing here names an
assignment; a new rubric file is picked up as it is. Assertion messages say what was expected.
"""

from __future__ import annotations

import importlib

import pytest

from grader.rubric import available_rubrics, lint_rubric

RUBRICS = available_rubrics()


def check_lints_clean(rubric):
    problems = lint_rubric(rubric)
    assert not problems, f"{rubric.id}: `grade lint-rubric` problems: {problems}"


def check_names_an_example_that_fits(rubric):
    from grader.submission import fits

    assert rubric.examples, f"{rubric.id}: [assignment] examples must name at least one correct example submission"
    for folder in rubric.example_paths():
        assert folder.is_dir() and fits(folder, rubric), f"{rubric.id}: example {folder} does not hold {rubric.module}"


def check_every_check_function_is_used(rubric):
    module = importlib.import_module(rubric.checks_module)
    defined = {n[len("check_"):] for n in dir(module) if n.startswith("check_") and callable(getattr(module, n))}
    unused = defined - {c.check for c in rubric.checks}
    assert not unused, f"{rubric.id}: check functions no [[checks]] entry uses: {sorted('check_' + n for n in unused)}"


def check_components_have_one_kind_and_a_runner(rubric):
    from grader.checks.runners import RUNNERS

    def how(kind):  # what the engine decides by kind: unit and property checks of one component may mix
        return kind.isolated, kind.trains, kind.mutable

    for spec in rubric.checks:
        assert spec.kind in RUNNERS, f"{rubric.id}: check {spec.id} has kind {spec.kind!r}, which no runner runs"
        assert how(rubric.kind_of(spec.component)) == how(spec.kind_info), \
            f"{rubric.id}: component {spec.component} mixes kinds that run differently ({spec.kind})"


def check_probe_is_deterministic_on_the_reference(rubric):
    if not rubric.probe:
        pytest.skip(f"{rubric.id} names no probe: mutation testing (bench_validity) cannot run on it")
    from grader.mutation.probes import same_behaviour

    probe, ref = rubric.probe_function(), importlib.import_module(rubric.reference)
    first, again = probe(ref), probe(ref)
    assert first, f"{rubric.id}: the probe {rubric.probe} recorded nothing"
    assert same_behaviour(first, again), f"{rubric.id}: the probe {rubric.probe} gives other values on a second run"


@pytest.mark.slow  # every mutant through the probe: up to a few minutes per assignment under load
def check_every_known_mistake_changes_the_probe(rubric):
    """A mutant the probe cannot tell from the reference is a mistake the mutation bench cannot plant."""
    if not rubric.probe or not rubric.mistakes_module:
        pytest.skip(f"{rubric.id} names no probe or no mistakes module")
    from grader.mutation.probes import same_behaviour

    ref = importlib.import_module(rubric.reference)
    mutants = getattr(importlib.import_module(rubric.mistakes_module), "MUTANTS", {})
    probe = rubric.probe_function()
    baseline = probe(ref)
    silent = []
    for mid, mutant in mutants.items():
        *path, leaf = mutant.component.split(".")
        owner = ref
        for p in path:
            owner = getattr(owner, p)
        original = owner.__dict__[leaf] if isinstance(owner, type) else getattr(owner, leaf)
        fn = staticmethod(mutant.fn) if isinstance(owner, type) and isinstance(original, staticmethod) else mutant.fn
        setattr(owner, leaf, fn)
        try:
            if same_behaviour(baseline, probe(ref)):
                silent.append(mid)
        finally:
            setattr(owner, leaf, original)
    assert not silent, f"{rubric.id}: mutants the probe cannot tell from the reference: {silent}"


@pytest.mark.slow  # grades each example's unit checks in the sandbox (10-40 s each under load)
def check_examples_get_full_marks_on_every_unit_check(rubric):
    from grader.engine import GradeOptions, grade_submission

    only = rubric.components_where(lambda k: not k.trains)
    for folder in rubric.example_paths():
        result = grade_submission(folder, rubric, GradeOptions(device="cpu", only=only, write_figures=False))
        lost = {t.check: t.output for t in result.tests if t.score < t.max_score}
        assert not lost, f"{rubric.id}: the example {folder.name} lost points: {lost}"


CHECKS = [check_lints_clean, check_names_an_example_that_fits, check_every_check_function_is_used,
          check_components_have_one_kind_and_a_runner, check_probe_is_deterministic_on_the_reference,
          check_every_known_mistake_changes_the_probe, check_examples_get_full_marks_on_every_unit_check]


def _cases():
    for rubric in RUBRICS.values():
        for check in CHECKS:
            marks = [pytest.mark.slow] if getattr(check, "pytestmark", None) else []
            yield pytest.param(rubric, check, id=f"{rubric.id}-{check.__name__}", marks=marks)


@pytest.mark.parametrize("rubric, check", list(_cases()))
def test_assignment(rubric, check):
    check(rubric)
