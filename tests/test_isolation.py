"""Composite components are graded with correct stand-ins for the components they call
(grader/checks/standins.py), and mistakes are named only when clearly separated (ctx.diagnose).

Each assignment gets an upstream mistake that is NOT in reference/*_mistakes.py, planted in a copy
of the reference: points are lost on that component only, the composites that call it keep full
marks, and `--only <composite>` scores the composite as the full run does."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from grader.checks import distance, distinct_digits, mismatch
from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics
from tests.conftest import lost_points, named_mistakes

REPO = Path(__file__).resolve().parents[1]


def _plant(tmp_path: Path, module: str, extra: str, name: str = "student") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / module).write_text((REPO / "reference" / module).read_text() + "\n\n# --- planted ---\n" + extra)
    return folder


def _grade(folder: Path, assignment: str, only: list[str]):
    rubric = available_rubrics()[assignment]
    return grade_submission(folder, rubric, GradeOptions(device="cpu", only=only, write_figures=False))


def _scores(result, component: str) -> dict[str, float]:
    return {t.check: t.score for t in result.tests if t.component == component}


# ---- one unknown upstream mistake per assignment ---------------------------------------------------

# (assignment, module, planted source, the upstream components it breaks, composites that call them)
UNKNOWN_UPSTREAM = [
    ("amortized-vs-lo", "amortized_vs_lo.py", """
def _log_prob_mean(self, x, z):  # averages over pixels instead of summing (not in the mutant library)
    p = torch.clamp(self(z), EPS, 1.0 - EPS)
    return (x * torch.log(p) + (1.0 - x) * torch.log(1.0 - p)).mean(-1)
BernoulliDecoder.log_prob = _log_prob_mean
""", ["decoder.log_prob"], ["elbo", "vae", "lo", "importance"]),
    ("vae", "vae.py", """
def log_normal_diag(x, mu, log_var, reduction=None, dim=None):  # the 1/2 dropped from the quadratic term
    log_p = -0.5 * LOG_2PI - 0.5 * log_var - torch.exp(-log_var) * (x - mu) ** 2
    return _reduce(log_p, reduction, dim)
""", ["log_normal_diag"], ["elbo", "encoder", "mog_prior.log_prob"]),
    ("kmeans-autoencoder", "kmeans_autoencoder.py", """
def squared_distances(x, centres):  # L1 distances, not squared Euclidean ones
    return (x[:, None, :] - centres[None, :, :]).abs().sum(dim=-1)
""", ["distances"], ["kmeans_loss", "assign", "minibatch_update"]),
    ("density-models", "density_models.py", """
def vae_elbo(x, probs, mu, log_var):  # the KL misses its -1 (a constant L/2 per example)
    p = torch.clamp(probs, EPS, 1.0 - EPS)
    log_lik = (x * torch.log(p) + (1.0 - x) * torch.log1p(-p)).flatten(start_dim=1).sum(dim=1)
    return log_lik - 0.5 * (torch.exp(log_var) + mu ** 2 - log_var).sum(dim=1)

_gmm_log_likelihood_ok = gmm_log_likelihood
def gmm_log_likelihood(X, weights, means, covs):  # off by log 2 (not in the mutant library)
    return _gmm_log_likelihood_ok(X, weights, means, covs) + math.log(2.0)
""", ["vae_elbo", "gmm.log_likelihood"], ["conv_vae.elbo", "gmm.em_step"]),
]


@pytest.mark.parametrize("assignment, module, extra, upstream, composites", UNKNOWN_UPSTREAM,
                         ids=[u[0] for u in UNKNOWN_UPSTREAM])
def test_unknown_upstream_mistake_costs_points_on_its_component_only(tmp_path, assignment, module, extra, upstream,
                                                                       composites):
    folder = _plant(tmp_path, module, extra)
    full = _grade(folder, assignment, upstream + composites)
    assert set(lost_points(full)) == set(upstream), [(t.check, t.output) for t in full.tests if t.score < t.max_score]
    alone = _grade(folder, assignment, [composites[0]])  # --only the first composite: the same score
    assert _scores(alone, composites[0]) == _scores(full, composites[0])
    assert not lost_points(alone)


# ---- honest diagnosis ----------------------------------------------------------------------------

def test_unknown_elbo_mistake_is_not_named_as_a_known_one(tmp_path):
    """An ELBO that subtracts twice the KL is wrong, but none of the library's mistakes: the
    feedback says what differs and names nothing (it used to say "the KL term has the wrong sign")."""
    folder = _plant(tmp_path, "amortized_vs_lo.py", '''
def elbo(decoder, x, mu, log_var):
    z = reparameterize(mu, log_var)
    return decoder.log_prob(x, z) - 2.0 * kl_standard_normal(mu, log_var)
''')
    result = _grade(folder, "amortized-vs-lo", ["elbo", "vae"])
    assert set(lost_points(result)) == {"elbo"}
    assert not named_mistakes(result)


def test_distance_is_in_tolerance_units_and_infinite_for_other_shapes_or_nan():
    assert distance(np.array([1.0, 2.0]), np.array([1.0, 2.0]), 1e-4, 1e-4) == 0.0
    assert distance(np.array([1.002]), np.array([1.0]), 0.0, 1e-3) == pytest.approx(2.0)
    assert distance(np.array([1.0]), np.array([1.0, 1.0]), 1e-4, 1e-4) == math.inf
    assert distance(np.array([np.nan]), np.array([1.0]), 1e-4, 1e-4) == math.inf
    assert distance(np.array([-np.inf]), np.array([-np.inf]), 1e-4, 1e-4) == 0.0


def test_mismatch_shows_enough_digits_to_tell_the_values_apart():
    msg = mismatch(np.array([-67.25871]), np.array([-67.25869]), 0.0, 1e-8)
    assert "got -67.25871, expected -67.25869" in msg
    assert distinct_digits(1.5, 2.5) == ("1.5", "2.5")


def test_mismatch_and_distance_agree_on_non_finite_values():
    """NaN matches only NaN and an infinity only the same infinity: a k-means update giving +inf where the
    known mistake `empty_cluster_nan` gives NaN was named that mistake (held-out seed 814869)."""
    nan, inf = np.nan, np.inf
    for got, want, same in [([inf, 1.0], [nan, 1.0], False), ([nan], [-inf], False), ([inf], [-inf], False),
                            ([-inf, 2.0], [-inf, 2.0], True), ([nan, 2.0], [nan, 2.0], True)]:
        got, want = np.array(got), np.array(want)
        assert (mismatch(got, want, 1e-4, 1e-4) is None) == same, (got, want)
        assert (distance(got, want, 1e-4, 1e-4) <= 1) == same, (got, want)
    assert "reference is finite" not in mismatch(np.array([nan]), np.array([-inf]), 0, 0)


class _Spec:
    id, component = "x.check", "x"


class _Mistake:
    def __init__(self, id):
        self.id, self.component, self.message = id, "x", id


class _Mutant:
    def __init__(self, id):
        self.component, self.fn = id, id


def _ctx(mistakes):
    from grader.checks import CheckContext

    ctx = CheckContext.__new__(CheckContext)
    ctx.spec = _Spec()
    ctx.rubric = type("R", (), {"mistakes": [_Mistake(m) for m in mistakes]})()
    ctx.mutants = {m: _Mutant(m) for m in mistakes}
    ctx.mistakes = []
    return ctx


def test_diagnose_reads_numpy_false_as_no_match():
    ctx = _ctx(["kl_wrong_sign"])
    assert ctx.diagnose(lambda p: np.bool_(False)) is None  # was read as a distance of 0
    assert ctx.diagnose(lambda p: np.bool_("kl_wrong_sign" in p)).id == "kl_wrong_sign"


def test_diagnose_names_only_a_clearly_separated_candidate():
    ctx = _ctx(["a", "b"])
    # the student's output is 0.5 tolerances from a's prediction, but b's is only 3 away: ambiguous
    assert ctx.diagnose(lambda p: {"a": 0.5, "b": 3.0}.get(next(iter(p), ""), 50.0)) is None
    # ... and 2 tolerances from the correct value: too close to call it a mistake
    assert ctx.diagnose(lambda p: {"a": 0.5, "b": 40.0}.get(next(iter(p), ""), 2.0)) is None
    named = ctx.diagnose(lambda p: {"a": 0.5, "b": 40.0}.get(next(iter(p), ""), 50.0))
    assert named is not None and named.id == "a"
    assert ctx.diagnose(lambda p: {"a": 1.5, "b": 40.0}.get(next(iter(p), ""), 50.0)) is None  # not within tolerance


def test_a_mistake_its_own_function_s_check_rules_out_is_named_by_no_other_check():
    from grader.charging import drop_ruled_out
    from grader.checks import Session
    from grader.results import TestResult

    def ctx_in(session, called):
        ctx = _ctx(["a", "b"])
        ctx.session, ctx.called = session, called
        return ctx

    # the check that called a's own function: 40 tolerances from a's prediction, 50 from the correct value and
    # from b's (b does not show here): the student does not make a; nothing is ruled out by an uncalled function
    session = Session()
    assert ctx_in(session, {"a"}).diagnose(lambda p: {"a": 40.0}.get(next(iter(p), ""), 50.0)) is None
    assert session.ruled_out == {"a": "x.check"}
    assert ctx_in(Session(), {"b"}).diagnose(lambda p: {"a": 40.0}.get(next(iter(p), ""), 50.0)) is None
    # a downstream check where a's prediction fits (relu for sigmoid, then clamped, looks like no sigmoid)
    fits = lambda p: {"a": 0.5, "b": 40.0}.get(next(iter(p), ""), 50.0)  # noqa: E731
    assert ctx_in(Session(), set()).diagnose(fits).id == "a"
    assert ctx_in(session, set()).diagnose(fits) is None
    # ... and when the downstream check ran first, its name is taken back
    t = TestResult(name="t", number="1", score=0.0, max_score=1.0, check="x.log_prob", component="x")
    t.mistakes, t.lost_by_cause = [{"id": "a", "message": "no sigmoid", "hint": ""}], {"mistake:a": 1.0}
    t.output = "0/1 case passed.\nDiagnosis: no sigmoid."
    ruling = TestResult(name="x: values", number="4.2", score=1.0, max_score=1.0, check="x.check", component="x")
    drop_ruled_out([t, ruling], session.ruled_out)
    assert t.mistakes == [] and t.lost_by_cause == {} and t.score == 0.0
    # the ruling check by the number the student reads, not its id
    assert "Diagnosis" not in t.output and "check 4.2 shows that your code does not make it" in t.output
    assert "x.check" not in t.output


# ---- the grader's side of upcalls: untrusted messages ----------------------------------------------

def _server(names=("kl_standard_normal", "log_px_importance", "BernoulliDecoder.log_prob")):
    import reference.amortized_vs_lo as ref
    from grader.checks.standins import StandInServer

    return StandInServer(ref, {}, "cpu", list(names))


def test_upcall_answers_with_the_reference_and_its_gradient():
    import torch

    import reference.amortized_vs_lo as ref

    mu, lv = np.array([[0.5, -1.0]], dtype="float32"), np.array([[0.2, -0.3]], dtype="float32")
    server = _server()
    reply = server({"upcall": {"name": "kl_standard_normal", "self": None, "grad": True, "kwargs": {},
                               "args": [{"__tensor__": mu, "leaf": 0}, {"__tensor__": lv, "leaf": 1}]}})
    tm, tl = torch.tensor(mu, requires_grad=True), torch.tensor(lv, requires_grad=True)
    want = ref.kl_standard_normal(tm, tl)
    assert reply["ok"] and reply["structure"] == "tensor"
    np.testing.assert_allclose(reply["outputs"][0], want.detach().numpy(), rtol=1e-6)
    back = server({"upcall_backward": {"tape": reply["tape"], "cotangents": [np.ones(1, dtype="float32")]}})
    g_mu, g_lv = torch.autograd.grad(want.sum(), [tm, tl])
    np.testing.assert_allclose(back["grads"][0], g_mu.numpy(), rtol=1e-6)
    np.testing.assert_allclose(back["grads"][1], g_lv.numpy(), rtol=1e-6)


def test_upcalls_outside_the_allowed_names_huge_sizes_and_unknown_objects_are_refused():
    server = _server()
    assert not server({"upcall": {"name": "elbo", "args": []}})["ok"]  # not a stand-in of this check
    big = server({"upcall": {"name": "log_px_importance", "self": None, "args": [None, None, 10 ** 12]}})
    assert not big["ok"] and "larger than the grader allows" in big["error"]
    unknown = server({"upcall": {"name": "BernoulliDecoder.log_prob", "self": {"__handle__": "nobody"}, "args": []}})
    assert unknown == {"ok": False, "fallback": True}  # the child runs the student's own code instead
