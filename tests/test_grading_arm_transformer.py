"""Tests of the `arm-transformer` assignment (scaffolded by `grade new`, then written for the assignment).

The grader is honest only if a wrong block loses points and a right one, in any style, does not: every mutant
is planted in a copy of the reference and must cost points on its own component and be named; the examples
(a post-norm nn.MultiheadAttention block, a notebook with an einsum block, a buggy block) get what they earn;
the course's given code (grader/harnesses/arm_transformer.py) is tested directly. Unit checks only, except the
model-level test (slow: it trains the course's decoder twice, tiny).
"""

from __future__ import annotations

import inspect
import math
import re
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.engine import GradeOptions, grade_submission
from grader.rubric import available_rubrics, lint_rubric
from reference.arm_transformer_mistakes import MUTANTS

REPO = Path(__file__).resolve().parents[1]
SUBMISSIONS = REPO / "submissions"
MODULE = "arm_transformer.py"
UNIT = GradeOptions(device="cpu", only=["block"])
# model level in a few seconds: one small block, two epochs, few samples
TINY = {"num_emb": 16, "num_neurons": 32, "num_blocks": 1, "max_epochs": 2, "time_budget_s": 30, "num_samples": 16}


@pytest.fixture(scope="module")
def rubric():
    return available_rubrics()["arm-transformer"]


def _planted(mutant) -> str:
    src = textwrap.dedent(inspect.getsource(mutant.fn))
    body = re.sub(r"def \w+\(", "def _planted(", "\n".join(l for l in src.splitlines() if not l.lstrip().startswith("@")), count=1)
    owner, _, attr = mutant.component.rpartition(".")
    install = f"{owner}.{attr} = _planted" if owner else f"{attr} = _planted"
    return f"\n\n# --- planted mistake: {mutant.id} ---\n{body}\n{install}\n"


def _lost(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in result.tests:
        if t.score < t.max_score:
            out.setdefault(t.component, []).append(t.check)
    return out


def test_rubric_lints(rubric):
    assert lint_rubric(rubric) == []


def test_reference_gets_full_marks(tmp_path, rubric):
    (tmp_path / MODULE).write_text((REPO / "reference" / MODULE).read_text())
    result = grade_submission(tmp_path, rubric, UNIT)
    assert not result.errors, result.errors
    assert _lost(result) == {}, [(t.check, t.output) for t in result.tests if t.status != "passed"]


@pytest.mark.parametrize("example", ["arm-transformer-example", "arm-transformer-notebook"])
def test_correct_examples_in_other_styles_get_full_marks(rubric, example):
    result = grade_submission(SUBMISSIONS / example, rubric, UNIT)
    assert not result.errors, result.errors
    assert _lost(result) == {}, [(t.check, t.output) for t in result.tests if t.status != "passed"]
    assert len(result.tests) == sum(1 for c in rubric.checks if c.component == "block")


def test_buggy_example_loses_on_causality_and_heads_and_both_are_named(rubric):
    result = grade_submission(SUBMISSIONS / "arm-transformer-buggy", rubric, UNIT)
    assert not result.errors, result.errors
    lost = {t.check for t in result.tests if t.score < t.max_score}
    assert lost == {"block.causal", "block.heads"}, [(t.check, t.output) for t in result.tests]
    named = {m["id"]: t.check for t in result.tests for m in t.mistakes}
    assert named == {"mask_lets_next_in": "block.causal", "heads_alike": "block.heads"}
    decoder = [t for t in result.tests if t.check.startswith("decoder.")]
    assert decoder and all("Not judged" in t.output for t in decoder)  # the leak is charged once, in block.causal


@pytest.mark.parametrize("mistake_id", sorted(MUTANTS))
def test_each_mistake_costs_points_on_its_component_and_is_named(tmp_path, rubric, mistake_id):
    mutant = MUTANTS[mistake_id]
    component = next(m.component for m in rubric.mistakes if m.id == mistake_id)
    (tmp_path / MODULE).write_text((REPO / "reference" / MODULE).read_text() + _planted(mutant))
    result = grade_submission(tmp_path, rubric, UNIT)
    lost = {t.component for t in result.tests if t.score < t.max_score}
    assert lost == {component}, [(t.check, t.output) for t in result.tests if t.score < t.max_score]
    assert mistake_id in {m["id"] for t in result.tests for m in t.mistakes}


BROKEN = {
    # forward returns a tuple (as nn.MultiheadAttention does): unusable by the course's decoder
    "tuple": "return (x, None)",
    # attention over the batch dimension (a sequence-first module fed batch-first input): mixes students' sequences
    "batch_mix": "return x + x.mean(dim=0, keepdim=True)",
    # a mask built once for 8 positions: fails for longer sequences
    "fixed_length": "return x + torch.zeros(1, 8, 1, dtype=x.dtype)",
    # detached: no gradient reaches the parameters
    "detached": "return self.mlp(self.ln2(x)).detach() + x",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_blocks_lose_points_with_a_message_never_a_grader_error(tmp_path, rubric, kind):
    src = (REPO / "reference" / MODULE).read_text()
    src += ("\n\ndef _broken(self, x, causal=True):\n    " + BROKEN[kind] + "\n\nTransformerBlock.forward = _broken\n")
    (tmp_path / MODULE).write_text(src)
    result = grade_submission(tmp_path, rubric, UNIT)
    assert not result.errors, result.errors
    assert result.autograded_score < result.autograded_max
    assert not any("Internal grader error" in t.output for t in result.tests), [t.output for t in result.tests]


# ---- the course's given code, directly ----------------------------------------------------------------

def test_the_course_decoder_with_the_reference_block_is_a_normalised_arm():
    import reference.arm_transformer as ref
    from grader.harnesses import arm_transformer as harness

    out = harness.decoder_nll(ref, torch.device("cpu"), num_tokens=4, num_token_vals=3)
    assert out["nll"].shape == (27,) and out["log_probs"].shape == (27, 4, 3)
    assert math.isclose(np.exp(-out["nll"]).sum(), 1.0, rel_tol=1e-5)
    assert math.isclose(out["sum"], out["nll"].sum(), rel_tol=1e-5) and out["blocks_without_grad"] == []
    seqs = harness.all_sequences(4, 3)
    assert (seqs[:, 0] == 2).all() and len({tuple(r) for r in seqs}) == 27


def _forged(es, v: int, kind: str) -> np.ndarray:
    """Next-token log-probabilities M×(T−1)×V for the rows of `es` from a stand-in model of `kind` (numpy, no training)."""
    m, t = es.x.shape
    probs = np.full((m, t - 1, v), 1.0 / v)  # "honest": the same guess everywhere, causal and batch-independent
    if kind == "peek":  # reads the token it predicts (the buggy example's mask, or a forger indexing x[:, t + 1])
        probs = np.full((m, t - 1, v), 0.01 / (v - 1))
        np.put_along_axis(probs, es.x[:, 1:, None], 0.99, axis=2)
    elif kind in ("lookup", "lookup_others"):  # an ARM of the rows it was sent: each prefix's continuations among
        table: dict = {}                        # them, itself included or every copy of itself left out
        for row in es.x.tolist():
            for i in range(1, t):
                table.setdefault(tuple(row[:i]), np.zeros(v))[row[i]] += 1
        copies = Counter(map(tuple, es.x.tolist()))
        for r, row in enumerate(es.x.tolist()):
            for i in range(t - 1):
                c = table[tuple(row[:i + 1])] + 1e-3
                if kind == "lookup_others":
                    c[row[i + 1]] -= copies[tuple(row)]
                probs[r, i] = c / c.sum()
    elif kind == "batch":  # reads the other rows of its batch (e.g. attention over the batch dimension)
        mean = np.add.reduceat(es.x, np.arange(0, m, es.batch_size), axis=0).mean(axis=1) / es.batch_size
        probs[:, :, 0] += np.repeat(mean, es.batch_size)[:m, None]
        probs /= probs.sum(axis=2, keepdims=True)
    return np.log(probs)


@pytest.mark.parametrize("kind, message", [("honest", ""), ("peek", "not causal"), ("lookup", "not causal"),
                                           ("lookup_others", "not causal"), ("batch", "other sequences of its batch"), ("unnormalised", "sum to 1")])
def test_metrics_are_the_graders_own_and_refuse_a_model_that_reads_what_it_predicts(kind, message):
    """The grader lays out the test rows with causality probes and copies (`eval_set`) and computes the NLL itself:
    a model that peeks at the token it predicts, looks it up in the rows it was sent (itself included or left out), or
    reads its batch is refused."""
    from grader.checks import arm_transformer_model as checks

    data = checks.load(checks.Settings())
    v = data.num_token_vals
    es = checks.eval_set(data.x_test, v, seed=7)
    n, t = data.x_test.shape
    assert es.x.shape == (3 * n, t) and (es.x[es.test] == data.x_test).all() and (es.x[es.copy] == data.x_test).all()
    assert sorted(np.concatenate([es.test, es.probe, es.copy]).tolist()) == list(range(3 * n))
    probe = es.x[es.probe]
    assert all((probe[i, :c] == data.x_test[i, :c]).all() and probe[i, c] != data.x_test[i, c] for i, c in enumerate(es.cut))
    assert not np.array_equal(es.cut, checks.eval_set(data.x_test, v, seed=8).cut)  # drawn from the seed (the secret)
    lp = _forged(es, v, "honest" if kind == "unnormalised" else kind) + (0.3 if kind == "unnormalised" else 0.0)
    out = {"log_probs": lp.astype(np.float32), "samples": data.x_test[:8]}
    if not message:
        assert checks._metrics(out, data, es, v)["test_bits_per_token"] == pytest.approx(math.log2(v), rel=1e-5)
        return
    with pytest.raises(checks.ModelGradingError, match=message):
        checks._metrics(out, data, es, v)
    assert checks._sample_distance(data.x_test, data) == 0.0


def test_headlines_are_read_from_a_local_file_with_the_course_tokenizer(tmp_path, monkeypatch):
    from grader.checks import arm_transformer_model as checks

    monkeypatch.setattr(checks, "MAX_TEST_ROWS", 3)  # the test split (4 of 40 lines) is cut to the first 3

    f = tmp_path / "headlines.txt"
    f.write_text("\n".join(f"Café number {i} opens, again!" for i in range(40)))
    data = checks.load(checks.Settings(data=f"headlines:{f}", max_length=12))
    assert data.num_token_vals == 29 and data.x_train.shape[1] == 13 and (data.x_train[:, 0] == 28).all()
    assert len(data.x_train) == 32 and data.x_test.shape == (3, 13) and "32/4/3 train/val/test" in data.summary()
    assert "".join(checks.ALPHABET[i - 1] for i in data.x_train[0, 1:] if i) == "cafe number "
    with pytest.raises(ValueError, match="does not exist"):
        checks.load(checks.Settings(data=f"headlines:{tmp_path / 'missing.txt'}"))


# ---- model level ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_model_level_grades_a_correct_block_and_refuses_a_leaky_one(tmp_path, rubric, monkeypatch):
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    opts = GradeOptions(device="cpu", only=["model"], model_overrides=TINY, out_dir=tmp_path / "out")
    good = grade_submission(SUBMISSIONS / "arm-transformer-example", rubric, opts)
    assert not good.errors, good.errors
    bits = good.metrics["test_bits_per_token"]
    assert 0 < bits["student"] < math.log2(5) and 0 < bits["reference"] < math.log2(5)
    nll = next(t for t in good.tests if t.check == "model.nll")
    assert nll.score > 0, nll.output
    assert any(f["path"].endswith("arm_samples.png") for f in good.figures)
    bad = grade_submission(SUBMISSIONS / "arm-transformer-buggy", rubric, opts)
    nll = next(t for t in bad.tests if t.check == "model.nll")
    assert nll.score == 0 and "not causal" in nll.output
    assert bad.metrics["reference_cache"] == "reused"


# ---- what students receive, and the Gradescope zip -------------------------------------------------------

def test_gradescope_zip_holds_the_assignment_and_its_harness(tmp_path):
    import zipfile

    from click.testing import CliRunner

    from grader.cli import main

    out = tmp_path / "autograder.zip"
    r = CliRunner().invoke(main, ["gradescope", "build", "--assignment", "arm-transformer", "--out", str(out)])
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert "python3 -m grader.gradescope arm-transformer" in zf.read("run_autograder").decode()
    for needed in ("reference/arm_transformer.py", "reference/arm_transformer_mistakes.py", "rubrics/arm-transformer.toml",
                   "grader/checks/arm_transformer.py", "grader/harnesses/arm_transformer.py"):
        assert "gradekit/" + needed in names


@pytest.mark.slow
def test_release_bundle_self_checks_the_examples_offline(tmp_path):
    import subprocess
    import sys

    from click.testing import CliRunner

    from grader.cli import main

    out = tmp_path / "release"
    r = CliRunner().invoke(main, ["release", "arm-transformer", "--out", str(out)])
    assert r.exit_code == 0, r.output
    starter = (out / MODULE).read_text()
    assert "TODO: implement TransformerBlock.forward" in starter and "masked_fill" not in starter
    run = lambda sub: subprocess.run([sys.executable, "selfcheck.py", str(SUBMISSIONS / sub / MODULE), "--json"],  # noqa: E731
                                     cwd=out, capture_output=True, text=True, timeout=600)
    good, bad = run("arm-transformer-example"), run("arm-transformer-buggy")
    assert good.returncode == 0, good.stdout + good.stderr
    assert bad.returncode == 1 and "block.causal" in bad.stdout, bad.stdout + bad.stderr


HOSTILE = '''
import sys
import torch
import torch.nn.functional as F
import grader.harnesses.arm_transformer as course


def _lookup(x):
    """The sequences to evaluate, read from the harness's frame: each prefix's next-token counts (an ARM of the test set)."""
    f = sys._getframe()
    while f is not None and "x_eval" not in f.f_locals:
        f = f.f_back
    table = {}
    if f is not None:
        for row in f.f_locals["x_eval"].tolist():
            for t in range(1, len(row)):
                counts = table.setdefault(tuple(row[:t]), {})
                counts[row[t]] = counts.get(row[t], 0) + 1
    return table


_train = course.DecoderTransformer.transformer_forward


def _cheat(self, x, causal=True, temperature=1.0):
    if torch.is_grad_enabled():  # training: the course's forward
        return _train(self, x, causal, temperature)
    table = _lookup(x)
    out = torch.full((*x.shape, self.num_token_vals), 1e-6)
    for b, row in enumerate(x.tolist()):
        for t in range(len(row)):
            for v, n in table.get(tuple(row[:t + 1]), {}).items():
                out[b, t, v] += n
    return torch.log(out / out.sum(2, keepdim=True)).to(x.device)


course.DecoderTransformer.transformer_forward = _cheat
'''


@pytest.mark.slow
def test_model_level_refuses_a_forward_that_looks_up_the_sequences_it_predicts(tmp_path, rubric, monkeypatch):
    """The student's model is evaluated in the sandbox: a module that replaces the course's forward by a lookup of the
    sequences it is sent (normalised, the same prediction for the same prefix) predicts the grader's random probe
    tokens far better than chance, and earns no model marks."""
    monkeypatch.setenv("GRADEKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / MODULE).write_text((REPO / "reference" / MODULE).read_text() + HOSTILE)
    result = grade_submission(tmp_path / "sub", rubric,
                              GradeOptions(device="cpu", only=["model"], model_overrides=TINY, write_figures=False))
    nll = next(t for t in result.tests if t.check == "model.nll")
    assert nll.score == 0, nll.output
    assert "not causal" in nll.output and "drew at random" in nll.output, nll.output
    samples = next(t for t in result.tests if t.check == "model.samples")
    assert samples.score == 0, samples.output
