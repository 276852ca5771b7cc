"""Check kinds: what sort of judgement a rubric's check entry is, declared as `kind = "..."`.

A kind is plain data that the layers below the checks can read (the rubric loader, `grade batch`,
mutation testing, benchmarks) without importing torch or the check framework; the engine runs each
kind with its own runner (grader/checks/runners.py).

    unit       one component's code on the check's own inputs, every other component standing in
               with the reference's values (docs/grading.md); the default
    interface  the template's signatures ([interface] table); `check = "interface"` needs no code:
               the shared `grader.checks.interface.judge_signatures` is used
    model      the student's whole model trained and evaluated (model-level, grader/checks/model_level.py);
               no stand-ins, the training threads, never a target of mutation testing
    property   a declared property of one component (e.g. causality), checked like a unit check

Old rubrics declare no kind: `infer_kind` gives the one they meant (component "model" -> model,
check "interface" -> interface, else unit).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    isolated: bool  # the other components stand in while the student's code runs (unit-level)
    trains: bool  # trains models: the child gets the training threads, the grader's side keeps its own
    mutable: bool  # judges code a mutant can be planted in (mutation testing, `--only` unit sets)
    shared_check: bool = False  # `check` may name a function the framework provides (no code in the checks module)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("unit", isolated=True, trains=False, mutable=True),
    Kind("interface", isolated=True, trains=False, mutable=True, shared_check=True),
    Kind("model", isolated=False, trains=True, mutable=False),
    Kind("property", isolated=True, trains=False, mutable=True),
)}

MODEL_COMPONENT = "model"  # the component tag old rubrics give model-level checks (kind inferred from it)


def infer_kind(component: str, check: str) -> str:
    """The kind of a check entry that declares none (rubrics written before kinds were declared)."""
    if component == MODEL_COMPONENT:
        return "model"
    if check == "interface":
        return "interface"
    return "unit"
