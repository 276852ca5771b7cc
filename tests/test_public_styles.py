"""Styles met in public implementations of the `vae` and `amortized-vs-lo` components, written here
by us as small variants of the reference (no public code): each keeps full marks where it is
correct, and a real mistake costs points on its own component only, the same under `--only`.

Found by grading adaptations of public code (docs/validity.md, "Public implementations"):
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

from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics
from tests.conftest import lost_points

REPO = Path(__file__).resolve().parents[1]


def _plant(tmp_path: Path, module: str, extra: str) -> Path:
    folder = tmp_path / "student"
    folder.mkdir()
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
