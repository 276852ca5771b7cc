"""The `kmeans-autoencoder` assignment: reference, planted mistakes, example submissions, model level.

- The reference agrees with independent computations (scikit-learn, torch.nn.functional, numpy
  loops; hypothesis for generated inputs).
- Every known mistake (mutant) planted in a copy of the reference costs points on its own
  component only and is named in the feedback.
- dana (correct, another style) gets full marks, unit and model level; eve (four mistakes) loses
  points exactly there, with the right diagnoses.
Model-level runs use tiny training budgets and a private reference cache.
"""

from __future__ import annotations

import inspect
import re
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from grader.engine import GradeOptions, grade_submission
from reference import kmeans_autoencoder as ka
from reference.kmeans_autoencoder_mistakes import MUTANTS
from tests.conftest import REPO, SUBMISSIONS, unit_tags, lost_points as lost, named_mistakes as named

MODULE = "kmeans_autoencoder.py"
TINY = {"kmeans_epochs": 3, "ae_epochs": 4, "latent_dim": 8, "channels": [8, 16], "time_budget_s": 20}


@pytest.fixture(scope="module")
def rubric():
    from grader.rubric import available_rubrics

    return available_rubrics()["kmeans-autoencoder"]


def _submission(tmp_path, name: str, extra: str = ""):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / MODULE).write_text((REPO / "reference" / MODULE).read_text() + extra)
    return folder


def _planted(mutant) -> str:
    """Source that, appended to a copy of the reference, plants `mutant` in it."""
    module = inspect.getmodule(mutant.fn)
    registered = {m.fn for m in MUTANTS.values()}
    helpers = [textwrap.dedent(inspect.getsource(o)) for n, o in vars(module).items()
               if inspect.isfunction(o) and o.__module__ == module.__name__ and o not in registered and n != "mutant"]
    src = textwrap.dedent(inspect.getsource(mutant.fn))
    src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("@"))
    src = re.sub(r"def \w+\(", "def _planted(", src, count=1)
    prelude = "import sys as _sys\nka = _sys.modules[__name__]\n"
    return f"\n\n# --- planted mistake: {mutant.id} ---\n{prelude}" + "\n".join(helpers) + f"\n{src}\n{mutant.component} = _planted\n"


# ---- the reference against independent computations ------------------------------------------------

def _data(seed=0, n=200, d=64):
    g = np.random.default_rng(seed)
    return g.uniform(0, 1, (n, d)), g.integers(0, 10, n)


def test_distances_assign_loss_match_sklearn():
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances, pairwise_distances_argmin

    x, _ = _data()
    km = KMeans(n_clusters=7, n_init=1, random_state=0).fit(x)
    c = km.cluster_centers_
    xt, ct = torch.from_numpy(x), torch.from_numpy(c)
    np.testing.assert_allclose(ka.squared_distances(xt, ct).numpy(), pairwise_distances(x, c) ** 2, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(ka.assign(xt, ct).numpy(), pairwise_distances_argmin(x, c))
    assert ka.assign(xt, ct).dtype == torch.int64
    loss = ka.kmeans_loss(xt, ct)
    assert loss.shape == () and loss.dtype == torch.float64
    assert float(loss) * len(x) == pytest.approx(km.inertia_, rel=1e-9)  # inertia: summed squared distances


def test_confusion_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    g = np.random.default_rng(1)
    y, a = g.integers(0, 10, 300), g.integers(0, 6, 300)
    got = ka.confusion(torch.from_numpy(a), torch.from_numpy(y), 6, 10)
    assert got.shape == (10, 6) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), confusion_matrix(y, a, labels=range(10))[:, :6])


def test_lloyd_step_is_the_mean_of_assigned_points():
    x, _ = _data(2, 40, 5)
    c = x[:4] + 0.01
    new = ka.minibatch_update(torch.from_numpy(c), torch.from_numpy(x), 1.0).numpy()
    a = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
    for k in range(4):
        np.testing.assert_allclose(new[k], x[a == k].mean(0) if (a == k).any() else c[k], rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 6), d=st.integers(1, 5), lr=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_minibatch_update_moves_each_centre_towards_its_batch_mean(n, k, d, lr, seed):
    g = np.random.default_rng(seed)
    x, c = g.normal(size=(n, d)), g.normal(size=(k, d)) * 3
    new = ka.minibatch_update(torch.from_numpy(c), torch.from_numpy(x), lr).numpy()
    a = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
    for j in range(k):
        want = c[j] + lr * (x[a == j].mean(0) - c[j]) if (a == j).any() else c[j]  # empty: unchanged
        np.testing.assert_allclose(new[j], want, rtol=1e-9, atol=1e-12)
    assert np.isfinite(new).all()


def test_init_centres():
    x, y = _data(3, 300, 16)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    c = ka.init_centres(xt, yt, 10, "per_digit", seed=4).numpy()
    for j, row in enumerate(c):
        (i,) = np.nonzero((x == row).all(1))[0][:1]
        assert y[i] == j
    assert torch.equal(ka.init_centres(xt, yt, 10, "per_digit", 4), ka.init_centres(xt, yt, 10, "per_digit", 4))
    r = ka.init_centres(xt.float(), yt, 5, "random", 1)
    assert r.shape == (5, 16) and r.dtype == torch.float32 and 0 <= r.min() and r.max() < 1


@pytest.mark.parametrize("latent, channels", [(16, (16, 32)), (3, (4, 8))])
def test_autoencoder_shapes_and_loss(latent, channels):
    from grader.harnesses import kmeans_autoencoder as harness

    torch.manual_seed(0)
    m = ka.ConvAutoencoder(latent, channels)
    x = torch.rand(5, 1, 8, 8)
    shapes = harness.stage_shapes(ka, "cpu", x, torch.randn(2, latent), latent, channels)
    c1, c2 = channels
    assert shapes["encoder"] == [[5, 1, 8, 8], [5, c1, 4, 4], [5, c1, 4, 4], [5, c2, 2, 2], [5, c2, 2, 2], [5, 4 * c2], [5, latent]]
    assert shapes["decoder"][-1] == [2, 1, 8, 8] and shapes["decoder"][3] == [2, c2, 2, 2]
    out = m(x)
    assert out.shape == x.shape and 0 < out.min() and out.max() < 1
    assert torch.allclose(ka.reconstruction_loss(out, x), F.mse_loss(out, x))
    assert m.generate(7).shape == (7, 1, 8, 8)


# ---- grading: planted mistakes --------------------------------------------------------------------------

def test_reference_copy_gets_full_unit_marks(tmp_path, rubric):
    result = grade_submission(_submission(tmp_path, "refcopy"), rubric, GradeOptions(device="cpu", only=unit_tags(rubric)))
    assert lost(result) == {}, [(t.check, t.output) for t in result.tests if t.status != "passed"]
    assert result.autograded_score == sum(c.points for c in rubric.select(unit_tags(rubric)))


@pytest.mark.parametrize("mistake_id", sorted(MUTANTS))
def test_each_planted_mistake_costs_points_on_its_component_only_and_is_named(tmp_path, rubric, mistake_id):
    component = next(m.component for m in rubric.mistakes if m.id == mistake_id)
    sub = _submission(tmp_path, f"m_{mistake_id}", _planted(MUTANTS[mistake_id]))
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=unit_tags(rubric)))
    assert not result.errors, result.errors
    by = lost(result)
    assert by.get(component, 0) > 0, f"{mistake_id}: no points lost on {component}"
    assert set(by) == {component}, f"{mistake_id}: points also lost on {by}: " + "; ".join(
        f"{t.check}: {t.output}" for t in result.tests if t.component != component and t.status != "passed")
    assert mistake_id in named(result), " | ".join(t.output for t in result.tests if t.status != "passed")


def test_broken_parts_get_zero_with_a_clear_message(tmp_path, rubric):
    extra = ("\ndel confusion\n"
             "def kmeans_loss(x, centres):\n    return squared_distances(x, centres).min(1).values.mean().item()\n")
    result = grade_submission(_submission(tmp_path, "broken", extra), rubric,
                              GradeOptions(device="cpu", only=["confusion", "kmeans_loss"]))
    text = {t.component: t.output for t in result.tests}
    assert all(t.score == 0 for t in result.tests)
    assert "`confusion` is missing" in text["confusion"]
    assert "Python float" in text["kmeans_loss"]


# ---- the example submissions, unit and model level (tiny budgets) ------------------------------------------

@pytest.fixture(scope="module")
def examples(rubric, tmp_path_factory):
    """dana then eve, graded in full (unit and model level) with one private reference cache."""
    import os

    out = tmp_path_factory.mktemp("ka-out")
    old = os.environ.get("GRADEKIT_CACHE")
    os.environ["GRADEKIT_CACHE"] = str(tmp_path_factory.mktemp("ka-cache"))
    try:
        opts = GradeOptions(device="cpu", model_overrides=TINY, out_dir=out)
        return out, {name: grade_submission(SUBMISSIONS / name, rubric, opts) for name in ("dana", "eve")}
    finally:
        if old is None:
            os.environ.pop("GRADEKIT_CACHE", None)
        else:
            os.environ["GRADEKIT_CACHE"] = old


def test_dana_written_differently_gets_full_marks_with_figures(rubric, examples):
    out, graded = examples
    dana = graded["dana"]
    assert dana.metrics["reference_cache"] == "trained now"
    assert lost(dana) == {}, [(t.check, t.output) for t in dana.tests if t.status != "passed"]
    assert dana.autograded_score == rubric.max_points
    assert [q.id for q in dana.questions if q.answer] == ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6"]
    m = dana.metrics
    assert m["kmeans_test_loss"]["student"] < m["kmeans_test_loss_random_init"]["reference"]
    assert m["autoencoder_test_mse"]["student"] == pytest.approx(m["autoencoder_test_mse"]["reference"], rel=1e-3)
    assert {f["tag"] for f in dana.figures} == {"model.kmeans", "model.autoencoder"}
    for f in dana.figures:
        assert (out / "dana" / f["path"]).is_file()


def test_eve_loses_points_exactly_at_her_four_mistakes(examples):
    eve = examples[1]["eve"]
    assert eve.metrics["reference_cache"] == "reused"  # trained for dana
    assert set(lost(eve)) == {"minibatch_update", "confusion", "autoencoder", "reconstruction_loss", "model"}
    assert named(eve) == {"update_ignores_lr", "confusion_transposed", "decoder_no_sigmoid", "reconstruction_loss_summed"}
    by = {t.check: t for t in eve.tests}
    assert by["minibatch_update.empty"].score == by["minibatch_update.empty"].max_score  # not charged twice
    assert by["autoencoder.generate"].score == by["autoencoder.generate"].max_score
    ae = by["model.autoencoder"]  # trained without the sigmoid, evaluated with it (tiny budget: partial loss)
    assert ae.score < 0.5 * ae.max_score and "sigmoid" in ae.output
    assert 0 < by["model.kmeans"].score < by["model.kmeans"].max_score
    assert [q.id for q in eve.questions if q.answer] == ["Q1", "Q2", "Q3", "Q4"]


def test_bugs_that_spoil_training_cost_model_marks_with_a_reason(tmp_path, rubric, monkeypatch):
    """Empty clusters turning NaN ruin the trained centres; a decoder of the wrong output size
    cannot be trained at all: both model checks get 0 and say why."""
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    extra = _planted(MUTANTS["empty_cluster_nan"]) + _planted(MUTANTS["no_output_padding"])
    sub = _submission(tmp_path, "spoilt", extra)
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=["model"], model_overrides=TINY))
    by = {t.check: t for t in result.tests}
    assert by["model.kmeans"].score == 0 and "NaN" in by["model.kmeans"].output, by["model.kmeans"].output
    assert by["model.autoencoder"].score == 0 and "size" in by["model.autoencoder"].output, by["model.autoencoder"].output


def test_release_strips_every_solution_and_ships_only_public_checks(rubric):
    from grader.authoring.release import make_starter, public_checks_source

    starter = make_starter((REPO / "reference" / MODULE).read_text())
    assert "BEGIN SOLUTION" not in starter and ".argmin(" not in starter and "index_add_" not in starter
    namespace: dict = {}
    exec(compile(starter, MODULE, "exec"), namespace)  # the starter imports and defines the API
    for name in ("squared_distances", "assign", "kmeans_loss", "reconstruction_loss"):
        with pytest.raises(NotImplementedError):
            namespace[name](torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(NotImplementedError):
        namespace["ConvAutoencoder"](4, (2, 4))
    checks = public_checks_source(rubric)
    assert "check_autoencoder_io" in checks and "harness" not in checks and "check_model_" not in checks


# ---- hard inputs: bugs that benign inputs hide ------------------------------------------------------------

SEQUENTIAL_UPDATE = '''
def minibatch_update(centres, x_batch, lr):
    # re-assigns the batch after each centre's move (the batch must be assigned once, first)
    centres = centres.clone()
    for k in range(centres.shape[0]):
        idx = assign(x_batch, centres)
        pts = x_batch[idx == k]
        if len(pts):
            centres[k] = centres[k] + lr * (pts.mean(0) - centres[k])
    return centres
'''

LAST_OF_TIES = '''
def assign(x, centres):
    d = squared_distances(x, centres)
    # the last of the nearest centres: as correct as argmin's first
    return (d.shape[1] - 1 - d.flip(1).argmin(dim=1)).long()
'''


def test_update_that_reassigns_after_each_move_loses_points_on_minibatch_update(tmp_path, rubric):
    result = grade_submission(_submission(tmp_path, "sequential", SEQUENTIAL_UPDATE), rubric,
                              GradeOptions(device="cpu", only=["minibatch_update"]))
    by = lost(result)
    assert by.get("minibatch_update", 0) > 0, [(t.check, t.output) for t in result.tests]
    assert "before any centre moves" in " ".join(t.output for t in result.tests)


def test_any_nearest_centre_is_accepted_on_exact_ties(tmp_path, rubric):
    result = grade_submission(_submission(tmp_path, "ties", LAST_OF_TIES), rubric,
                              GradeOptions(device="cpu", only=["assign"]))
    assert lost(result) == {}, [(t.check, t.output) for t in result.tests if t.status != "passed"]


NO_MINLENGTH = """
def confusion(assignments, labels, k, n_classes=10):
    flat = labels.long() * k + assignments.long()
    return torch.bincount(flat).reshape(n_classes, k)  # too short when the last cell is empty
"""


def test_a_confusion_matrix_too_short_when_its_last_cell_is_empty_loses_points(tmp_path, rubric):
    # (held-out bench, seed 219385: every case filled the last cell, so the missing minlength kept full marks)
    result = grade_submission(_submission(tmp_path, "nominlength", NO_MINLENGTH), rubric,
                              GradeOptions(device="cpu", only=["confusion"]))
    assert lost(result).get("confusion", 0) > 0, [(t.check, t.output) for t in result.tests]
    assert "the last cluster and the last class empty" in " ".join(t.output for t in result.tests)


OTHER_DIGITS = "labels == j", "labels != j"  # init_centres picking among the images *not* of digit j


def test_centres_never_of_their_own_digit_are_charged_but_not_named_labels_ignored(tmp_path, rubric):
    # (held-out bench, seed 16743: both share the coarse signature "every centre an image, centre j not of digit
    # j"; labels ignored draws a centre of its own digit one time in ten, `!=` never: 0 of 300 tells them apart)
    src = (REPO / "reference" / MODULE).read_text()
    assert src.count(OTHER_DIGITS[0]) == 1, "the reference changed: update the planted edit"
    folder = tmp_path / "other_digits"
    folder.mkdir()
    (folder / MODULE).write_text(src.replace(*OTHER_DIGITS))
    result = grade_submission(folder, rubric, GradeOptions(device="cpu", only=["init_centres"]))
    assert lost(result).get("init_centres", 0) > 0
    assert named(result) == set(), [t.output for t in result.tests]
    # the library's mistake planted the same way is still named (test_each_planted_mistake_... names it too)
    sub = _submission(tmp_path, "ignores", _planted(MUTANTS["per_digit_ignores_labels"]))
    ignored = grade_submission(sub, rubric, GradeOptions(device="cpu", only=["init_centres"]))
    assert named(ignored) == {"per_digit_ignores_labels"}


@pytest.mark.slow
def test_a_correct_autoencoder_cut_by_the_time_budget_is_compared_with_the_reference_at_the_same_epochs(
        rubric, tmp_path, monkeypatch):
    """A correct but slow autoencoder (a sleep in every forward pass) stops at the time budget after fewer
    epochs than the reference (which trains without one): compared with the reference at as many epochs."""
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    sub = tmp_path / "slow_ae"
    sub.mkdir()
    src = (SUBMISSIONS / "dana" / rubric.module).read_text()
    src += ("\nimport time as _time\n_orig_forward = ConvAutoencoder.forward\n"
            "def _slow(self, x):\n    _time.sleep(0.03)\n    return _orig_forward(self, x)\n"
            "ConvAutoencoder.forward = _slow\n")
    (sub / rubric.module).write_text(src)
    opts = GradeOptions(device="cpu", only=["model"], model_overrides={**TINY, "ae_epochs": 10, "time_budget_s": 1})
    result = grade_submission(sub, rubric, opts)
    ae = next(t for t in result.tests if t.check == "model.autoencoder")
    assert "trained for the same" in ae.output and ae.score == ae.max_score, ae.output


FORGED_RECONSTRUCTIONS = '''

# --- the attack: reconstructions computed in the sandbox are the student's to write. A spare parameter makes the
# weights not fit the sketch's layers, and inside the course's training loop (found on the stack) forward returns
# its input: the "reconstructions" of the test images are the test images themselves.
import sys as _sys
_Honest = ConvAutoencoder


class ConvAutoencoder(_Honest):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spare = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        frame, in_loop = _sys._getframe(1), False
        while frame is not None:
            in_loop = in_loop or "harnesses" in frame.f_code.co_filename
            frame = frame.f_back
        return x + 0 * self.spare if in_loop else super().forward(x)
'''


def test_reconstructions_the_sandbox_computed_are_never_graded(tmp_path, rubric, monkeypatch):
    """Weights that do not fit the reference architecture used to be graded on the reconstructions the child sent:
    an identity 'autoencoder' reported a test MSE of 0 and took full marks (2/2). The grader grades only what it
    computes itself from the trained weights, as the VAE's and the conv VAE's model checks do."""
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    sub = _submission(tmp_path, "forger", FORGED_RECONSTRUCTIONS)
    result = grade_submission(sub, rubric, GradeOptions(device="cpu", only=["model.autoencoder"], model_overrides=TINY))
    (t,) = [t for t in result.tests if t.check == "model.autoencoder"]
    assert t.score == 0, t.output
    assert "do not fit" in t.output and "reference architecture" in t.output, t.output
