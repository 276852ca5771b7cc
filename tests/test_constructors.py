"""A constructor's mistake costs points once, on the constructor's own check (density-models'
`conv_vae.architecture`), and a method's mistake never costs points there.

The methods (`encode`, `decode`, `elbo`) run with the constructor's layers standing in: each layer
call is answered by the grader with the specified layer (by role, grader/checks/standins.py
`map_layers`), holding the check's weights; the architecture check runs each of the student's
layers alone and never calls the methods. Rules: docs/grading.md ("Constructors").

The planted mistakes are not in reference/density_models_mistakes.py (except where a test says it
checks a named diagnosis), and each is planted in a copy of the reference."""

from __future__ import annotations

from pathlib import Path

from grader.checks.standins import map_layers, upstream_targets
from grader.engine import GradeOptions, find_assignment, grade_submission
from grader.rubric import available_rubrics
from tests.conftest import SUBMISSIONS, lost_points, named_mistakes

REPO = Path(__file__).resolve().parents[1]
CONV = ["conv_vae.architecture", "conv_vae.encode", "conv_vae.decode", "conv_vae.elbo"]


def _plant(tmp_path: Path, extra: str, name: str = "student") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    source = (REPO / "reference" / "density_models.py").read_text()
    (folder / "density_models.py").write_text(source + "\n\n# --- planted ---\n" + extra)
    return folder


def _grade(folder: Path, only: list[str]):
    rubric = available_rubrics()["density-models"]
    return grade_submission(folder, rubric, GradeOptions(device="cpu", only=only, write_figures=False))


def _why(result) -> list:
    return [(t.check, t.output) for t in result.tests if t.score < t.max_score]


# an __init__ that builds conv1 with 17 channels (conv2 follows it): every method still works as the
# student wrote it, and its own-built layers would give other values and shapes
WIDE_CONV1 = """
def _init(self, latent_dim=2, image_size=8):
    nn.Module.__init__(self)
    self.latent_dim, self.image_size = latent_dim, image_size
    s = image_size // 4
    self.side = s
    self.conv1 = nn.Conv2d(1, 17, 3, stride=2, padding=1)
    self.conv2 = nn.Conv2d(17, 32, 3, stride=2, padding=1)
    self.fc_mu = nn.Linear(32 * s * s, latent_dim)
    self.fc_log_var = nn.Linear(32 * s * s, latent_dim)
    self.fc_dec = nn.Linear(latent_dim, 32 * s * s)
    self.deconv1 = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)
    self.deconv2 = nn.ConvTranspose2d(16, 1, 3, stride=1, padding=1)  # stride 1: decoded images 4×4
ConvVAE.__init__ = _init
"""

# encode: conv2 skipped (fc_mu then gets features of the wrong size: the architecture check used to
# call encode and charge its shapes); decode: tanh instead of ReLU after fc_dec (neither in the library)
METHOD_MISTAKES = """
def _encode(self, x):
    h = F.relu(self.conv1(x)).flatten(start_dim=1)
    return self.fc_mu(h), self.fc_log_var(h)
ConvVAE.encode = _encode

def _decode(self, z):
    h = torch.tanh(self.fc_dec(z)).view(-1, 32, self.side, self.side)
    return torch.sigmoid(self.deconv2(F.relu(self.deconv1(h))))
ConvVAE.decode = _decode
"""

# correct, in another style: nn.Sequential blocks under other names (layers found by role)
SEQUENTIAL = """
def _init(self, latent_dim=2, image_size=8):
    nn.Module.__init__(self)
    self.side = s = image_size // 4
    self.enc = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.Flatten())
    self.mean = nn.Linear(32 * s * s, latent_dim)
    self.logvar = nn.Linear(32 * s * s, latent_dim)
    self.fc_dec = nn.Linear(latent_dim, 32 * s * s)
    self.dec = nn.Sequential(nn.ConvTranspose2d(32, 16, 3, 2, 1, 1), nn.ReLU(), nn.ConvTranspose2d(16, 1, 3, 2, 1, 1))
ConvVAE.__init__ = _init

def _encode(self, x):
    h = self.enc(x)
    return self.mean(h), self.logvar(h)
ConvVAE.encode = _encode

def _decode(self, z):
    return torch.sigmoid(self.dec(F.relu(self.fc_dec(z)).reshape(len(z), 32, self.side, self.side)))
ConvVAE.decode = _decode
"""

# another design than the specified one: one Linear gives mu and log_var together, and encode splits
# it; encode is right for its own constructor, so it cannot be judged apart from it
JOINT_HEAD = """
def _init(self, latent_dim=2, image_size=8):
    nn.Module.__init__(self)
    self.latent_dim, self.side = latent_dim, image_size // 4
    s = self.side
    self.conv1 = nn.Conv2d(1, 16, 3, stride=2, padding=1)
    self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    self.fc_mu = nn.Linear(32 * s * s, 2 * latent_dim)
    self.fc_dec = nn.Linear(latent_dim, 32 * s * s)
    self.deconv1 = nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)
    self.deconv2 = nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1)
ConvVAE.__init__ = _init

def _encode(self, x):
    h = F.relu(self.conv2(F.relu(self.conv1(x)))).flatten(start_dim=1)
    return self.fc_mu(h).chunk(2, dim=1)
ConvVAE.encode = _encode
"""


# ---- the pieces (fast) -------------------------------------------------------------------------

def test_map_layers_uses_names_first_then_class_and_definition_order():
    spec = [("conv1", "Conv2d"), ("conv2", "Conv2d"), ("fc_mu", "Linear"), ("fc_log_var", "Linear"),
            ("fc_dec", "Linear"), ("deconv1", "ConvTranspose2d"), ("deconv2", "ConvTranspose2d")]
    assert map_layers(spec, spec) == {p: p for p, _ in spec}
    student = [("enc.0", "Conv2d"), ("enc.2", "Conv2d"), ("mean", "Linear"), ("logvar", "Linear"), ("fc_dec", "Linear"),
               ("dec.0", "ConvTranspose2d"), ("dec.2", "ConvTranspose2d")]
    assert map_layers(student, spec) == {"enc.0": "conv1", "enc.2": "conv2", "mean": "fc_mu", "logvar": "fc_log_var",
                                         "fc_dec": "fc_dec", "dec.0": "deconv1", "dec.2": "deconv2"}
    # a name of another class is no hint; unequal counts of a class pair nothing (ambiguous)
    assert map_layers([("conv1", "Linear"), ("head", "Linear")], spec) == {}
    assert map_layers([("fc_mu", "Linear"), ("a", "Conv2d")], spec) == {"fc_mu": "fc_mu"}


def test_the_constructor_stands_in_for_every_other_component_and_not_for_itself():
    import importlib

    rubric = available_rubrics()["density-models"]
    ref = importlib.import_module(rubric.reference)
    for component in ("conv_vae.encode", "conv_vae.decode", "conv_vae.elbo", "vae_elbo"):
        assert "ConvVAE.__init__" in upstream_targets(rubric, ref, component), component
    own = upstream_targets(rubric, ref, "conv_vae.architecture")
    assert "ConvVAE.__init__" not in own and {"ConvVAE.encode", "ConvVAE.decode"} <= set(own)


# ---- graded in the sandbox ---------------------------------------------------------------------

def test_an_unknown_constructor_mistake_costs_points_on_the_architecture_check_only(tmp_path):
    folder = _plant(tmp_path, WIDE_CONV1)
    full = _grade(folder, CONV)
    assert set(lost_points(full)) == {"conv_vae.architecture"}, _why(full)
    arch = " ".join(t.output for t in full.tests if t.component == "conv_vae.architecture")
    assert "conv1" in arch and "deconv2" in arch and "(3, 17, 4, 4)" in arch, arch  # says which layers, how
    # --only a method: the same score as in the full run (its grade does not depend on the constructor's check)
    alone = _grade(folder, ["conv_vae.decode"])
    assert [t.score for t in alone.tests] == [t.score for t in full.tests if t.component == "conv_vae.decode"]


def test_method_mistakes_cost_points_on_their_own_checks_never_on_the_architecture(tmp_path):
    full = _grade(_plant(tmp_path, METHOD_MISTAKES), CONV)
    assert set(lost_points(full)) == {"conv_vae.encode", "conv_vae.decode"}, _why(full)
    assert not named_mistakes(full)  # neither is a library mistake: nothing is named


def test_correct_methods_over_renamed_sequential_layers_keep_full_marks(tmp_path):
    full = _grade(_plant(tmp_path, SEQUENTIAL), CONV)
    lost = lost_points(full)
    # the layers do their specified job (checked by role); only their names differ from the specification
    assert set(lost) <= {"conv_vae.architecture"}, _why(full)
    arch = [t for t in full.tests if t.component == "conv_vae.architecture"]
    assert all("named and shaped" in line for t in arch for line in t.output.splitlines() if line.startswith("- "))


def test_a_method_that_cannot_be_checked_apart_from_its_constructor_says_so_uncharged(tmp_path):
    full = _grade(_plant(tmp_path, JOINT_HEAD), CONV)
    assert set(lost_points(full)) == {"conv_vae.architecture"}, _why(full)
    enc = " ".join(t.output for t in full.tests if t.component == "conv_vae.encode")
    assert "not judged" in enc and "fc_mu.weight" in enc and "conv_vae.architecture" in enc, enc


def test_a_known_constructor_mistake_is_still_named_on_the_architecture_check(tmp_path):
    from reference.density_models_mistakes import MUTANTS  # noqa: F401 -- the mistake exists in the library
    extra = WIDE_CONV1.replace("nn.Conv2d(1, 17,", "nn.Conv2d(1, 16,").replace("nn.Conv2d(17,", "nn.Conv2d(16,") \
        .replace("nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1)",
                 "nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1)") \
        .replace("nn.ConvTranspose2d(16, 1, 3, stride=1, padding=1)", "nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1)")
    full = _grade(_plant(tmp_path, extra), CONV)
    assert set(lost_points(full)) == {"conv_vae.architecture"}, _why(full)
    assert named_mistakes(full) == {"no_output_padding"}


def test_a_constructor_that_fails_is_charged_once_and_its_methods_are_still_checked(tmp_path):
    # `32 * s / s` is a float: nn.Linear refuses it, so ConvVAE(...) raises (a generated mutant's mistake)
    crash = WIDE_CONV1.replace("nn.Conv2d(1, 17,", "nn.Conv2d(1, 16,").replace("nn.Conv2d(17,", "nn.Conv2d(16,") \
        .replace("self.fc_mu = nn.Linear(32 * s * s", "self.fc_mu = nn.Linear(32 * s / s") \
        .replace("stride=1, padding=1)", "stride=2, padding=1, output_padding=1)")
    wrong_encode = "\ndef _encode(self, x):\n    h = F.relu(self.conv2(F.relu(self.conv1(x)))).flatten(start_dim=1)\n" \
                   "    return self.fc_mu(h), 2 * self.fc_log_var(h)\nConvVAE.encode = _encode\n"
    full = _grade(_plant(tmp_path, crash + wrong_encode), CONV)
    # the methods ran on what __init__ built before failing plus the specified layers: encode's own
    # mistake is charged, decode and elbo keep full marks
    assert set(lost_points(full)) == {"conv_vae.architecture", "conv_vae.encode"}, _why(full)
    notes = " ".join(t.output for t in full.tests if t.component == "conv_vae.decode")
    assert "ConvVAE(...) fails (TypeError" in notes, notes


def test_an_unimplemented_template_earns_nothing_from_the_stand_ins(tmp_path):
    todo = "\n".join(f"def _todo_{n}(self, *a, **k):\n    raise NotImplementedError('TODO')\nConvVAE.{n} = _todo_{n}\n"
                     for n in ("__init__", "encode", "decode", "elbo"))
    full = _grade(_plant(tmp_path, todo), CONV)
    assert set(lost_points(full)) == set(CONV), _why(full)
    assert sum(t.score for t in full.tests) == 0, [(t.check, t.score, t.output) for t in full.tests]


def test_an_extra_layer_does_not_excuse_methods_that_do_not_work(tmp_path):
    """Gaming the isolation rule: a student adds a layer the specification lacks, calls it, then raises.
    Methods are excused only when they run, with the specified shape, on the student's own layers."""
    src = (SUBMISSIONS / "frank" / "density_models.py").read_text()
    for method in ("encode(self, x)", "decode(self, z)", "elbo(self, x, eps=None)"):
        assert f"    def {method}:\n" in src
        src = src.replace(f"    def {method}:\n",
                          f"    def {method}:\n        self.extra(torch.zeros(1, 1))\n        raise NotImplementedError('todo')\n")
    src = src.replace("super().__init__()", "super().__init__()\n        self.extra = nn.Linear(1, 1)", 1)
    sub = tmp_path / "gaming"
    sub.mkdir()
    (sub / "density_models.py").write_text(src)
    rubric = find_assignment(SUBMISSIONS / "frank", None)
    tags = ["conv_vae.encode", "conv_vae.decode", "conv_vae.elbo"]
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=tags, out_dir=tmp_path / "out"))
    scores = {t.check: t.score for t in result.tests}
    assert scores and all(v == 0 for v in scores.values()), scores
    assert all("also fails" in t.output for t in result.tests if "properties" not in t.tags), [t.output for t in result.tests]
