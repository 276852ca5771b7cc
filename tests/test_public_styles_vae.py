"""Styles met in public implementations of the `vae` and `amortized-vs-lo` components, written here
by us as small variants of the reference (no public code): each keeps full marks where it is
correct, and a real mistake costs points on its own component only, the same under `--only`.

Found by grading adaptations of public code (docs/validity.md, "vae and amortized-vs-lo"):
- a composite written against its own per-dimension upstream (the course notebook's VAE.forward sums
  `prior.log_prob(z) - encoder.log_prob(...)` over the last axis) lost every ELBO point when the
  prior had a per-dimension log-sum-exp: the stand-in answered in the reference's shape (B,);
- a network kept under two attribute names (`self.net` and `self.decoder_net`) got no gradient
  from the stand-ins: the twin knows the parameters by one name, the child sent only the other;
- VAE.elbo with a Monte-Carlo KL (log q(z|x) − log p(z) at the sampled z) was charged: the check
  compared single draws only;
- log_normal_diag summing log_var over a fixed axis (dim=1) passed: no case gave log_var leading
  dimensions of its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics
from tests.conftest import lost_points

REPO = Path(__file__).resolve().parents[1]


def _plant(tmp_path: Path, module: str, extra: str) -> Path:
    folder = tmp_path / "student"
    folder.mkdir(parents=True)
    (folder / module).write_text((REPO / "reference" / module).read_text() + "\n\n# --- planted ---\n" + extra)
    return folder


def _grade(folder: Path, assignment: str, only: list[str]):
    return grade_submission(folder, available_rubrics()[assignment],
                            GradeOptions(device="cpu", only=only, write_figures=False))


def _scores(result, component: str) -> dict[str, float]:
    return {t.check: t.score for t in result.tests if t.component == component}


def _failures(result) -> list:
    return [(t.check, t.output) for t in result.tests if t.score < t.max_score]


# ---- vae: a composite written against its own per-dimension upstream ------------------------------

LOG_Q_PER_DIMENSION = """
def _log_q_per_dim(self, x=None, mu_e=None, log_var_e=None, z=None):  # element-wise (B, L): the ELBO sums it
    if x is not None:
        mu_e, log_var_e = self.encode(x)
        z = self.sample(mu_e=mu_e, log_var_e=log_var_e)
    return log_normal_diag(z, mu_e, log_var_e)
Encoder.log_prob = _log_q_per_dim
"""

PRIOR_PER_DIMENSION = """
def _prior_log_prob_per_dim(self, z):  # log-sum-exp per latent dimension: (B, L), a real mistake
    log_w = torch.log_softmax(self.w, dim=0).view(-1, 1, 1)
    log_n = log_normal_diag(z.unsqueeze(0), self.means.unsqueeze(1), self.logvars.unsqueeze(1))
    return torch.logsumexp(log_w + log_n, dim=0)
MoGPrior.log_prob = _prior_log_prob_per_dim
"""

ELBO_SUMS_ITS_OWN_LAYOUT = """
def _forward(self, x, reduction="avg"):  # correct for its own (B, L) upstream layout
    mu_e, log_var_e = self.encoder.encode(x)
    z = self.encoder.sample(mu_e=mu_e, log_var_e=log_var_e)
    rec = self.decoder.log_prob(x, z)
    kl = (self.encoder.log_prob(mu_e=mu_e, log_var_e=log_var_e, z=z) - self.prior.log_prob(z)).sum(-1)
    loss = -(rec - kl)
    return loss.sum() if reduction == "sum" else loss.mean()
VAE.forward = _forward
"""


def test_elbo_written_for_its_own_per_dimension_upstream_is_not_charged_for_the_prior(tmp_path):
    folder = _plant(tmp_path, "vae.py", LOG_Q_PER_DIMENSION + PRIOR_PER_DIMENSION + ELBO_SUMS_ITS_OWN_LAYOUT)
    full = _grade(folder, "vae", ["mog_prior.log_prob", "elbo"])
    assert set(lost_points(full)) == {"mog_prior.log_prob"}, _failures(full)
    assert any("your own layout" in t.output for t in full.tests if t.component == "elbo")
    alone = _grade(folder, "vae", ["elbo"])
    assert _scores(alone, "elbo") == _scores(full, "elbo")


def test_elbo_expecting_the_templates_shapes_keeps_full_marks_beside_a_per_dimension_prior(tmp_path):
    # the reference's VAE.forward (it wants log p(z) of shape (B,)) with the same wrong prior
    folder = _plant(tmp_path, "vae.py", PRIOR_PER_DIMENSION)
    full = _grade(folder, "vae", ["mog_prior.log_prob", "elbo"])
    assert set(lost_points(full)) == {"mog_prior.log_prob"}, _failures(full)


def test_a_wrong_composite_is_still_charged_in_either_layout(tmp_path):
    wrong = ELBO_SUMS_ITS_OWN_LAYOUT.replace("loss = -(rec - kl)", "loss = -(rec + kl)")  # KL with the wrong sign
    folder = _plant(tmp_path, "vae.py", LOG_Q_PER_DIMENSION + PRIOR_PER_DIMENSION + wrong)
    full = _grade(folder, "vae", ["elbo"])
    assert "elbo" in lost_points(full)


# ---- amortized-vs-lo ----------------------------------------------------------------------------

ALIASED_DECODER_NET = """
def _init(self, net):  # the network under two names, its own first (`net` added for the template)
    nn.Module.__init__(self)
    self.decoder_net = net
    self.net = net
BernoulliDecoder.__init__ = _init
"""


def test_gradients_reach_a_network_kept_under_two_names(tmp_path):
    folder = _plant(tmp_path, "amortized_vs_lo.py", ALIASED_DECODER_NET)
    result = _grade(folder, "amortized-vs-lo", ["elbo", "vae", "lo"])
    assert lost_points(result) == {}, _failures(result)


MONTE_CARLO_KL = """
def _elbo_mc(self, x, idx=None):  # KL estimated at the sampled z: unbiased, not equal draw by draw
    mu, log_var = self.posterior(x, idx)
    z = reparameterize(mu, log_var)
    log_q = log_normal_diag(z, mu, log_var)
    log_p = log_normal_diag(z, torch.zeros_like(z), torch.zeros_like(z))
    return self.decoder.log_prob(x, z) - (log_q - log_p)
VAE.elbo = _elbo_mc
"""


def test_vae_elbo_with_a_monte_carlo_kl_keeps_full_marks(tmp_path):
    folder = _plant(tmp_path, "amortized_vs_lo.py", MONTE_CARLO_KL)
    result = _grade(folder, "amortized-vs-lo", ["vae"])
    assert lost_points(result) == {}, _failures(result)
    assert any("in expectation" in t.output for t in result.tests)


def test_vae_elbo_without_the_kl_term_is_still_charged(tmp_path):
    folder = _plant(tmp_path, "amortized_vs_lo.py", MONTE_CARLO_KL.replace("- (log_q - log_p)", ""))
    result = _grade(folder, "amortized-vs-lo", ["vae"])
    assert "vae" in lost_points(result)


FIXED_AXIS_LOG_VAR = """
def log_normal_diag(z, mu, log_var):  # sums log_var over dim=1, not the last axis
    D = mu.shape[-1]
    return (-D / 2 * math.log(2 * math.pi) - 0.5 * torch.sum(log_var, dim=1)
            - 0.5 * torch.sum(torch.exp(-log_var) * (z - mu) ** 2, -1))
"""


def test_log_normal_diag_summing_a_fixed_axis_is_charged_on_its_component(tmp_path):
    folder = _plant(tmp_path, "amortized_vs_lo.py", FIXED_AXIS_LOG_VAR)
    result = _grade(folder, "amortized-vs-lo", ["log_normal_diag", "importance"])
    assert set(lost_points(result)) == {"log_normal_diag"}, _failures(result)


# ---- vae: a renamed, re-parametrised prior with a real mistake, beside a correct ELBO ----------------

RENAMED_LOG_STD_PRIOR_PER_DIMENSION = """
class MoGPrior(nn.Module):  # mu / log_std / weights (K,), and a per-dimension log-sum-exp (B, L): a real mistake
    def __init__(self, L, num_components, multiplier=1.0):
        super().__init__()
        self.L = L
        self.mu = nn.Parameter(torch.randn(num_components, L) * multiplier)
        self.log_std = nn.Parameter(torch.randn(num_components, L))
        self.weights = nn.Parameter(torch.zeros(num_components))

    def sample(self, batch_size):
        k = torch.multinomial(torch.softmax(self.weights, 0), batch_size, replacement=True)
        return self.mu[k] + torch.exp(self.log_std[k]) * torch.randn(batch_size, self.L)

    def log_prob(self, z):
        std = torch.exp(self.log_std).unsqueeze(1)
        log_n = -torch.log(std) - 0.5 * math.log(2 * math.pi) - 0.5 * ((z.unsqueeze(0) - self.mu.unsqueeze(1)) / std) ** 2
        return torch.logsumexp(log_n + torch.log_softmax(self.weights, 0)[:, None, None], dim=0)
"""


def test_elbo_beside_a_renamed_wrong_prior_gets_the_prior_by_role(tmp_path):
    folder = _plant(tmp_path, "vae.py", RENAMED_LOG_STD_PRIOR_PER_DIMENSION)
    full = _grade(folder, "vae", ["mog_prior.log_prob", "elbo"])
    assert set(lost_points(full)) == {"mog_prior.log_prob"}, _failures(full)


@pytest.mark.parametrize("kind, per_component, logits_shape", [
    ("logstd", False, (4,)), ("var", False, (4, 1)), ("std", True, (4, 1, 1)), ("logvar", True, (1, 4))])
def test_role_mapped_twin_gives_the_gradient_in_the_students_parametrisation(kind, per_component, logits_shape):
    import reference.vae as ref
    from grader.checks.standins import _by_role

    K, L = 4, 3
    rng = np.random.default_rng(0)
    means = rng.standard_normal((K, L))
    spread = rng.uniform(0.3, 1.5, (K, 1) if per_component else (K, L))
    if kind in ("logstd", "logvar"):
        spread = np.log(spread)
    logits = rng.standard_normal(logits_shape)
    names = {"logstd": "log_std", "var": "variance", "std": "sigma", "logvar": "log_var"}
    state = {"centres": means, names[kind]: spread, "mixture_logits": logits}
    twin = ref.MoGPrior(L, K).double()
    mapped_state, mapped = _by_role(twin.state_dict(), state)
    with torch.no_grad():
        for key, value in mapped_state.items():
            twin.state_dict()[key].copy_(torch.from_numpy(value))
    z = torch.from_numpy(rng.standard_normal((5, L)))
    twin.log_prob(z).sum().backward()
    params = dict(twin.named_parameters())

    # the same density written in the student's parametrisation, differentiated by autograd
    s = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    sp = s[names[kind]]
    lv = {"logstd": 2 * sp, "var": torch.log(sp), "std": 2 * torch.log(sp), "logvar": sp}[kind].expand(K, L)
    log_w = torch.log_softmax(s["mixture_logits"].reshape(-1), 0)
    log_n = ref.log_normal_diag(z.unsqueeze(0), s["centres"].unsqueeze(1), lv.unsqueeze(1), reduction="sum", dim=-1)
    torch.logsumexp(log_w[:, None] + log_n, 0).sum().backward()
    for key, (twin_key, to_student) in mapped.items():
        np.testing.assert_allclose(to_student(params[twin_key].grad.numpy()), s[key].grad.numpy(), rtol=1e-10, atol=1e-12)


UNWEIGHTED_PRIOR = """
class MoGPrior(nn.Module):  # no mixture weights at all: equal weights 1/K, means and log-variances (1, K, L)
    def __init__(self, L, num_components):
        super().__init__()
        self.L, self.K = L, num_components
        self.mog_mu = nn.Parameter(torch.randn(1, num_components, L))
        self.mog_logvar = nn.Parameter(torch.zeros(1, num_components, L))

    def log_prob(self, z):
        log_comps = log_normal_diag(z.unsqueeze(1), self.mog_mu, self.mog_logvar, reduction="sum", dim=2)
        return torch.logsumexp(log_comps - math.log(self.K), dim=1)

    def sample(self, batch_size):
        k = torch.randint(0, self.K, (batch_size,))
        return self.mog_mu[0, k] + torch.exp(0.5 * self.mog_logvar[0, k]) * torch.randn(batch_size, self.L)
"""


def test_prior_without_mixture_weights_is_charged_once_in_the_interface_check(tmp_path):
    folder = _plant(tmp_path, "vae.py", UNWEIGHTED_PRIOR)
    result = _grade(folder, "vae", ["interface", "mog_prior.log_prob", "mog_prior.sample", "elbo"])
    assert set(lost_points(result)) == {"interface"}, _failures(result)
    assert "learnable nn.Parameter" in next(t.output for t in result.tests if t.component == "interface")


PRIOR_WITH_A_LAYOUT_MISTAKE = """
def _prior_log_prob_row(self, z):  # right values in a (1, B) row: a layout mistake of its own
    log_w = torch.log_softmax(self.w, dim=0).view(-1, 1)
    log_n = log_normal_diag(z.unsqueeze(0), self.means.unsqueeze(1), self.logvars.unsqueeze(1), reduction="sum", dim=-1)
    return torch.logsumexp(log_w + log_n, dim=0, keepdim=True)
MoGPrior.log_prob = _prior_log_prob_row
"""


def test_elbo_written_for_a_per_dimension_upstream_is_judged_in_that_layout_whatever_the_prior_returns(tmp_path):
    # issue 20: the stand-in answered in the reference's (B,) layout because the student's own prior returned
    # neither (B,) nor (B, L); the ELBO, right for per-dimension values (the course's convention), lost its points
    folder = _plant(tmp_path, "vae.py", LOG_Q_PER_DIMENSION + PRIOR_WITH_A_LAYOUT_MISTAKE + ELBO_SUMS_ITS_OWN_LAYOUT)
    full = _grade(folder, "vae", ["mog_prior.log_prob", "elbo"])
    assert set(lost_points(full)) == {"mog_prior.log_prob"}, _failures(full)
    assert any("your own layout" in t.output for t in full.tests if t.component == "elbo")
    wrong = ELBO_SUMS_ITS_OWN_LAYOUT.replace("loss = -(rec - kl)", "loss = -(rec + kl)")
    folder = _plant(tmp_path / "wrong", "vae.py", LOG_Q_PER_DIMENSION + PRIOR_WITH_A_LAYOUT_MISTAKE + wrong)
    assert "elbo" in lost_points(_grade(folder, "vae", ["elbo"]))  # right in neither layout: charged
