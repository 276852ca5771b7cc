"""The grader's self-test on mistakes it was never told about: generate, run, plant, grade, classify.

    study = Study(rubric)                       # mutants of every component, each probed in process
    outcome = study.grade(mutant)               # planted into the example submission, graded
    outcome.detected, outcome.own_only, outcome.misnamed

For each generated mutant (grader.mutation.operators) of a graded component:
- behaviour-changing: its probe (grader.mutation.probes) differs from the reference's; equivalent
  mutants are not graded (no grader can see them), nor are those equal to the reference with the sign of its
  standard-normal noise flipped (`mu - std * eps` draws from the same distribution as `mu + std * eps`);
- planted into the assignment's correct example submission (EXAMPLES), or into a copy of the
  reference when the unmutated reference function planted there does not keep full marks (the
  example's other code then does not fit the reference's: other attribute names, other shapes);
- graded with the engine (unit checks unless `model=True`);
- detected: points lost; own_only: lost on its own component and nowhere else; misnamed: the
  feedback names a library mistake that does not behave like this mutant on the probe.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import random
import re
import shutil
import tempfile
import types
from dataclasses import dataclass, field, asdict
from pathlib import Path

import torch

from grader.engine import GradeOptions, grade_submission
from grader.mutation.operators import Mutant, mutants
from grader.mutation.plant import component_of, planted
from grader.mutation.probes import same_behaviour
from grader.rubric import Rubric, available_rubrics

REPO = Path(__file__).resolve().parents[2]
# The correct example submission of each assignment (their README says: full marks, another style): the first
# of its rubric's [assignment] examples.
EXAMPLES = {r.id: r.examples[0] for r in available_rubrics().values() if r.examples}
# Budgets small enough for a bench (the tests' TINY budgets), used only with model=True.
TINY_MODEL = {"epochs": 3, "lr": 3e-3, "time_budget_s": 10, "gmm_iterations": 4, "gmm_components": 4, "elbo_samples": 2,
              "max_epochs": 3, "patience": 1}


@dataclass
class Outcome:
    id: str
    component: str
    operator: str
    base: str = ""  # "example" or "reference": the file the mutant was planted into
    lost: dict = field(default_factory=dict)  # component -> points lost
    named: list = field(default_factory=list)  # mistake ids the feedback names
    misnamed: list = field(default_factory=list)  # ... of which do not behave like this mutant
    errors: list = field(default_factory=list)  # kinds of student-code errors the checks met
    feedback: str = ""  # the first lines of the feedback of the checks that lost points

    @property
    def detected(self) -> bool:
        return bool(self.lost)

    @property
    def own_only(self) -> bool:
        return set(self.lost) == {self.component}

    def as_dict(self) -> dict:
        return {**asdict(self), "detected": self.detected, "own_only": self.own_only}


def _module_from_tree(tree: ast.Module, path: str, name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__file__ = path
    exec(compile(tree, path, "exec"), mod.__dict__)  # noqa: S102 -- the grader's own reference code
    return mod


class _NegatedNoise(types.ModuleType):
    """`torch` for a mutated module's globals, with torch.randn and torch.randn_like negated (a standard normal is
    symmetric: `mu - std * eps` is a correct reparameterisation, held-out bench seed 912431 counted it an escape;
    the probe compares same-seed values, so it is equivalent when it matches the reference under flipped noise)."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def randn(*args, **kwargs):
        return -torch.randn(*args, **kwargs)

    @staticmethod
    def randn_like(*args, **kwargs):
        return -torch.randn_like(*args, **kwargs)


def _negate_noise_in(mod: types.ModuleType, qualname: str) -> None:
    """Rebind the function `qualname` of `mod` to globals whose `torch` negates torch.randn(_like) (only its own
    draws: a constructor's randn initialisation elsewhere stays as it is)."""
    owner_name, _, attr = qualname.rpartition(".")
    owner = getattr(mod, owner_name) if owner_name else mod
    raw = inspect.getattr_static(owner, attr)
    fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    g = dict(fn.__globals__, torch=_NegatedNoise())
    new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    setattr(owner, attr, type(raw)(new) if isinstance(raw, (staticmethod, classmethod)) else new)


class Study:
    """Mutants of one assignment's reference, their behaviour, and grading of planted copies."""

    def __init__(self, rubric: Rubric, workdir: Path | None = None, model: bool = False):
        self.rubric = rubric
        spec = importlib.util.find_spec(rubric.reference)
        self.reference_path = Path(spec.origin)
        self.reference_source = self.reference_path.read_text()
        self.reference = importlib.import_module(rubric.reference)
        if not rubric.probe:
            raise ValueError(f"{rubric.path}: [assignment] probe is not set: mutation testing needs a function that "
                             "runs every component in process (grader/mutation/probes.py)")
        if not rubric.examples:
            raise ValueError(f"{rubric.path}: [assignment] examples names no correct example submission")
        self.probe = rubric.probe_function()
        self.model = model
        self._tmp = tempfile.TemporaryDirectory(prefix=f"gk-validity-{rubric.id}-") if workdir is None else None
        self.workdir = Path(workdir or self._tmp.name)
        self.example = rubric.example_paths(REPO)[0] / rubric.module
        fresh = _module_from_tree(ast.parse(self.reference_source), str(self.reference_path), "_gk_reference")
        self.reference_probe = self.probe(fresh)
        self._controls: dict[tuple[str, str], bool] = {}
        self._library_probes: dict[str, dict] = {}
        self._counter = 0
        self._mutants: list | None = None

    # ---- generation and behaviour --------------------------------------------------------------
    def mutants(self) -> list[tuple[Mutant, str]]:
        """(mutant, component) for every mutant of a function a unit-graded component owns."""
        if self._mutants is not None:
            return list(self._mutants)
        targets = self.rubric.code_targets
        out = []
        for m in mutants(self.reference_source):
            comp = component_of(m.qualname, targets)
            if comp is not None:
                out.append((m, comp))
        self._mutants = out
        return list(out)

    def changes_behaviour(self, m: Mutant) -> bool:
        try:
            mod = _module_from_tree(m.module_tree(), str(self.reference_path), "_gk_mutant")
            mine = self.probe(mod)
            if same_behaviour(self.reference_probe, mine):
                return False
            if not re.search(r"\brandn(_like)?\(", m.original_source):
                return True
            _negate_noise_in(mod, m.qualname)  # the same draws with the other sign (eps -> -eps) in that function
            flipped = self.probe(mod)
            return not all(same_behaviour({k: v}, {k: mine[k]}) or same_behaviour({k: v}, {k: flipped.get(k)})
                           for k, v in self.reference_probe.items()) or mine.keys() != self.reference_probe.keys()
        except Exception:
            return True  # does not import, or breaks a constructor the probe needs: a student would be told

    def _library_probe(self, mistake_id: str) -> dict | None:
        """The probe of the reference with the library mutant `mistake_id` patched in (None: unknown id)."""
        if mistake_id in self._library_probes:
            return self._library_probes[mistake_id]
        registry = getattr(importlib.import_module(self.rubric.mistakes_module), "MUTANTS", {})
        lib = registry.get(mistake_id)
        result = None
        if lib is not None:
            owner_name, _, attr = lib.component.rpartition(".")
            owner = getattr(self.reference, owner_name) if owner_name else self.reference
            old = inspect.getattr_static(owner, attr)
            new = staticmethod(lib.fn) if isinstance(old, staticmethod) else lib.fn
            setattr(owner, attr, new)
            try:
                result = self.probe(self.reference)
            finally:
                setattr(owner, attr, old)
        self._library_probes[mistake_id] = result
        return result

    # ---- planting and grading -------------------------------------------------------------------
    def _write(self, base: Path, qualname: str, source: str, label: str) -> Path:
        self._counter += 1
        folder = self.workdir / f"m{self._counter:04d}_{re.sub(r'[^A-Za-z0-9]+', '_', label)[:60]}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / self.rubric.module).write_text(planted(base.read_text(), self.reference_source, qualname, source, label))
        return folder

    def _grade(self, folder: Path):
        only = self.rubric.components if self.model else self.rubric.components_where(lambda k: k.mutable)
        options = GradeOptions(only=only, write_figures=False, device="cpu",
                               model_overrides=dict(TINY_MODEL) if self.model else {})
        return grade_submission(folder, self.rubric, options)

    def base_for(self, m: Mutant) -> tuple[str, Path]:
        """The example submission if the unmutated function planted there keeps full marks, else the reference."""
        key = ("control", m.qualname)
        if key not in self._controls:
            result = self._grade(self._write(self.example, m.qualname, m.original_source, f"control {m.qualname}"))
            self._controls[key] = all(t.score >= t.max_score for t in result.tests)
        return ("example", self.example) if self._controls[key] else ("reference", self.reference_path)

    def grade(self, m: Mutant, component: str) -> Outcome:
        base_name, base = self.base_for(m)
        result = self._grade(self._write(base, m.qualname, m.function_source, m.id))
        out = Outcome(m.id, component, m.operator, base=base_name)
        for t in result.tests:
            if t.score < t.max_score:
                out.lost[t.component] = round(out.lost.get(t.component, 0.0) + t.max_score - t.score, 4)
                if t.error:
                    out.errors.append(t.error)
                if len(out.feedback) < 600:
                    out.feedback += f"[{t.check}] " + (t.output or "").split("\n")[0][:200] + "\n"
            for mistake in t.mistakes:
                if mistake["id"] not in out.named:
                    out.named.append(mistake["id"])
        if out.named:
            try:
                mine = self.probe(_module_from_tree(m.module_tree(), str(self.reference_path), "_gk_mutant"))
            except Exception:
                mine = None
            for mid in out.named:
                lib = self._library_probe(mid)
                if mine is None or lib is None or not same_behaviour(lib, mine):
                    out.misnamed.append(mid)
        return out


def sample(pairs: list, per_component: int | None, seed: int | None = None) -> list:
    """At most `per_component` of each component's mutants, spread over operators and functions. `seed`: which
    ones (another seed, another sample: a held-out measurement); None: the development sample (the same on every
    run, the one the grader was fixed against)."""
    if per_component is None:
        return list(pairs)
    by_comp: dict[str, list] = {}
    for m, comp in pairs:
        by_comp.setdefault(comp, []).append((m, comp))
    out = []
    for comp, items in by_comp.items():
        # round-robin over (function, operator) groups, in file order
        groups: dict[tuple[str, str], list] = {}
        for item in items:
            groups.setdefault((item[0].qualname, item[0].operator), []).append(item)
        queues = list(groups.values())
        rng = random.Random(comp if seed is None else f"{seed}:{comp}")
        rng.shuffle(queues)  # a varied sample, the same on every run of one seed
        if seed is not None:
            for q in queues:
                rng.shuffle(q)
        picked = []
        while len(picked) < per_component and any(queues):
            for q in queues:
                if q and len(picked) < per_component:
                    picked.append(q.pop(0))
        out.extend(picked)
    return out

