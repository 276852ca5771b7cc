"""Signatures by role (grader/signatures.py, grader/checks/interface.py): the grader's
template-style calls are mapped onto the student's own parameters; interface variants of every
assignment's correct example keep full marks; a parameter the template requires and the student
lacks is charged once, in the `interface` check, never in the maths checks."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from grader.checks.standins import _as_reference_call
from grader.engine import GradeOptions, grade_submission
from grader.signatures import Unbound, bind, call, read_signature
from grader.mutation.validity import EXAMPLES
from grader.mutation.variants import variants
from grader.rubric import available_rubrics, lint_rubric

REPO = Path(__file__).resolve().parents[1]
RUBRICS = available_rubrics()


def _template(x, y, k=10, how="per_digit", seed=0):
    return (x, y, k, how, seed)


def _call(student, *args, **kwargs):
    a, kw, _ = bind(read_signature(_template), read_signature(student), args, kwargs)
    return student(*a, **kw)


# ---- binding (pure) --------------------------------------------------------------------------------

def test_renamed_parameters_are_passed_by_position():
    def student(data, labels, n_clusters=10, method="per_digit", random_state=0):
        return (data, labels, n_clusters, method, random_state)
    assert _call(student, 1, 2, k=3, how="random", seed=5) == (1, 2, 3, "random", 5)


def test_reordered_keywords_are_passed_by_name():
    def student(x, y, k=10, seed=0, how="per_digit"):
        return (x, y, k, how, seed)
    assert _call(student, 1, 2, 3, "random", 5) == (1, 2, 3, "random", 5)


def test_positional_only_parameters_get_positions_and_gaps_take_the_students_default():
    def student(x, y, k=10, how="per_digit", seed=0, /):
        return (x, y, k, how, seed)
    assert _call(student, 1, 2, seed=4) == (1, 2, 10, "per_digit", 4)


def test_a_missing_parameter_is_left_out_at_its_default_and_unbound_otherwise():
    def student(x, y, k=10, seed=0):
        return (x, y, k, seed)
    assert _call(student, 1, 2, 3, "per_digit", 7) == (1, 2, 3, 7)
    with pytest.raises(Unbound) as e:
        _call(student, 1, 2, 3, "random", 7)
    assert e.value.missing == ["how"]


def test_instance_and_static_methods_read_alike():
    class A:
        def m(self, mu, log_var):
            return mu

        @staticmethod
        def s(mu, log_var):
            return mu
    assert read_signature(A.m, A, "m")["params"] == read_signature(A.s, A, "s")["params"] == ["mu", "log_var"]


def test_gradient_paths_follow_the_arguments():
    def student(z, a_mu, a_lv, /):
        return z
    _, _, where = bind(read_signature(lambda x, mu, log_var: 0), read_signature(student), [1], {"mu": 2, "log_var": 3})
    assert where == {"x": "args.0", "mu": "args.1", "log_var": "args.2"}


def test_harness_call_maps_renamed_keywords_and_falls_back_to_the_call_as_written():
    def student(data, labels, n_clusters=10, method="per_digit", random_state=0):
        return (n_clusters, method, random_state)
    assert call(student, ["x", "y", "k", "how", "seed"], 1, 2, k=3, how="random", seed=4) == (3, "random", 4)
    with pytest.raises(TypeError):  # cannot be mapped: the student's own TypeError says what is wrong
        call(lambda x: x, ["x", "y"], 1, y=2)

    def without_how(x, y, k=10, seed=0):  # the per-digit run of the course loop still works
        return (k, seed)
    assert call(without_how, _template, 1, 2, k=3, how="per_digit", seed=4) == (3, 4)


def test_a_students_own_upstream_call_is_mapped_onto_the_reference():
    """A composite calling the student's renamed upstream function by keyword reaches the reference's stand-in."""
    from reference import kmeans_autoencoder as ref

    def init_centres(x, y, k_arg=10, how_arg="per_digit", seed_arg=0):
        pass
    args, kwargs = _as_reference_call(ref, "init_centres", read_signature(init_centres), ["x", "y"],
                                      {"k_arg": 3, "seed_arg": 1})
    assert (args, kwargs) == (["x", "y", 3], {"seed": 1})


def test_malformed_student_signatures_leave_the_call_alone():
    from reference import kmeans_autoencoder as ref
    assert _as_reference_call(ref, "assign", {"params": ["x"], "kinds": None}, [1, 2], {}) == ([1, 2], {})


# ---- rubrics and variants (pure) -----------------------------------------------------------------------

@pytest.mark.parametrize("assignment", sorted(RUBRICS))
def test_every_rubric_declares_an_interface_table_that_fits_the_reference(assignment):
    rubric = RUBRICS[assignment]
    # arm-transformer grades one class whose template fixes `forward(x, causal=True)`: its checks judge the
    # signature themselves (block.shapes), so it declares no [interface] table
    assert (rubric.interface and "interface" in rubric.components) or assignment == "arm-transformer"
    assert lint_rubric(rubric) == []


EXPECTED_VARIANTS = {
    "amortized-vs-lo": {"rename-parameters", "extra-buffer", "rename-optional-parameters", "positional-only"},
    "density-models": {"rename-parameters", "extra-buffer", "rename-optional-parameters", "positional-only"},
    "kmeans-autoencoder": {"rename-parameters", "extra-buffer", "rename-optional-parameters", "positional-only",
                           "keyword-order", "without-optional-parameters"},
}


@pytest.mark.parametrize("assignment", sorted(EXPECTED_VARIANTS))
def test_signature_variants_are_generated_and_compile(assignment):
    rubric = RUBRICS[assignment]
    text = (REPO / "submissions" / EXAMPLES[assignment] / rubric.module).read_text()
    out = {v.id: v.text for v in variants(rubric, text)}
    assert EXPECTED_VARIANTS[assignment] <= set(out), sorted(out)
    for vid, src in out.items():
        compile(src, f"{assignment}:{vid}", "exec")
        assert ast.unparse(ast.parse(src)) != ast.unparse(ast.parse(text)), vid


# ---- graded in the sandbox ---------------------------------------------------------------------------

def _grade(tmp_path, assignment: str, src: str, only: list[str]):
    rubric = RUBRICS[assignment]
    folder = tmp_path / re.sub(r"\W+", "_", assignment)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / rubric.module).write_text(src)
    result = grade_submission(folder, rubric, GradeOptions(device="cpu", only=only))
    lost = {t.check: round(t.max_score - t.score, 4) for t in result.tests if t.score < t.max_score}
    return result, lost


def _variant(assignment: str, vid: str) -> str:
    rubric = RUBRICS[assignment]
    text = (REPO / "submissions" / EXAMPLES[assignment] / rubric.module).read_text()
    return next(v.text for v in variants(rubric, text) if v.id == vid)


@pytest.mark.parametrize("assignment, variant, only", [
    ("kmeans-autoencoder", "keyword-order", ["init_centres", "interface"]),
    ("kmeans-autoencoder", "without-optional-parameters", ["confusion", "interface"]),
    ("density-models", "rename-optional-parameters", ["gmm.em_step", "interface"]),
])
def test_signature_variant_keeps_full_marks(tmp_path, assignment, variant, only):
    result, lost = _grade(tmp_path, assignment, _variant(assignment, variant), only)
    assert result.tests and not lost, [(t.check, t.output) for t in result.tests if t.score < t.max_score]


def _sub(src: str, old: str, new: str) -> str:
    out = re.sub(old, new, src)
    assert out != src, old
    return out


MISSING_REQUIRED = {
    # (assignment, rewrite of the example, components graded, the parameter named in the interface check)
    "init_centres without `how`": ("kmeans-autoencoder", lambda s: _sub(
        _sub(s, r"def init_centres\(x, y, k=10, how=\"per_digit\", seed=0\):", "def init_centres(x, y, k=10, seed=0):"),
        r"\n    if how == \"random\":\n[^\n]*\n", "\n    how = \"per_digit\"\n"), ["init_centres", "interface"], "how"),
    "gmm_em_step without `reg`": ("density-models", lambda s: _sub(
        _sub(s, r"def gmm_em_step\(X, weights, means, covs, reg=1e-6\):", "def gmm_em_step(X, weights, means, covs):"),
        r"\breg \*", "1e-6 *"), ["gmm.em_step", "interface"], "reg"),
    "log_px_importance without `idx`": ("amortized-vs-lo", lambda s: _sub(
        s, r"def log_px_importance\(model, x, M, idx=None\):", "def log_px_importance(model, x, M):\n    idx = None"),
        ["importance", "interface"], "idx"),
}


@pytest.mark.parametrize("case", sorted(MISSING_REQUIRED))
def test_missing_required_parameter_is_charged_once_in_the_interface_check(tmp_path, case):
    assignment, rewrite, only, param = MISSING_REQUIRED[case]
    rubric = RUBRICS[assignment]
    src = rewrite((REPO / "submissions" / EXAMPLES[assignment] / rubric.module).read_text())
    result, lost = _grade(tmp_path, assignment, src, only)
    assert set(lost) == {"interface"}, [(t.check, t.output) for t in result.tests if t.score < t.max_score]
    text = next(t.output for t in result.tests if t.check == "interface")
    assert f"`{param}`" in text, text
    notes = " ".join(t.output for t in result.tests if t.check != "interface")
    assert "charged once in the interface check" in notes and "Traceback" not in notes, notes


def _without_k(src: str, body: str) -> str:
    """The example's `confusion`, without its `k` parameter, its body replaced by `body`."""
    start = src.index("def confusion(assignments, labels, k, n_classes=10):")
    end = src.find("\ndef ", start + 10)
    return src[:start] + f"def confusion(assignments, labels, n_classes=10):\n{body}\n" + (src[end:] if end > 0 else "")


def test_a_check_none_of_whose_cases_can_be_judged_is_judged_without_the_parameter(tmp_path):
    """Every case of confusion.values passes `k`. Lacking `k` used to make the whole check 'not applicable'
    (full marks), so `raise NotImplementedError` scored its point; now the check is run again calling the
    function without `k`: a body hard-coding the course's 10 clusters is right where k = 10 and keeps the
    point, a body that does not work gets nothing. The missing `k` itself costs the interface check, once."""
    rubric = RUBRICS["kmeans-autoencoder"]
    src = (REPO / "submissions" / EXAMPLES["kmeans-autoencoder"] / rubric.module).read_text()
    example = src[src.index("def confusion("):]
    example_body = example[example.index("\n") + 1:example.find("\ndef ") if "\ndef " in example else None]
    honest = _without_k(src, "    k = 10\n" + example_body)
    broken = _without_k(src, "    raise NotImplementedError")
    result, lost = _grade(tmp_path / "honest", "kmeans-autoencoder", honest, ["confusion", "interface"])
    assert set(lost) == {"interface"}, [(t.check, t.output) for t in result.tests if t.score < t.max_score]
    result, lost = _grade(tmp_path / "broken", "kmeans-autoencoder", broken, ["confusion", "interface"])
    assert lost.get("confusion.values") == 1.0 and "interface" in lost, lost
    text = next(t.output for t in result.tests if t.check == "confusion.values")
    assert "NotImplementedError" in text and "without it" in text, text
