"""One training history for every model-level loop, and the words the report uses for why it stopped.

Every harness that trains a student's model (in the sandbox) and every reference training (in the grader)
reports what happened with the same keys and one of STOP_REASONS. What the child reports is a *claim*: the
grader measures the training call's wall time itself (`TrainingClaim`), and a stop at the time budget that it
did not see happen is ignored (issue 19: a forged "time budget used up after epoch 1" must not lower the bar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STOP_REASONS = {
    "max_epochs": "training ran all its epochs",
    "early_stopping": "training stopped early: the validation loss no longer improved",
    "time_budget": "training stopped at the time budget",
    "diverged": "training diverged (the loss became NaN or infinite)",
    "error": "training stopped with an error",
}
"""Why a training loop stopped -> how the report says it."""

_LEGACY = {"epochs": "max_epochs", "time": "time_budget", "patience": "early_stopping"}


def stop_reason(value: object) -> str:
    """`value` as one of STOP_REASONS (older harness words mapped: "time" -> "time_budget", ...); "" if unknown."""
    reason = _LEGACY.get(str(value or ""), str(value or ""))
    return reason if reason in STOP_REASONS else ""


MAX_EPOCHS_KEPT = 10_000  # values of one per-epoch list kept from a child's history (the figures draw them)


def bounded(history: object, _top: bool = True) -> dict:
    """A child's training history as the grader keeps it: a dict of numbers, short texts and per-epoch lists of
    at most MAX_EPOCHS_KEPT numbers (a numpy array becomes such a list; anything else None). What the child
    sends is a claim (issue 19): a forged history of 20 M epochs held as arrays, or an array where the loss
    curve's epochs belong, must cost the report's figure neither minutes nor memory."""
    # numpy here, not at the top: this module is imported by the report's glossary before grade run forks its report
    # worker, and numpy's import starts a BLAS thread, after which forking is refused (background_supported)
    import numpy as np

    if not isinstance(history, dict):
        return {}
    out = {}
    for k, v in list(history.items())[:64]:
        if k in ("stopped_because", "message") and not isinstance(v, str):
            v = None  # texts the report words, or quotes
        if isinstance(v, np.ndarray):
            v = v.reshape(-1)[:MAX_EPOCHS_KEPT].tolist() if v.dtype.kind in "biuf" else None
        if isinstance(v, (list, tuple)):
            v = [x if type(x) in (int, float, bool) or x is None else None for x in v[:MAX_EPOCHS_KEPT]]
        elif isinstance(v, str):
            v = v[:4000]
        elif isinstance(v, dict):
            # the trained weights (amortized-vs-lo's loops; the codec bounds their arrays), at the top level only
            v = v if _top and k == "state_dict" else bounded(v, False)
        elif not (v is None or type(v) in (int, float, bool)):
            v = None
        out[str(k)[:200]] = v
    return out


def epochs_done(history: object) -> int:
    """Epochs a history says were trained: the length of its `epochs` list (or the count some loops report)."""
    if not isinstance(history, dict):
        return 0
    epochs = history.get("epochs")
    if isinstance(epochs, (list, tuple)):
        return len(epochs)
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        return max(0, epochs)
    return 0


@dataclass(frozen=True)
class TrainingClaim:
    """What the child says about one training call, beside what the grader measured around it.

    `done`: epochs (or steps) the child says it finished; `stopped_because`: its reason; `measured_s`: the
    grader's own wall clock around the whole call (data transfer included, so a real budget stop always
    measures at least `budget_s`); `budget_s`: the budget the loop was given."""

    what: str  # e.g. "your VAE's training", for the note
    done: int
    stopped_because: str
    measured_s: float
    budget_s: float

    @property
    def budget_stop_seen(self) -> bool:
        """The grader saw the time budget run out during the call: only then is an early stop believed."""
        return math.isfinite(self.measured_s) and self.measured_s >= self.budget_s

    def matched_epochs(self, reference_epochs: int) -> int:
        """Epochs to train the reference for so that it is compared at the student's: `done` when the budget
        stopped the student's loop before the reference's count (load and speed are not mistakes), else 0
        (the full reference). A budget stop the grader did not measure is not believed (0)."""
        if stop_reason(self.stopped_because) != "time_budget" or not 0 < self.done < reference_epochs:
            return 0
        return self.done if self.budget_stop_seen else 0

    def ignored(self, reference_epochs: int) -> bool:
        """The child claimed a budget stop that would have lowered the bar, and the grader did not see it."""
        return (stop_reason(self.stopped_because) == "time_budget" and 0 < self.done < reference_epochs
                and not self.budget_stop_seen)

    def note(self) -> str:
        return (f"{self.what[0].upper() + self.what[1:]} reported that the time budget stopped it after {self.done} "
                f"epoch(s), but the grader measured {self.measured_s:.1f} s of the {self.budget_s:g} s budget: the claim "
                "is ignored, and your model is compared with the reference trained for all its epochs.")
