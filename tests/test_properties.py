"""Declared properties (rubric [properties], grader/checks/properties.py) and one root cause charged once
(grader/charging.py).

The graded cases are the six mistakes that no value check of their component saw (issue 20), each planted
by a one-line edit into the assignment's correct example: each must cost its component's property check
and nothing else of that component beyond what the value checks already charged; the examples keep full
marks on every property check.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from grader.charging import charge_once
from grader.engine import GradeOptions, grade_submission
from grader.results import TestResult as Result  # (not a test class)
from grader.rubric import RubricError, available_rubrics, lint_rubric, load_rubric

REPO = Path(__file__).resolve().parents[1]
RUBRICS = available_rubrics()


# ---- declarations ---------------------------------------------------------------------------------

def test_every_graded_component_of_every_assignment_declares_its_properties():
    for rubric in RUBRICS.values():
        assert lint_rubric(rubric) == [], rubric.id
        for tag in rubric.component_targets:
            if tag != "model":
                assert tag in rubric.properties, (rubric.id, tag)
        declared = {(c, p) for c, d in rubric.properties.items() for p in d}
        generated = {(s.component, s.check) for s in rubric.checks if s.kind == "property"}
        assert declared == generated, rubric.id
        assert generated or all(not d for d in rubric.properties.values()), rubric.id


def _rubric_text(properties: str) -> str:
    base = (REPO / "rubrics" / "vae.toml").read_text()
    return base[: base.index("[properties]")] + properties


def test_a_component_without_a_declaration_is_a_lint_error(tmp_path):
    text = _rubric_text("[properties]\nlog_normal_diag = { pure = true }\n")
    (tmp_path / "vae.toml").write_text(text)
    problems = lint_rubric(load_rubric(tmp_path / "vae.toml"))
    assert any("'decoder' declares no properties" in p for p in problems), problems


@pytest.mark.parametrize("entry, message", [
    ("log_normal_diag = { smooth = true }", "unknown propert"),
    ("log_normal_diag = { differentiable = true }", "lists the inputs"),
    ("log_normal_diag = { none = \"\" }", "takes a reason"),
    ("nosuch = { pure = true }", "no component"),
])
def test_bad_declarations_say_what_to_fix(tmp_path, entry, message):
    (tmp_path / "vae.toml").write_text(_rubric_text(f"[properties]\n{entry}\n"))
    with pytest.raises(RubricError, match=message):
        load_rubric(tmp_path / "vae.toml")


def test_a_parameter_under_other_names_is_matched_to_its_own_network_or_to_none():
    from grader.checks.properties import _same_parameter

    # a decoder net kept as `decoder_net` and `net` is listed once, under its first name: its bias is the decoder's,
    # not the encoder's bias of the same shape (compared so, the correct gradient looked wrong)
    assert _same_parameter("decoder.net.0.bias", ["encoder.net.0.bias", "decoder.decoder_net.0.bias"]) == \
        ["decoder.decoder_net.0.bias"]
    assert _same_parameter("decoder.0.weight", ["decoder_net.0.weight"]) == ["decoder_net.0.weight"]
    assert _same_parameter("decoder.0.weight", ["decoder_net.weight"]) == []  # never a bare ".weight"
    assert _same_parameter("encoder.net.0.weight", ["enc.net.0.weight", "dec.net.0.weight"]) == []  # ambiguous


# ---- charged once ---------------------------------------------------------------------------------

def _test(check, points, score, causes, component="c", number="1"):
    t = Result(name=check, number=number, score=score, max_score=points, check=check, component=component)
    t.lost_by_cause = causes
    return t


def test_one_cause_seen_by_several_checks_is_charged_once_at_the_largest_loss():
    values = _test("c.values", 2, 0.0, {"mistake:m": 2.0}, number="2.1")
    values.mistakes = [{"id": "m", "message": "log-density misses −½·log 2π", "hint": ""}]
    reductions = _test("c.reductions", 1, 0.0, {"mistake:m": 1.0}, number="2.2")
    extremes = _test("c.extremes", 1, 0.5, {"mistake:m": 0.5}, number="2.3")
    other = _test("d.values", 1, 0.0, {"mistake:m": 1.0}, component="d")  # another component: its own charge
    unknown = _test("c.gradients", 1, 0.0, {})  # no known cause: never refunded
    charge_once([values, reductions, extremes, other, unknown])
    assert (values.score, reductions.score, extremes.score, other.score, unknown.score) == (0.0, 1.0, 1.0, 0.0, 0.0)
    # in the student's words: check numbers and the mistake's message, never an id
    assert "Charged once, here: the same mistake (log-density misses −½·log 2π) also fails checks 2.2 and 2.3" \
        in values.output
    assert "(1 point given back)" in reductions.output and "charged once, in check 2.1" in reductions.output
    assert not any(i in t.output for t in (values, reductions, extremes) for i in ("c.values", "c.reductions", "`m`"))
    assert reductions.charged_once == [{"cause": "mistake:m", "charged_in": "c.values",
                                        "seen_by": ["c.values", "c.reductions", "c.extremes"]}]
    assert "charged_once" in reductions.to_json()["extra_data"]


def test_a_tie_is_charged_in_the_property_s_own_check():
    a = _test("c.property.differentiable", 0.25, 0.0, {"pure": 0.25})
    b = _test("c.property.pure", 0.25, 0.0, {"pure": 0.25})
    charge_once([a, b])
    assert (a.score, b.score) == (0.25, 0.0)


# ---- grading: the mistakes nobody listed -------------------------------------------------------------

def _planted(tmp_path: Path, example: str, module: str, old: str, new: str) -> Path:
    root = tmp_path / f"{example}_planted"
    shutil.copytree(REPO / "submissions" / example, root)
    src = (root / module).read_text()
    assert old in src, "the example changed: update the planted edit"
    (root / module).write_text(src.replace(old, new, 1))
    return root


UNSEEN = [  # (assignment, example, module, component, property, old, new)
    ("vae", "alice", "vae.py", "decoder", "differentiable", "        h = self.decoder(z)\n",
     "        h = torch.from_numpy(self.decoder(z).detach().cpu().numpy())\n"),
    ("vae", "alice", "vae.py", "mog_prior.sample", "stochastic", "    def sample(self, batch_size):\n",
     "    def sample(self, batch_size):\n        torch.manual_seed(0)\n"),
    ("vae", "alice", "vae.py", "decoder", "stochastic", "    def sample(self, z):\n",
     "    def sample(self, z):\n        torch.manual_seed(0)\n"),  # the held-out bench's escape (seed 302843)
    # z detached inside log q(z|x): the encoder's parameters still get gradients (through mu and log_var), wrong
    # ones (held-out bench, seed 507853: the property checked only that they exist)
    ("vae", "alice", "vae.py", "encoder", "differentiable", "            z = self.sample(mu_e=mu_e, log_var_e=log_var_e)\n",
     "            z = self.sample(mu_e=mu_e, log_var_e=log_var_e).detach()\n"),
    ("vae", "alice", "vae.py", "mog_prior.sample", "dtype",  # held-out bench, seed 780458
     "        return self.means[k] + torch.exp(0.5 * self.logvars[k]) * eps\n",
     "        return (self.means[k] + torch.exp(0.5 * self.logvars[k]) * eps).float()\n"),
    ("vae", "alice", "vae.py", "encoder", "dtype",  # held-out bench, seed 583269
     "        return self.reparameterization(mu_e, log_var_e)\n",
     "        return self.reparameterization(mu_e, log_var_e).float()\n"),
    ("vae", "alice", "vae.py", "decoder", "differentiable",  # held-out bench, seed 381953
     '        return log_bernoulli(x, probs, reduction="sum", dim=-1)\n',
     '        return log_bernoulli(x, probs, reduction="sum", dim=-1).detach()\n'),
    ("vae", "alice", "vae.py", "decoder", "differentiable",  # the categorical branch alone (the property took
     # the Bernoulli branch only: held-out bench, seed 381953)
     "            return log_categorical(x, probs, num_classes=self.num_vals, reduction=\"sum\", dim=-1).sum(-1)\n",
     "            return log_categorical(x, probs, num_classes=self.num_vals, reduction=\"sum\", dim=-1).sum(-1)"
     ".detach()\n"),
    ("vae", "alice", "vae.py", "decoder", "stochastic",  # reseeding in the categorical branch alone
     "            return torch.distributions.Categorical(probs=probs).sample().float()\n",
     "            torch.manual_seed(0)\n            return torch.distributions.Categorical(probs=probs).sample().float()\n"),
    # a .float() where only a float32 call was made (the sampler's dtype was checked, the log-density's not)
    ("vae", "alice", "vae.py", "encoder", "dtype", "        return log_normal_diag(z, mu_e, log_var_e)  #",
     "        return log_normal_diag(z, mu_e, log_var_e).float()  #"),
    ("vae", "alice", "vae.py", "mog_prior.log_prob", "dtype",
     "        return torch.logsumexp(per_comp + log_w, dim=1)\n",
     "        return torch.logsumexp(per_comp + log_w, dim=1).float()\n"),
    ("kmeans-autoencoder", "dana", "kmeans_autoencoder.py", "minibatch_update", "range",
     "        members = x_batch[labels == k]\n",
     "        d = ((x_batch[:, None] - centres[None]) ** 2).sum(-1)\n"
     "        members = x_batch[d[:, k] == d.min(dim=1).values]\n"),
    ("kmeans-autoencoder", "dana", "kmeans_autoencoder.py", "reconstruction_loss", "pure",
     '    return F.mse_loss(x_hat, x, reduction="mean")', "    return x_hat.sub_(x).pow(2).mean()"),
    ("kmeans-autoencoder", "dana", "kmeans_autoencoder.py", "confusion", "dtype",  # held-out bench, seed 583269
     "    return m\n\n\n# -------", "    return m.float()\n\n\n# -------"),
    ("amortized-vs-lo", "heidi", "amortized_vs_lo.py", "importance", "range",
     "    m = log_w.max(dim=0, keepdim=True).values\n", "    m = log_w.mean(dim=0, keepdim=True)\n"),
    ("density-models", "frank", "density_models.py", "gmm.em_step", "range",
     "    r = torch.softmax(log_r, dim=1)\n", "    p = log_r.exp()\n    r = p / p.sum(dim=1, keepdim=True)\n"),
]


@pytest.mark.slow
@pytest.mark.parametrize("assignment, example, module, component, prop, old, new", UNSEEN,
                         ids=[f"{u[3]}-{u[4]}" for u in UNSEEN])
def test_a_mistake_no_value_check_sees_costs_its_property(tmp_path, assignment, example, module, component, prop,
                                                          old, new):
    rubric = RUBRICS[assignment]
    root = _planted(tmp_path, example, module, old, new)
    result = grade_submission(root, rubric, GradeOptions(only=[component], device="cpu"))
    lost = {t.check: round(t.max_score - t.score, 4) for t in result.tests if t.score < t.max_score - 1e-9}
    assert f"{component}.property.{prop}" in lost, (lost, [t.output for t in result.tests])
    assert all(c.startswith(component + ".") for c in lost), lost


@pytest.mark.slow
def test_an_upstream_that_edits_its_input_in_place_is_charged_on_its_own_component_only(tmp_path):
    # (held-out bench, seed 507853: the stand-ins ran the student's own reparameterization on the caller's mu to
    # read its layout, and its `mu.add_` changed the encoder's and the ELBO's mu: both were charged too)
    root = _planted(tmp_path, "alice", "vae.py", "        return mu + eps * std\n", "        return mu.add_(eps * std)\n")
    result = grade_submission(root, RUBRICS["vae"], GradeOptions(only=["reparameterization", "encoder", "elbo"],
                                                                  device="cpu"))
    lost = {t.check for t in result.tests if t.score < t.max_score - 1e-9}
    assert "reparameterization.property.pure" in lost, lost
    assert all(c.startswith("reparameterization.") for c in lost), [(t.check, t.output) for t in result.tests
                                                                    if t.check in lost]


@pytest.mark.slow
@pytest.mark.parametrize("assignment, example", [("vae", "alice"), ("kmeans-autoencoder", "dana"),
                                                 ("amortized-vs-lo", "heidi"), ("density-models", "frank")])
def test_correct_examples_keep_every_property_check(assignment, example):
    result = grade_submission(REPO / "submissions" / example, RUBRICS[assignment],
                              GradeOptions(only=["properties"], device="cpu"))
    assert result.tests and all(t.score == t.max_score for t in result.tests), \
        [(t.check, t.output) for t in result.tests if t.score < t.max_score]


@pytest.mark.slow
def test_a_constant_left_out_costs_the_values_once_and_never_the_gradients(tmp_path):
    root = _planted(tmp_path, "alice", "vae.py", "    values = -HALF_LOG_TWO_PI - 0.5 * log_var",
                    "    values = - 0.5 * log_var")
    result = grade_submission(root, RUBRICS["vae"], GradeOptions(only=["log_normal_diag"], device="cpu"))
    by = {t.check: t for t in result.tests}
    lost = {c: t.max_score - t.score for c, t in by.items() if t.score < t.max_score - 1e-9}
    assert lost == {"log_normal_diag.values": 2.0}, lost  # before: 5/5 through four checks
    assert by["log_normal_diag.gradients"].score == by["log_normal_diag.gradients"].max_score
    assert "missing_log2pi" not in by["log_normal_diag.values"].output  # the mistake in words, not its id
    assert f"charged once, in check {by['log_normal_diag.values'].number}" in by["log_normal_diag.reductions"].output


@pytest.mark.slow
def test_the_model_level_message_names_the_cause_the_property_check_found(tmp_path):
    root = _planted(tmp_path, "dana", "kmeans_autoencoder.py", '    return F.mse_loss(x_hat, x, reduction="mean")',
                    "    return x_hat.sub_(x).pow(2).mean()")
    tiny = {"kmeans_epochs": 3, "ae_epochs": 4, "latent_dim": 8, "channels": [8, 16], "time_budget_s": 20}
    result = grade_submission(root, RUBRICS["kmeans-autoencoder"],
                              GradeOptions(only=["reconstruction_loss", "model.autoencoder"], device="cpu",
                                           model_overrides=tiny))
    by = {t.check: t for t in result.tests}
    assert by["reconstruction_loss.property.pure"].score == 0
    model = by["model.autoencoder"]
    assert model.score == 0
    assert "your reconstruction_loss changes its input in place, so backward through it fails" in model.output
    assert "check that decode(encode(x)) has the shape of x" not in model.output


# ---- what a property check tells the model-level "likely cause" ----------------------------------

def _finding_after(outcomes):
    """Session.findings after a property check whose calls end as `outcomes` (a value, or an exception to raise)."""
    from types import SimpleNamespace

    from grader.checks import CheckContext, Session, StudentValueError
    from grader.checks.properties import _fail_on_exception, _property
    from grader.sandbox.errors import StudentException

    def check_pure(ctx):
        for i, outcome in enumerate(outcomes):
            def call(outcome=outcome):
                if outcome == "missing":
                    raise StudentException("`log_categorical` is missing: the module defines no `log_categorical`")
                if outcome == "numpy":
                    raise StudentValueError("f must return a torch.Tensor, but returned a numpy.ndarray")
                return outcome
            if _fail_on_exception(ctx, f"call {i}", call) is not None and outcome == "edited":
                ctx.expect(False, "inputs unchanged", "your code changed x in place")

    ctx = CheckContext.__new__(CheckContext)
    ctx.cases, ctx.cause, ctx.specs, ctx.session = [], None, {}, Session()
    ctx.spec = SimpleNamespace(component="f")
    ctx.rubric = SimpleNamespace(component_targets={"f": "my_f"})
    _property(check_pure)(ctx)
    return ctx.session.findings.get("f", [])


def test_a_property_finding_needs_code_that_ran_and_showed_the_fault():
    """carol's log_categorical is missing and her MoGPrior.sample returns NumPy: her model's 'likely cause' said
    'your log_categorical changes its input in place' and 'your MoGPrior.sample changes the dtype of its inputs'."""
    assert _finding_after(["missing", "missing"]) == []
    assert _finding_after(["numpy"]) == []
    assert _finding_after(["edited"]) == ["your my_f changes its input in place, so backward through it fails"]
    # a call that ran, then one that raised (an in-place edit breaks backward): the property's own fault
    assert _finding_after(["ok", "missing"]) == ["your my_f changes its input in place, so backward through it fails"]


def test_property_checks_are_named_as_the_student_s_code_names_the_component():
    """The report listed 'mog_prior.sample: …' and 'elbo: gradients reach params' under MoGPrior.sample and
    VAE.forward: the rubric's tags, not the names in the student's code."""
    names = {s.id: s.name for s in RUBRICS["vae"].checks}
    assert names["mog_prior.sample.property.batch"] == "MoGPrior.sample: a batch of one, and non-square shapes"
    assert names["elbo.property.differentiable"] == "VAE.forward: correct gradients reach every parameter"
    assert names["log_normal_diag.property.differentiable"] == "log_normal_diag: correct gradients reach x, mu and log_var"
    for rubric in RUBRICS.values():
        for s in rubric.checks:
            if s.kind == "property":
                assert s.name.startswith(f"{rubric.component_targets.get(s.component) or s.component}: "), s.name
                assert "params" not in s.name, s.name


def test_results_that_differ_but_sum_alike_are_not_the_references():
    """Gradients are compared with the reference's only when the values are the reference's. A Monte-Carlo KL gives
    an ELBO of the reference's shape that differs draw by draw; its batch sum matched the reference's by chance in
    one CI run (the gradients then differed: a correct ELBO lost points). The sums stand in for the values only
    for a result in another layout (per dimension, (B, L), where the reference gives (B,))."""
    import numpy as np

    from grader.checks.properties import _same_values

    want = [np.array([-27.0, -30.0])]
    assert _same_values([want[0].copy()], want, 1e-4, 1e-5, summed=True)
    same_sum = [np.array([-26.5, -30.5])]  # the reference's shape, other values, the same sum
    assert not _same_values(same_sum, want, 1e-4, 1e-5, summed=True)
    per_dimension = [np.array([[-13.0, -14.0], [-10.0, -20.0]])]  # (B, L) whose rows sum to the reference's
    assert _same_values(per_dimension, want, 1e-4, 1e-5, summed=True)
    assert not _same_values(per_dimension, want, 1e-4, 1e-5, summed=False)
    assert not _same_values([], want, 1e-4, 1e-5, summed=True)
