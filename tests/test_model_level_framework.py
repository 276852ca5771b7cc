"""ModelLevel's own rules on a toy assignment (no sandbox, no training, milliseconds): with several loops, each
loop that its time budget stopped (as the grader measured) is matched in one reference, a claim the grader did not
see is ignored, a part that fails keeps its error apart from the others, and a failing figure costs nothing."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from grader.checks.model_level import ModelLevel, ModelRun, Reference
from grader.history import TrainingClaim


@dataclass(frozen=True)
class ToySettings:
    data: str = "toy"
    a_epochs: int = 10
    b_epochs: int = 10
    time_budget_s: float = 5.0


class Toy(ModelLevel):
    """Two loops, "a" and "b"; the reference "trains" for its settings' epochs and records them."""

    name = "toy.model"
    Settings = ToySettings

    def __init__(self, claims: dict, figure_error: Exception | None = None):
        self.claims, self.figure_error, self.trained = claims, figure_error, []

    def load_data(self, s):
        return "toy data"

    def reference(self, ctx, s, data) -> Reference:  # no cache here: the framework's matching is under test
        self.trained.append((s.a_epochs, s.b_epochs))
        history = {loop: {"epochs": list(range(1, getattr(s, f"{loop}_epochs") + 1))} for loop in "ab"}
        return Reference({"a_epochs": s.a_epochs, "b_epochs": s.b_epochs}, history)

    def reference_epochs(self, run: ModelRun, epochs_field: str) -> int:
        return len(run.reference_history[epochs_field[0]]["epochs"])

    def train_student(self, ctx, s, data, run: ModelRun) -> dict:
        run.claims.update(self.claims)
        run.errors["b"] = "training your b failed: ValueError"
        return {}

    def evaluate(self, ctx, s, data, run: ModelRun, weights: dict) -> None:
        run.student_metrics = {"a": 1.0}

    def figures(self, ctx, run: ModelRun) -> None:
        if self.figure_error is not None:
            raise self.figure_error


def _ctx():
    rubric = SimpleNamespace(id="toy", path="rubrics/toy.toml", model={})
    return SimpleNamespace(rubric=rubric, session=SimpleNamespace(cache={}, metrics={}, model_overrides={}, data=None))


def _budget_stop(loop: str, epochs: int, measured_s: float) -> TrainingClaim:
    return TrainingClaim(f"your {loop}'s training", epochs, "time_budget", measured_s, 5.0)


def test_every_loop_stopped_by_its_budget_is_matched_in_one_reference():
    toy, ctx = Toy({"a_epochs": _budget_stop("a", 4, 5.5), "b_epochs": _budget_stop("b", 3, 6.0)}), _ctx()
    run = toy.run(ctx)
    assert run.epochs_matched == {"a_epochs": 4, "b_epochs": 3}
    assert toy.trained == [(10, 10), (4, 3)]  # the full reference, then one trained at both loops' epochs
    assert run.reference_metrics == {"a_epochs": 4, "b_epochs": 3}
    assert run.epoch_matched == 0  # no single-loop claim (`epochs_field` "max_epochs" is not a loop here)


def test_a_budget_stop_the_grader_did_not_measure_is_ignored_and_said():
    toy, ctx = Toy({"a_epochs": _budget_stop("a", 4, 5.5), "b_epochs": _budget_stop("b", 3, 0.2)}), _ctx()
    run = toy.run(ctx)
    assert run.epochs_matched == {"a_epochs": 4}
    assert toy.trained == [(10, 10), (4, 10)]  # b's reference trained for all its epochs
    notes = [n for v in ctx.session.cache.values() if isinstance(v, list) for n in v]
    assert any("your b's training reported" in n.lower() and "ignored" in n for n in notes), notes


def test_a_failing_part_keeps_its_error_and_the_other_parts_are_graded():
    run = Toy({}).run(_ctx())
    assert run.errors == {"b": "training your b failed: ValueError"}
    assert run.error == "" and run.student_metrics == {"a": 1.0}
    assert run.epochs_matched == {}


def test_a_figure_that_fails_is_recorded_and_costs_nothing():
    ctx = _ctx()
    run = Toy({}, figure_error=RuntimeError("no display")).run(ctx)
    assert run.error == "" and run.student_metrics == {"a": 1.0}
    assert ctx.session.metrics["figures_error"] == "RuntimeError: no display"
