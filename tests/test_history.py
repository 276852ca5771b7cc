"""One training history: the stop reasons every loop reports, the report's words for them, and the claims
the grader believes only when its own clock agrees (grader/history.py)."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from grader.history import STOP_REASONS, TrainingClaim, epochs_done, stop_reason
from grader.report.display import training_sentence

REPO = Path(__file__).resolve().parents[1]


def _stop_words_in_source() -> set[str]:
    """Every string literal assigned to a `stopped_because` (key, attribute or keyword) anywhere in grader/."""
    words = set()
    for path in (REPO / "grader").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                words |= {v.value for k, v in zip(node.keys, node.values)
                          if isinstance(k, ast.Constant) and k.value == "stopped_because" and isinstance(v, ast.Constant)}
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                for t in node.targets:
                    if (isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant) and t.slice.value == "stopped_because") \
                            or (isinstance(t, ast.Attribute) and t.attr == "stopped_because"):
                        words.add(node.value.value)
    return words


def test_every_loop_reports_one_of_the_stop_reasons():
    words = _stop_words_in_source()
    assert {"time_budget", "diverged", "error", "max_epochs"} <= words, words  # the scan finds the loops
    assert words <= set(STOP_REASONS), f"stop reasons outside grader/history.py: {words - set(STOP_REASONS)}"


@pytest.mark.parametrize("reason", sorted(STOP_REASONS))
def test_the_report_words_every_stop_reason(reason):
    text = training_sentence({"stopped_because": reason, "best_epoch": 3, "seconds": 1.5})
    assert STOP_REASONS[reason][1:] in text, text


def test_the_training_loop_early_stop_is_worded_as_such():
    """The VAE loop says "early_stopping"; the report used to look up "patience", so the sentence never showed."""
    from grader.harnesses.vae import STOP_REASONS as LOOP_REASONS

    assert set(LOOP_REASONS) == set(STOP_REASONS)
    assert "no longer improved" in training_sentence({"stopped_because": "early_stopping"})


def test_older_words_are_mapped_and_unknown_ones_never_shown_raw():
    assert stop_reason("time") == "time_budget" and stop_reason("epochs") == "max_epochs"
    assert stop_reason("patience") == "early_stopping" and stop_reason("nonsense") == "" and stop_reason(None) == ""
    text = training_sentence({"stopped_because": "nonsense"})
    assert text.startswith("Training ended") and "nonsense" not in text, text  # grader.glossary: no internal names


def test_epochs_done_reads_lists_and_counts_and_nothing_else():
    assert epochs_done({"epochs": [1, 2, 3]}) == 3 and epochs_done({"epochs": 4}) == 4
    assert epochs_done({"epochs": True}) == 0 and epochs_done({"epochs": -2}) == 0 and epochs_done("x") == 0


def test_a_budget_stop_is_believed_only_when_the_grader_measured_the_budget():
    seen = TrainingClaim("your VAE's training", 3, "time_budget", measured_s=31.0, budget_s=30.0)
    assert seen.budget_stop_seen and seen.matched_epochs(10) == 3 and not seen.ignored(10)
    forged = TrainingClaim("your VAE's training", 1, "time_budget", measured_s=2.0, budget_s=30.0)
    assert forged.matched_epochs(10) == 0 and forged.ignored(10)
    assert "2.0 s of the 30 s budget" in forged.note() and forged.note().startswith("Your VAE's training")
    # nothing to match: all epochs done, another reason, no epoch, or a clock that says nothing
    assert seen.matched_epochs(3) == 0 and not seen.ignored(3)
    assert TrainingClaim("x", 3, "early_stopping", 1.0, 30.0).matched_epochs(10) == 0
    assert TrainingClaim("x", 0, "time_budget", 31.0, 30.0).matched_epochs(10) == 0
    assert TrainingClaim("x", 3, "time_budget", math.nan, 30.0).matched_epochs(10) == 0
    assert TrainingClaim("x", 3, "time", 31.0, 30.0).matched_epochs(10) == 3  # an older loop's word


def test_a_forged_history_is_kept_bounded_and_its_loss_figure_draws_quickly(tmp_path):
    """The child's history is a claim (it can replace the course's loop): 30 M losses up to 1e308 as arrays, an
    array where the epochs belong and a 5 MB message must leave per-epoch lists of at most MAX_EPOCHS_KEPT
    numbers and a short text, which the report's loss curve draws in seconds."""
    import time

    import numpy as np

    from grader import figures
    from grader.checks.vae_model import MODEL
    from grader.checks.model_level import ModelRun
    from grader.history import MAX_EPOCHS_KEPT

    n = 3_000_000
    forged = {"train_loss": np.linspace(1.0, 1e308, n), "val_loss": np.linspace(1.0, 1e308, n),
              "epochs": np.arange(n, dtype=np.float64)[::-1].copy(), "message": "M" * 5_000_000,
              "best_epoch": float("nan"), "stopped_because": ["max_epochs"], "state_dict": {"w": np.zeros(2)}}
    run = ModelRun(settings=None, data=None, reference=None)
    MODEL.run_training = lambda ctx, call: ({"history": forged}, 1.0)
    MODEL.training_call = lambda ctx, s, data: None
    try:
        weights = MODEL.train_student(None, SimpleNamespace(time_budget_s=45.0), None, run)
    finally:
        del MODEL.run_training, MODEL.training_call
    h = run.student_history
    assert set(weights) == {"w"} and "state_dict" not in h
    assert all(isinstance(h[k], list) and len(h[k]) == MAX_EPOCHS_KEPT for k in ("train_loss", "val_loss", "epochs"))
    assert len(h["message"]) <= 4000 and h["stopped_because"] is None and run.claim.done == MAX_EPOCHS_KEPT
    t0 = time.monotonic()
    figures.loss_curves(h, {"train_loss": [2.0, 1.0], "val_loss": [2.5, 1.5], "epochs": [1, 2]}, tmp_path / "c.png")
    assert time.monotonic() - t0 < 20


def test_only_the_top_level_state_dict_passes_unbounded():
    """The trained weights travel as the history's `state_dict`; a dict of that name deeper in the history is the
    child's claim like the rest and is bounded."""
    from grader.history import MAX_EPOCHS_KEPT, bounded

    weights = {"w": list(range(MAX_EPOCHS_KEPT + 5))}
    h = bounded({"state_dict": weights, "part": {"state_dict": {"loss": list(range(MAX_EPOCHS_KEPT + 5))}}})
    assert h["state_dict"] is weights
    assert len(h["part"]["state_dict"]["loss"]) == MAX_EPOCHS_KEPT
