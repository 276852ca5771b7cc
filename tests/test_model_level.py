"""Model-level grading on the real digits data, with tiny training budgets to stay fast."""

from __future__ import annotations

import json

import pytest
import torch

from grader.engine import GradeOptions, GradingError, grade_submission
from tests.conftest import make_submission

TINY = {"max_epochs": 10, "M": 64, "K": 20, "time_budget_s": 20, "L": 8, "num_components": 4}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))


def _grade(sub, **kw):
    from grader.rubric import available_rubrics

    kw.setdefault("only", ["model"])
    opts = GradeOptions(device="cpu", model_overrides={**TINY, **kw.pop("overrides", {})}, **kw)
    return grade_submission(sub, available_rubrics()["vae"], opts)


def test_correct_submission_gets_full_model_marks_and_figures(tmp_path):
    sub = make_submission(tmp_path, "good")
    out = tmp_path / "out"
    result = _grade(sub, out_dir=out)
    assert [t.status for t in result.tests] == ["passed"] * 4, [t.output for t in result.tests]
    assert {t.tags[1] for t in result.tests} == {"model.nll", "model.elbo", "model.reconstruction", "model.samples"}
    m = result.metrics
    assert m["nll"]["student"] > 0 and m["nll"]["reference"] > 0
    assert m["nll"]["student"] <= m["negative_elbo"]["student"] + 1e-6  # IS bound is tighter than the ELBO
    assert set(m["per_class_loglik"]["student"]) == {str(d) for d in range(10)} or len(m["per_class_loglik"]["student"]) == 10
    for fig in result.figures:
        assert (out / "good" / fig["path"]).is_file()
    assert {f["tag"] for f in result.figures} >= {"model.samples", "model.reconstruction", "model.elbo"}


def test_reference_is_cached_and_reused_then_invalidated_by_config(tmp_path):
    sub = make_submission(tmp_path, "c")
    first = _grade(sub)
    assert first.metrics["reference_cache"] == "trained now"
    second = _grade(sub)
    assert second.metrics["reference_cache"] == "reused"
    assert second.metrics["nll"]["reference"] == first.metrics["nll"]["reference"]
    third = _grade(sub, overrides={"max_epochs": 9})
    assert third.metrics["reference_cache"] == "trained now"


def test_corrupt_cache_entry_is_retrained(tmp_path):
    from grader import model_cache

    sub = make_submission(tmp_path, "c")
    _grade(sub)
    for f in model_cache.cache_dir().glob("*/weights.safetensors"):
        f.write_bytes(b"garbage")
    assert _grade(sub).metrics["reference_cache"] == "trained now"


def test_decoder_ignoring_z_loses_model_marks_with_collapse_diagnosis(tmp_path):
    extra = "\n_orig_decode = Decoder.decode\ndef _ignore_z(self, z):\n    return _orig_decode(self, torch.zeros_like(z))\nDecoder.decode = _ignore_z\n"
    sub = make_submission(tmp_path, "ignores_z", extra)
    result = _grade(sub, overrides={"max_epochs": 40})
    assert result.autograded_score < result.autograded_max
    assert "posterior collapse" in " ".join(t.output for t in result.tests)


def test_kl_wrong_sign_loses_model_marks_and_names_the_cause(tmp_path):
    from reference.vae_mistakes import MUTANTS
    from tests.conftest import mutant_source

    sub = make_submission(tmp_path, "klsign", mutant_source(MUTANTS["kl_wrong_sign"]))
    from grader.rubric import available_rubrics

    opts = GradeOptions(device="cpu", only=["elbo", "model"], model_overrides=TINY)
    result = grade_submission(sub, available_rubrics()["vae"], opts)
    model = [t for t in result.tests if t.component == "model"]
    assert sum(t.score for t in model) < sum(t.max_score for t in model)
    assert "KL term has the wrong sign" in " ".join(t.output for t in model)


def test_bad_data_path_is_a_clear_grading_error(tmp_path):
    sub = make_submission(tmp_path, "c")
    with pytest.raises(GradingError, match="nowhere"):
        _grade(sub, data=f"mnist:{tmp_path / 'nowhere'}")


def test_checkpoint_is_evaluated_instead_of_training(tmp_path):
    from grader.harnesses import vae as training
    import reference.vae as ref

    sub = make_submission(tmp_path, "ckpt")
    cfg = training.TrainConfig(**{k: v for k, v in TINY.items() if k != "K"})
    model = training.build_vae(ref, 64, 17, "categorical", cfg)
    torch.save(model.state_dict(), sub / "model.pt")
    result = _grade(sub)
    assert result.metrics["source"] == "checkpoint"
    assert all("submitted checkpoint" in t.output for t in result.tests)


def test_checkpoint_that_does_not_fit_gets_a_clear_message(tmp_path):
    sub = make_submission(tmp_path, "badckpt")
    torch.save({"encoder.encoder.0.weight": torch.zeros(3, 3)}, sub / "model.pt")
    result = _grade(sub)
    assert result.autograded_score == 0
    assert "do not fit the reference VAE" in result.tests[0].output


def test_pickle_checkpoint_is_refused_and_never_executed(tmp_path):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    sub = make_submission(tmp_path, "evilckpt")
    (sub / "model.pt").write_bytes(pickle.dumps({"x": Evil()}))
    result = _grade(sub)
    assert not marker.exists()
    assert "could not be loaded safely" in result.tests[0].output


def test_a_correct_model_cut_by_the_time_budget_is_compared_with_the_reference_at_the_same_epochs(tmp_path):
    """How many epochs fit in the time budget depends on the machine's load and the code's speed, not
    on its maths: a correct but slow VAE (a sleep in every forward pass) stops early at the budget and
    is compared with the reference trained for the same number of epochs, at full marks."""
    extra = ("\nimport time as _time\n_orig_forward = VAE.forward\n"
             "def _slow(self, *a, **k):\n    _time.sleep(0.05)\n    return _orig_forward(self, *a, **k)\n"
             "VAE.forward = _slow\n")
    sub = make_submission(tmp_path, "slow", extra)
    result = _grade(sub, overrides={"max_epochs": 12, "time_budget_s": 4})
    assert result.metrics["training"]["stopped_because"] == "time_budget", result.metrics["training"]
    text = " ".join(t.output for t in result.tests)
    assert "trained for the same" in text, text
    assert [t.status for t in result.tests] == ["passed"] * 4, [t.output for t in result.tests]


FORGE = """
import dataclasses as _dc
import grader.harnesses.vae as _gt
_real_train = _gt.train_vae
def _forged(model, x_train, x_val, config=None, device="cpu"):
    h = _real_train(model, x_train, x_val, _dc.replace(config, max_epochs=1), device)
    h.stopped_because, h.message = "time_budget", "time budget used up after epoch 1"
    return h
_gt.train_vae = _forged
"""


def test_a_forged_time_budget_stop_does_not_lower_the_reference(tmp_path):
    """Issue 19, training claims: the child says "time budget used up after epoch 1" for a buggy VAE, which
    would compare it with a 1-epoch reference (1.92/7 -> 3.58/7 in the issue). The grader measured far less
    than the budget: the claim is ignored, the reference is the full one, the report says so."""
    from reference.vae_mistakes import MUTANTS
    from tests.conftest import mutant_source

    bug = mutant_source(MUTANTS["kl_wrong_sign"])
    honest = _grade(make_submission(tmp_path, "honest", bug))
    forged = _grade(make_submission(tmp_path, "forged", bug + FORGE))
    assert forged.metrics["training"]["stopped_because"] == "time_budget"  # what the child said, kept as said
    assert forged.metrics["nll"]["reference"] == honest.metrics["nll"]["reference"]  # the bar did not move
    assert forged.autograded_score <= honest.autograded_score + 1e-9, (forged.autograded_score, honest.autograded_score)
    text = " ".join(t.output for t in forged.tests)
    assert "the claim is ignored" in text and "trained for the same" not in text, text


SECRET = "00112233445566778899aabbccddeeff"
CHATTY = ('\nprint("hello from import")\n_forward = VAE.forward\n'
          'def _chatty(self, *a, **k):\n    print("a training step")\n    return _forward(self, *a, **k)\n'
          'VAE.forward = _chatty\n')
BROKEN_VAE = "\ndef _broken(self, *a, **k):\n    raise ValueError('no VAE today')\nVAE.__init__ = _broken\n"


def _comparable(result) -> str:
    """results.json less what differs between two gradings of one submission (times, dates, whether the reference
    was trained by the first one)."""
    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("execution_time", "graded_at", "duration", "seconds",
                                                                   "epoch_seconds", "reference_cache")}
        return [strip(v) for v in o] if isinstance(o, list) else o
    return json.dumps(strip(result.to_json()), indent=1, sort_keys=True)


@pytest.mark.parametrize("extra", [CHATTY, BROKEN_VAE], ids=["prints at import and in training", "VAE() raises"])
def test_training_ahead_in_a_second_child_gives_the_results_of_one_child(tmp_path, monkeypatch, extra):
    """Training the student's model in a second child while the unit checks run (two cores) changes the wall time
    only: scores, feedback, metrics and the student's output (the import's once) are those of one child."""
    from grader.checks import model_level

    started, init = [], model_level.TrainingAhead.__init__

    def spy(self, ctx, call):
        started.append(call.function)
        init(self, ctx, call)

    monkeypatch.setattr(model_level.TrainingAhead, "__init__", spy)
    sub = make_submission(tmp_path, "ahead", extra)
    only = ["log_standard_normal", "model"]
    one = _comparable(_grade(sub, only=only, secret=SECRET, train_ahead=False))
    assert started == []
    two = _comparable(_grade(sub, only=only, secret=SECRET, train_ahead=True))
    assert started == ["vae.train"]
    assert one == two  # as text: a NaN metric is equal to itself there
    one = json.loads(one)
    out = one["extra_data"]["gradekit"]["student_output"]
    if extra == CHATTY:
        assert out.count("hello from import") == 1 and "a training step" in out, out[:300]
    else:
        assert "no VAE today" in one["tests"][-1]["output"]


def test_training_ahead_only_with_two_cores_and_model_checks_after_the_others(vae_rubric):
    from grader.engine import _trains_ahead

    def ahead(tags, **kw):
        return _trains_ahead(vae_rubric.select(tags), GradeOptions(**kw))

    assert ahead(["log_normal_diag", "model"], threads=2)
    assert not ahead(["log_normal_diag", "model"], threads=1)  # `grade batch -j 2` on two cores: one each
    assert not ahead(["log_normal_diag", "model"], threads=2, train_ahead=False)
    assert not ahead(["model"], threads=2)  # nothing to overlap with
    assert not ahead(["log_normal_diag"], threads=2)  # nothing to train


def test_a_checkpoint_tensor_larger_than_its_stored_data_is_refused(tmp_path):
    """torch.save keeps strides: a 1.6 kB model.pt held a zero-stride float16 view of 250 M numbers, 1 GB in the
    grader once converted to float32 (a longer one: all its memory). Refused before any conversion, with a message."""
    from grader.checks.model_level import ModelGradingError, checkpoint_weights

    torch.save({"encoder.encoder.0.weight": torch.zeros(1, dtype=torch.float16).expand(50_000_000)}, tmp_path / "model.pt")
    assert (tmp_path / "model.pt").stat().st_size < 4096
    with pytest.raises(ModelGradingError, match="stores only 1 "):
        checkpoint_weights(tmp_path)
    shared = torch.zeros(1000, dtype=torch.float16)  # many tensors viewing one storage: each converted on its own
    torch.save({f"w{i}": shared for i in range(3)} | {"big": torch.zeros(10)}, tmp_path / "model.pt")
    assert set(checkpoint_weights(tmp_path)) == {"w0", "w1", "w2", "big"}  # small ones load as before


def test_a_corrupt_checkpoint_says_what_is_wrong_and_what_to_do(tmp_path):
    from grader.checks.model_level import ModelGradingError, checkpoint_weights

    (tmp_path / "model.pt").write_bytes(b"\x93NUMPY not a zip archive" * 100)
    with pytest.raises(ModelGradingError) as e:
        checkpoint_weights(tmp_path)
    assert "is not a torch.save() zip archive" in str(e.value)
    assert "torch.save(model.state_dict(), 'model.pt')" in str(e.value) and "leave it out" in str(e.value)
