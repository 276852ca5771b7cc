"""The check framework: what a `check_<name>(ctx)` function gets and returns.

A check is a small function in `grader/checks/<assignment>.py` with its own deterministic inputs.
It calls the student's code through `ctx.call` (inside the sandbox), computes what the reference
gives on the same inputs (here, in the grader), and records cases with `ctx.expect_close` /
`ctx.expect`. Its score is the fraction of cases that passed. A mismatch is explained with
`ctx.diagnose`, which tries the known mistakes of the component (mutants of the reference declared
in the rubric's [[mistakes]]) and names the one the student's output matches.

Composite checks (encoder log-prob, ELBO...) call the student's other components. Those calls are
answered with the reference's values (stand-ins, grader/checks/standins.py), so a composite's
score depends on its own code only and each mistake costs once, on its own component, whether
the mutant library knows it or not. Rules: docs/grading.md.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from grader.checks.inputs import check_seed
from grader.checks.standins import MAX_LAYERS, StandInServer, new_handle, tag, upstream_targets
from grader.history import TrainingClaim
from grader.rubric import CheckSpec, Mistake, Rubric
from grader.sandbox import values
from grader.sandbox.client import Sandbox
from grader.sandbox.errors import StudentException

SEPARATION = 5.0  # a named mistake's prediction is this many tolerances from the correct value and the others


def isolate(spec: CheckSpec) -> bool:
    """Whether a check runs the student's code with stand-ins for the other components (its kind's
    `isolated`: unit, interface and property checks; not the model-level ones, which train and
    evaluate the student's whole model)."""
    return spec.kind_info.isolated


class StudentValueError(Exception):
    """The student's return value is not what the contract asks (type, shape, dtype). `cause`: the root cause
    when it is known (a dtype slip: "dtype"), so that several checks that see it charge it once."""

    def __init__(self, message: str = "", cause: str | None = None):
        super().__init__(message)
        self.cause = cause


def mistake_cause(named: "Mistake | None") -> str | None:
    """The cause a failing case records for a named mistake ("mistake:<id>"; None: not known). A check that names
    a mistake with `ctx.diagnose` passes it to the case the mistake explains, so that another check of the component
    naming the same mistake does not charge it again (grader/charging.py)."""
    return f"mistake:{named.id}" if named is not None else None


@dataclass
class Case:
    name: str
    passed: bool
    message: str = ""
    fraction: float | None = None  # partial credit for this case; None: 1 if passed else 0
    # the root cause of a failure when it is known ("mistake:<id>", a property such as "dtype"): several checks
    # of one component that fail for the same cause are charged once (grader/charging.py)
    cause: str | None = None

    @property
    def credit(self) -> float:
        return float(self.passed) if self.fraction is None else self.fraction


@dataclass
class Outcome:
    fraction: float
    message: str
    mistakes: list[Mistake] = field(default_factory=list)
    lost_by_cause: dict[str, float] = field(default_factory=dict)  # cause -> fraction of the check lost to it


@dataclass
class Session:
    """What the checks of one submission share: options, an artifacts folder, computed results.

    `cache` lets several checks reuse one expensive step (e.g. training the student's model once
    for the `model.*` checks); `figures` and `metrics` end up in results.json."""

    data: str | None = None  # data set spec chosen on the command line (overrides the rubric)
    model_overrides: dict = field(default_factory=dict)  # e.g. a tiny training budget in tests
    figures_dir: "Path | None" = None  # None: no figures are written (grade check)
    cache: dict = field(default_factory=dict)
    figures: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    # component -> what its failed property checks found ("your reconstruction_loss changes its input in place,
    # so backward through it fails"): model-level messages name these causes (`likely_causes`)
    findings: dict = field(default_factory=dict)
    # mistake id -> the check that called the mistake's own function and got neither the correct output nor the
    # mistake's: the student does not make that mistake, so no other check may name it (`CheckContext.diagnose`)
    ruled_out: dict = field(default_factory=dict)
    # (component, cause) -> the check that saw the cause does not explain the student's values (the dtype property:
    # results of the wrong dtype whose values are wrong too): that cause's losses are not refunded (charging.py)
    causes_ruled_out: dict = field(default_factory=dict)
    remaining_s: "Callable[[], float]" = lambda: float("inf")
    secret: str = ""  # what every check's inputs derive from (grader/checks/inputs.py); "": the published inputs


class CheckContext:
    def __init__(self, spec: CheckSpec, rubric: Rubric, sandbox: Sandbox, device: str, diagnosed: dict[str, Mistake],
                 call_timeout: float, session: "Session | None" = None, layout: str = "reference"):
        self.spec = spec
        self.rubric = rubric
        self.sandbox = sandbox
        self.device = torch.device(device)
        self.ref = importlib.import_module(rubric.reference)
        self.mutants = _load_mutants(rubric)
        self.diagnosed = diagnosed  # component -> mistake found by earlier checks
        self.call_timeout = call_timeout
        self.session = session or Session()
        self.cases: list[Case] = []
        self.called: set[str] = set()  # the targets this check called ("assign", "Decoder.decode")
        self.mistakes: list[Mistake] = []
        self.notes: list[str] = []
        self.cause: str | None = None  # the cause of every failing case recorded (a property check: its property)
        self.not_judged = 0  # cases left out for a parameter the student's signature lacks (see notes)
        self.lenient_interface = False  # re-run: call without the lacking parameters (`_lenient_outcome`)
        self.nothing_judged = False  # every case needed a parameter the student's signature lacks
        seed = check_seed(self.session.secret, spec.id)  # unknown to the child before this check sends it
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.specs: dict[str, dict] = {}  # handle -> `__new__` spec of the student objects built by this check
        self.unassigned: dict[str, list[tuple[str, str]]] = {}  # name -> (state entry, why) it had no place for (`new`)
        self.constructor_errors: dict[str, str | None] = {}  # name -> its constructor's failure, when it stands in
        self.stand_ins = StandInServer(self.ref, self.specs, device,
                                       upstream_targets(rubric, self.ref, spec.component) if isolate(spec) else [],
                                       layout=layout)

    # ---- talking to the student's code ------------------------------------------------------
    def call(self, target, *args, seed: int | None = None, grad: dict | None = None, inputs_after: bool = False,
             **kwargs) -> dict:
        """Call the student's `target` (a dotted name, or {"object": .., "method": .., "label": "Class.method"})
        in the sandbox, with arguments written against the template's signature: they are mapped
        onto the student's own parameters first (grader/checks/interface.py: renamed, reordered,
        positional-only, a default left out); `interface.NotJudged` when the call needs a
        parameter of the rubric's [interface] table that the student's function lacks.

        The other components' functions and methods stand in (grader/checks/standins.py): the
        student's code under test gets the reference's values from them, drawn from the torch RNG
        seeded with `seed` here (as the child's own RNG is there), so a reference computation
        seeded the same way sees the same noise."""
        from grader.checks import interface  # (imports this module)

        args, kwargs, grad = interface.rebind(self, target, list(args), dict(kwargs), grad)
        self.called.add(target if isinstance(target, str) else str(target.get("label", "")))
        renamed = grad.pop("renamed", None) if grad else None
        args, kwargs = tag(list(args), self.specs), tag(kwargs, self.specs)
        names = sorted(self.stand_ins.names)
        if getattr(self, "_own_layers", False):  # the student's object runs on the layers its constructor built
            names = [n for n in names if not n.endswith(".__init__")]
        req = {"op": "call", "target": target, "args": args, "kwargs": kwargs, "seed": seed, "grad": grad,
               "stand_ins": names, "inputs_after": inputs_after}  # (inputs_after: the tensor arguments after the call)
        self.stand_ins.reset_call()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        # (unseeded calls, and in-process sandboxes without stand-ins, leave the global RNG alone)
        seeding = torch.random.fork_rng(devices=devices) if seed is not None and self.stand_ins.names \
            else contextlib.nullcontext()
        with seeding:
            if seed is not None and self.stand_ins.names:
                torch.manual_seed(int(seed))
            try:
                reply = self.sandbox.request(req, timeout=self.call_timeout, upcall=self.stand_ins)
            finally:
                self.stand_ins.reset_call()
        if renamed and isinstance(reply.get("grads"), dict):  # gradients under the check's own paths
            reply["grads"] = {renamed.get(k, k): v for k, v in reply["grads"].items()}
        return reply

    def harness(self, function: str, timeout: float | None = None, **kwargs):
        """Run `grader.harnesses.<function>(student_module, device, **kwargs)` in the sandbox.

        For work bigger than one call (training a student's model with the course's loop). Array
        kwargs arrive as tensors on the grading device; the reply is the harness's plain-data result.
        `timeout` defaults to the rest of the submission's time budget."""
        if timeout is None:
            timeout = max(1.0, self.session.remaining_s())
        req = {"op": "harness", "function": function, "kwargs": kwargs}
        return self.sandbox.request(req, timeout=timeout)["result"]

    def new(self, name: str, cls: str, *args, state: dict | None = None, partial_state: bool | None = None,
            float_dtype: str | None = None, **kwargs) -> dict:
        """Build the student's class `cls` in the sandbox and keep it under `name`. The child's torch
        RNG is seeded first (per check), so randomly initialised weights, and the score of a check
        that depends on them, are the same every time the submission is graded.

        `state` ({dotted name: array}) is copied into the object; an entry the student's object has
        no tensor of that shape for fails the request, unless `partial_state` (default: when the
        class's constructor stands in, its layers then answer with the check's values): such
        entries are listed in `self.unassigned[name]` ((entry, why) pairs) and the object is kept.
        `float_dtype` ("float64"): the module is converted (`module.to(dtype)`) before `state` goes in, for the
        dtype property of a class whose tensors are its own (not one whose constructor stands in: its layers
        answer through the grader's float32 twins)."""
        stands_in = f"{cls}.__init__" in self.stand_ins.names
        if partial_state is None:
            partial_state = stands_in
        spec = {"class": cls, "args": list(args), "kwargs": kwargs, "state": state or {},
                "partial_state": bool(partial_state)}
        if float_dtype is not None:
            spec["dtype"] = str(float_dtype)
        if stands_in:
            # a constructor that fails still leaves the methods checkable: the child completes the
            # object with the specified layers (plain descriptions), which stand in anyway
            spec["layers"] = self._specified_layers(cls, args, kwargs)
        value = tag({"__new__": spec}, self.specs, handle=new_handle())
        self.stand_ins.forget(name)
        self.specs[name] = value["__new__"]  # `{"__ref__": name}` arguments find their twin too
        reply = self.sandbox.request({"op": "new", "name": name, "value": value, "seed": self.seed},
                                     timeout=self.call_timeout)
        self.constructor_errors[name] = reply.get("constructor_error")
        if reply.get("constructor_error"):
            self.notes.append(f"{cls}(...) fails ({reply['constructor_error']}): this check completed the object with "
                              "the specified layers it did not build; the constructor's mistake is charged on its own check.")
        unassigned = [(str(k), str(why)) for k, why in reply.get("unassigned") or []]
        if unassigned and partial_state:
            unassigned = self._assign_by_role(name, value["__new__"]["handle"], state or {}, unassigned)
        self.unassigned[name] = unassigned
        return {"__ref__": name}

    def _specified_layers(self, cls: str, args: tuple, kwargs: dict) -> dict:
        """{path: [torch.nn class name, kwargs]} of the layers the reference's `cls(*args, **kwargs)` builds."""
        from grader.sandbox.nets import describe_layer
        from grader.sandbox.standins import layers

        ref_cls = getattr(self.ref, cls, None)
        try:
            with torch.random.fork_rng(devices=[]):
                obj = ref_cls(*args, **kwargs)
        except Exception:
            return {}
        if not isinstance(obj, torch.nn.Module):
            return {}
        out = {path: describe_layer(m) for path, m in layers(obj)}
        return {p: d for p, d in out.items() if d is not None}

    def _assign_by_role(self, name: str, handle: str, state: dict, unassigned: list) -> list:
        """Give the student's layers found by role under other names (`map_layers`, e.g. `enc.0` for
        `conv1`) the state entries their specified counterparts did not take; returns the entries
        still without a place."""
        from grader.checks.standins import map_layers
        from grader.sandbox.standins import layers

        try:
            twin = self.stand_ins.twin(handle)
        except LookupError:
            return unassigned
        if not isinstance(twin, torch.nn.Module):
            return unassigned
        mine = self.sandbox.request({"op": "layers", "name": name}, timeout=self.call_timeout)["layers"]
        if len(mine) > MAX_LAYERS:
            return unassigned
        roles = {spec: own for own, spec in map_layers([(str(p), str(t)) for p, t, _ in mine],
                                                       [(p, type(m).__name__) for p, m in layers(twin)]).items()}
        moved = {}
        for key, _ in unassigned:
            layer, _, leaf = key.rpartition(".")
            if roles.get(layer, layer) != layer:
                moved[f"{roles[layer]}.{leaf}"] = key
        if not moved:
            return unassigned
        reply = self.sandbox.request({"op": "assign", "name": name, "state": {k: state[v] for k, v in moved.items()}},
                                     timeout=self.call_timeout)
        failed = {moved[str(k)] for k, _ in reply.get("unassigned") or []}
        return [(k, why) for k, why in unassigned if k not in moved.values() or k in failed]

    @contextlib.contextmanager
    def own_layers(self):
        """Calls made inside run the student's objects on the layers their own constructor built (no
        stand-ins for constructors): to ask whether a method is right for its own constructor."""
        self._own_layers = True
        try:
            yield
        finally:
            self._own_layers = False

    def layers_differ(self, name: str) -> list[str]:
        """Why the calls made so far on the student's object `name` could not be checked apart from
        its constructor: a layer they used (standing in by role) that the constructor built with
        other shapes than specified, or a layer with no specified counterpart (it ran as written,
        `StandInServer.gaps`). Empty when the constructor's layers all stood in as specified."""
        handle = str(self.specs.get(name, {}).get("handle", ""))
        used = self.stand_ins.layers_used.get(handle, set())
        out = [why for key, why in self.unassigned.get(name, []) if key.rpartition(".")[0] in used]
        if self.constructor_errors.get(name) and used:
            out.insert(0, f"your constructor fails ({self.constructor_errors[name]}); the specified layers it did not "
                          "build were added for this check")
        return out + [f"your layer {g} matches no layer of the specification"
                      for g in sorted(self.stand_ins.gaps.get(handle, set()))]

    @staticmethod
    def method(obj: dict, name: str, label: str) -> dict:
        return {"object": obj, "method": name, "label": label}

    # ---- judging ----------------------------------------------------------------------------
    def tolerance(self, dtype: str = "float32") -> tuple[float, float]:
        """(rtol, atol) for values of `dtype`, from the rubric only: the check's rtol/atol, or its
        rtol64/atol64 for float64 values when the rubric sets them."""
        s = self.spec
        if str(dtype).replace("torch.", "") == "float64":
            return (s.rtol if s.rtol64 is None else s.rtol64), (s.atol if s.atol64 is None else s.atol64)
        return s.rtol, s.atol

    def require(self, ok: bool, case: str, message: str, cause: str | None = None) -> bool:
        """A prerequisite (a shape, a scalar, a gradient existing): it costs when it fails but earns
        nothing when it holds, so a wrong answer of the right shape gets no credit."""
        if not ok:
            self.cases.append(Case(case, False, message, cause=self._cause(cause)))
        return bool(ok)

    def _cause(self, cause: str | None) -> str | None:
        """A failing case's cause: the one given, else the check's own (`self.cause`); "" for none at all."""
        return (self.cause if cause is None else cause) or None

    @contextlib.contextmanager
    def case(self, label: str) -> Iterator[None]:
        """One independent case of a multi-case check: when the student's code raises in it (or
        returns something unreadable), this case fails with the message and the check goes on with
        the next case. Without it the first exception ended the check, so a mistake that breaks one
        input (e.g. flattened images) also took the credit of the cases after it, and the score
        depended on the order of the cases. Timeouts and crashes still end the check (the child is
        gone). A case that needs a parameter the student's signature lacks is not judged (a note;
        grader/checks/interface.py), and one the template requires without a default fails with a
        message naming it."""
        from grader.checks.interface import NotJudged, SignatureError

        try:
            yield
        except StudentException as e:
            self.expect(False, label, e.message + (f"\n  at {e.where}" if e.where else ""))
        except StudentValueError as e:
            self.expect(False, label, str(e), cause=e.cause)
        except SignatureError as e:
            self.expect(False, label, str(e))
        except NotJudged as e:
            self.notes.append(e.note.replace("a case:", f"{label}:", 1))
            self.not_judged += 1

    def expect(self, ok: bool, case: str, message: str = "", cause: str | None = None) -> bool:
        self.cases.append(Case(case, bool(ok), "" if ok else message, cause=None if ok else self._cause(cause)))
        return bool(ok)

    def attribute(self, named: "Mistake | None", cases: "int | list[Case]") -> None:
        """Record `named` (a mistake `diagnose` just named) as the cause of the failing `cases` that have none (an
        int: the cases recorded from that index on): for a check that names the mistake after recording the cases
        its matcher compared. Pass only cases the mistake's prediction reproduces (docs/grading.md, "Charged in
        proportion"): a case the matcher did not look at may fail for another mistake, which must cost its own."""
        if named is None:
            return
        for c in (self.cases[cases:] if isinstance(cases, int) else cases):
            if not c.passed and c.cause is None:
                c.cause = mistake_cause(named)

    def partial(self, fraction: float, case: str, message: str = "") -> None:
        """Record a case worth `fraction` (in [0, 1]) of a passed one."""
        fraction = min(1.0, max(0.0, float(fraction)))
        self.cases.append(Case(case, fraction >= 1.0, "" if fraction >= 1.0 else message, fraction))

    def expect_close(self, got: np.ndarray, want: np.ndarray, case: str, rtol: float | None = None,
                     atol: float | None = None, diagnose: Callable[[Callable], bool] | None = None) -> bool:
        """Record whether `got` matches `want` (shape, finiteness, values)."""
        problem = mismatch(got, want, self.spec.rtol if rtol is None else rtol, self.spec.atol if atol is None else atol)
        named = self.diagnose(diagnose) if problem and diagnose is not None else None
        return self.expect(problem is None, case, problem or "", cause=mistake_cause(named))

    def diagnose(self, matches: Callable[..., "bool | float"], components: list[str] | None = None,
                 scales: tuple[float, ...] = ()) -> Mistake | None:
        """Name the known mistake of the component(s) that explains the student's output, if one does clearly.

        `matches(patches)` runs the reference with `patches` applied and compares the student's
        output with it: a distance in tolerance units (`distance`: <= 1 is within tolerance), or a
        bool (True: within tolerance, False: not; `numpy.bool_` included). The rule
        (docs/grading.md): a mistake is named only when the student's output is within tolerance
        of its prediction (distance <= 1) and at least SEPARATION tolerances away from the correct
        value and from every other candidate's prediction. Upstream components stand in with
        correct values (grader/checks/standins.py), so candidates are this component's own
        mistakes, tried alone. Records and returns the named mistake, or None.

        `scales` (statistical matchers whose statistic has a scale, e.g. the spread of noise):
        `matches(patches, scale=c)` is the distance to the mistake's prediction rescaled by c, and
        the named mistake must also be SEPARATION away from itself at every scale in `scales` (a
        factor 2 in a standard deviation is another mistake, and a statistic that cannot tell
        them apart names neither)."""
        def dist(patches, scale: float | None = None) -> float:
            try:
                with np.errstate(all="ignore"):
                    hit = matches(patches) if scale is None else matches(patches, scale=scale)
            except Exception:
                return math.inf
            if isinstance(hit, (bool, np.bool_)):
                return 0.0 if bool(hit) else math.inf
            d = float(hit)
            return d if d == d else math.inf

        scored = []
        for mistake in self.rubric.mistakes:
            if mistake.component not in (components or [self.spec.component]):
                continue
            mutant = self.mutants.get(mistake.id)
            if mutant is not None:
                patches = {mutant.component: mutant.fn}
                scored.append((dist(patches), mistake, patches))
        scored.sort(key=lambda t: t[0])
        correct = dist({}) if scored else math.inf
        self._rule_out(scored, correct)
        if not scored or scored[0][0] > 1.0:
            return None
        best, mistake, patches = scored[0]
        if any(d < SEPARATION for d, _, _ in scored[1:]) or correct < SEPARATION:
            return None  # ambiguous, or too close to the correct value: name nothing
        if mistake.id in getattr(getattr(self, "session", None), "ruled_out", {}):
            return None  # another check saw the mistake's own function answer otherwise
        if any(dist(patches, c) < SEPARATION for c in scales):
            return None  # the same mistake at another scale fits as well: the statistic cannot tell
        if mistake not in self.mistakes:
            self.mistakes.append(mistake)
        return mistake

    def _rule_out(self, scored: list, correct: float) -> None:
        """Remember the mistakes this check shows the student does not make: its output is far from the correct
        value and from the mistake's prediction, the prediction differs from the correct value here (the mistake
        shows in this case), and the check called the mistake's own function directly. (A downstream check can
        confuse two mistakes that the function's own output tells apart: relu for sigmoid and no sigmoid give
        the same clamped log-likelihood.) `grader.charging.drop_ruled_out` takes such a name back from a check
        that gave it earlier."""
        session = getattr(self, "session", None)
        if session is None or not correct > SEPARATION:
            return
        for d, mistake, _ in scored:
            mutant = self.mutants.get(mistake.id)
            if mutant is not None and mutant.component in getattr(self, "called", ()) and d > SEPARATION \
                    and not math.isclose(d, correct, rel_tol=1e-3):
                session.ruled_out.setdefault(mistake.id, self.spec.id)

    def reference_variants(self) -> Iterator[tuple[str, dict]]:
        """The clean reference, then (if any) the reference with the mistakes diagnosed in other
        components that *do not stand in* in this check patched in: constructors (`Class.__init__`
        components) outside unit checks. In unit checks every other component stands in with correct
        values, a constructor through the layers it built (grader/checks/standins.py), so its
        mistakes need no variant."""
        yield "", {}
        targets = self.rubric.component_targets
        patches, names = {}, []
        for component, m in self.diagnosed.items():
            target = str(targets.get(component, ""))
            if component == self.spec.component or not target.endswith(".__init__") or target in self.stand_ins.names:
                continue
            mutant = self.mutants.get(m.id)
            if mutant is not None:
                patches[mutant.component] = mutant.fn
                names.append(m.id)
        if patches:
            yield ", ".join(sorted(names)), patches

    @contextlib.contextmanager
    def patched(self, patches: dict) -> Iterator[None]:
        """Temporarily replace reference functions/methods ("name" or "Class.method") by mutants."""
        saved = []
        try:
            for dotted, fn in patches.items():
                owner = self.ref
                *path, leaf = dotted.split(".")
                for p in path:
                    owner = getattr(owner, p)
                original = owner.__dict__[leaf] if isinstance(owner, type) else getattr(owner, leaf)
                saved.append((owner, leaf, original))
                if isinstance(owner, type) and isinstance(original, staticmethod):
                    fn = staticmethod(fn)
                setattr(owner, leaf, fn)
            yield
        finally:
            for owner, leaf, original in reversed(saved):
                setattr(owner, leaf, original)

    def outcome(self) -> Outcome:
        if self.lenient_interface:
            return self._lenient_outcome()
        if not self.cases and self.not_judged:  # every case needed a parameter charged elsewhere (or optional)
            self.nothing_judged = True
            self.expect(True, "not applicable to your signature (see the notes)")
        if not self.cases:
            return Outcome(0.0, "the check recorded no result (a grader bug: please report it)")
        passed = sum(c.passed for c in self.cases)
        credit = sum(c.credit for c in self.cases)
        failed = [c for c in self.cases if not c.passed]
        lines = []
        if failed:
            lines.append(f"{passed}/{len(self.cases)} case{'s' if len(self.cases) != 1 else ''} passed.")
            for c in failed[:5]:
                lines.append(f"- {c.name}: {c.message}")
            if len(failed) > 5:
                lines.append(f"- ... and {len(failed) - 5} more failing cases")
        else:
            lines.append("The case passed." if len(self.cases) == 1 else f"All {len(self.cases)} cases passed.")
        lines += self.notes
        lost: dict[str, float] = {}
        for c in self.cases:
            if c.cause and c.credit < 1:
                lost[c.cause] = lost.get(c.cause, 0.0) + (1 - c.credit) / len(self.cases)
        return Outcome(credit / len(self.cases), "\n".join(lines), list(self.mistakes), lost)


    def _lenient_outcome(self) -> Outcome:
        """The outcome of a re-run in which every case called the student's function without the
        [interface] parameters it lacks that the template gives no default (`lenient_interface`;
        `signatures.bind`). The cases it gets right are evidence (e.g. `confusion` without `k` that
        hard-codes the course's 10 clusters); the others needed the parameter and are not judged.
        With no case right, nothing earns credit: a function that lacks a parameter and does not work
        must not score as "not applicable" (it did before: `raise NotImplementedError` without `k`
        scored confusion's full point). Only a check none of whose cases can be called at all (each
        asks for a mode through a parameter the function lacks, `how="random"`) stays neutral: that
        absence is what the interface check charges, once."""
        passed = [c for c in self.cases if c.passed]
        if not self.cases:
            return Outcome(1.0, "\n".join(["Not applicable to your signature: every case needs a parameter your "
                                           "function lacks (charged once, in the interface check)."] + self.notes), [])
        lines = ["Every case of this check passes a parameter your function lacks (charged once, in the interface "
                 "check); it was judged by calling your function without it."]
        if not passed:
            lines.append("No case gave the expected result that way:")
            lines += [f"- {c.name}: {c.message}" for c in self.cases[:5]]
            return Outcome(0.0, "\n".join(lines + self.notes), list(self.mistakes))
        skipped = [c.name for c in self.cases if not c.passed]
        lines.append(f"{len(passed)} case(s) right without it" + (f"; not judged (they need it): {', '.join(skipped[:5])}."
                                                                   if skipped else "."))
        return Outcome(sum(c.credit for c in passed) / len(passed), "\n".join(lines + self.notes), [])


# ---- values ---------------------------------------------------------------------------------

def expect_any_variant(ctx: CheckContext, got: np.ndarray, reference: Callable[[dict], np.ndarray], case: str,
                       rtol: float | None = None, atol: float | None = None, diagnose: bool = True) -> bool:
    """Compare `got` with `reference({})` and (unless `diagnose=False`) name this component's
    mistake on a mismatch. The other components stand in with correct values while the student's
    code runs (grader/checks/standins.py), constructors through their layers, so the plain
    reference is the right answer; `ctx.reference_variants` adds a diagnosed constructor's mistake
    only where that constructor does not stand in."""
    rtol = ctx.spec.rtol if rtol is None else rtol
    atol = ctx.spec.atol if atol is None else atol
    for label, patches in list(ctx.reference_variants())[1:]:  # a constructor's mistake charged elsewhere
        try:
            if close(got, reference(patches), rtol, atol):
                ctx.notes.append(f"Matches the reference once your mistakes already charged elsewhere ({label}) are "
                                 "taken into account: no extra points lost here.")
                return ctx.expect(True, case)
        except Exception:
            continue
    return ctx.expect_close(got, reference({}), case, rtol, atol,
                            diagnose=(lambda p: distance(got, reference(p), rtol, atol)) if diagnose else None)


UNBOUNDED_S = 1e9
"""Wall-clock budget of the reference's own training at model level: none in effect, so that how far it trains
does not depend on the load of the machine that first fills the cache (docs/grading.md)."""


def reference_at_students_epochs(ctx: CheckContext, train: Callable):
    """`train()`: the reference trained (or loaded from the cache) for as many epochs as the student's run reached
    in its time budget. The report's note on where the first reference came from is kept as it was."""
    cached = ctx.session.metrics.get("reference_cache")
    try:
        return train()
    finally:
        ctx.session.metrics["reference_cache"] = cached


_IGNORED_CLAIMS = "model level: training claims not believed"  # session.cache key: their notes


def believed_epochs(ctx: CheckContext, claim: "TrainingClaim", reference_epochs: int) -> int:
    """Epochs to train the reference for, to compare it with the student's run at the same epochs: the epochs the
    student's loop finished when the time budget stopped it before the reference's `reference_epochs`; 0 (the
    reference trained for all its epochs) otherwise. What the child reports is a claim: a budget stop the grader
    did not measure (`TrainingClaim.budget_stop_seen`) is not believed, and the report says so."""
    if claim.ignored(reference_epochs):
        notes = ctx.session.cache.setdefault(_IGNORED_CLAIMS, [])
        if claim.note() not in notes:
            notes.append(claim.note())
    return claim.matched_epochs(reference_epochs)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` torch threads in this process (None: unchanged). Unit checks compute on small
    tensors, the grader and the child taking turns: one thread (see engine.grade_submission)."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def timed_call(call: Callable, *args, **kwargs):
    """(call(*args, **kwargs), wall seconds measured here): the grader's own clock around a training call."""
    import time

    t0 = time.monotonic()
    out = call(*args, **kwargs)
    return out, time.monotonic() - t0


@contextlib.contextmanager
def seeded(seed: int, device):
    """torch's global generators (CPU, and `device`'s when it is a GPU) seeded inside the block, restored after it."""
    devices = [device.index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def note_epoch_matched(ctx: CheckContext, epochs: int) -> None:
    """Say that the reference was trained for `epochs` (> 0), as many as the student's run reached in its
    time budget (model level: load and speed are not mistakes; docs/grading.md), and which of the student's
    training claims were not believed (`believed_epochs`)."""
    ctx.notes.extend(ctx.session.cache.get(_IGNORED_CLAIMS, []))
    if epochs:
        ctx.notes.append(f"Your training reached {epochs} epoch(s) in the time budget, so the reference compared "
                         f"here was trained for the same {epochs} epoch(s).")


def likely_causes(ctx: CheckContext, depends_on) -> None:
    """Add a note naming the mistakes the unit checks found in the components a model-level metric
    depends on (`depends_on`: component tags; the code the student's model runs while it trains or
    is evaluated). Mistakes of other components are not causes of this metric and are not named."""
    causes = found_causes(ctx, depends_on)
    if causes:
        ctx.notes.append(f"Likely cause, found by the unit checks: {causes}.")


def found_causes(ctx: CheckContext, depends_on) -> str:
    """The mistakes the unit checks named, and what the property checks found, in the components `depends_on`
    ("" when none): e.g. "your reconstruction_loss changes its input in place, so backward through it fails"."""
    names = ctx.rubric.component_targets  # the name in the student's code, not the rubric's tag
    found = [f"{m.message} (in `{names.get(m.component) or m.component}`)"
             for c, m in ctx.diagnosed.items() if c in set(depends_on)]
    found += [f for c in depends_on for f in ctx.session.findings.get(c, [])]
    return "; ".join(found)


def model_settings(rubric: Rubric, session: "Session | None", defaults: dict) -> dict:
    """The rubric's [model] table over `defaults`, then the session's overrides and --data.

    Raises ValueError naming unknown keys (a rubric typo must not be silently ignored)."""
    s = {**defaults, **rubric.model}
    if session is not None:
        s.update(session.model_overrides)
        if session.data:
            s["data"] = session.data
    unknown = set(s) - set(defaults)
    if unknown:
        raise ValueError(f"{rubric.path} [model]: unknown key(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return s


def relative_score(student: float | None, reference: float, full: float, zero: float) -> float:
    """Credit for a model-level metric where lower is better (a loss, −log-likelihood): 1 when
    `student` is at most `full` (relative) worse than `reference`, 0 from `zero` worse (and for a
    missing or non-finite value), linear between. E.g. full=0.05, zero=0.25 for a test NLL."""
    if student is None or not math.isfinite(student):
        return 0.0
    r = (student - reference) / max(abs(reference), 1e-12)
    if r <= full:
        return 1.0
    if r >= zero:
        return 0.0
    return (zero - r) / (zero - full)


def tensor(reply_value, what: str, dtype: str | None = None, finite: bool = False) -> np.ndarray:
    """The array inside a student's return value, insisting it is a torch.Tensor.

    `finite=True` (statistical checks, whose tests compare with NaN as False and so would pass a
    NaN) also insists that every value is finite."""
    v = reply_value
    if isinstance(v, dict) and values.TENSOR in v:
        if dtype is not None and v["dtype"] != dtype:
            raise StudentValueError(f"{what} returned a {v['dtype']} tensor for {dtype} inputs (keep the inputs' dtype)",
                                    cause="dtype")
        a = v[values.TENSOR]
        if finite:
            require_finite(a, what)
        return a
    raise StudentValueError(f"{what} must return a torch.Tensor, but returned {describe(v)}")


def require_finite(a, what: str) -> None:
    """Raise StudentValueError when `a` holds NaN or infinite values (said with counts)."""
    a = np.asarray(a)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        raise StudentValueError(f"{what} returned non-finite values ({nan} NaN, {inf} infinite of {a.size}) for finite "
                                "inputs: no statistical test can pass on them")


def sequence(reply_value, what: str, length: int) -> list:
    v = reply_value
    if isinstance(v, dict) and values.SEQ in v and v["len"] == length:
        return v[values.SEQ]
    raise StudentValueError(f"{what} must return a tuple/list of {length} tensors, but returned {describe(v)}")


def describe(v) -> str:
    if isinstance(v, dict):
        if values.TENSOR in v:
            return f"a {v['dtype']} tensor of shape {tuple(v[values.TENSOR].shape)}"
        if values.NUMPY in v:
            return f"a numpy.ndarray of shape {v[values.NUMPY].shape} (convert with torch operations, not numpy)"
        if values.SEQ in v:
            return f"a {v['kind']} of length {v['len']}"
        if values.OBJECT in v:
            return f"an object of type {v[values.OBJECT]}"
    if v is None:
        return "None (did you forget `return`?)"
    return f"a Python {type(v).__name__} ({v!r})"[:200]


def mismatch(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    """None when `got` matches `want`; else a sentence saying how it differs."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    g, w = got.astype(np.float64), want.astype(np.float64)
    bad_nan = np.isnan(g) & np.isfinite(w)
    if bad_nan.any():
        return f"{int(bad_nan.sum())} NaN value(s) where the reference is finite"
    bad_inf = ~np.isfinite(g) & np.isfinite(w)
    if bad_inf.any():
        return f"{int(bad_inf.sum())} infinite value(s) where the reference is finite (e.g. log(0): clamp, or use log-sum-exp)"
    both = np.isfinite(g) & np.isfinite(w)
    if (np.isfinite(g) != np.isfinite(w)).any():
        return "finite values where the reference is infinite"
    # non-finite on both sides: the same NaN or the same signed infinity, as in `distance` (an update giving +inf
    # where a known mistake gives NaN was named that mistake, held-out seed 814869)
    other = ~both & ~((g == w) | (np.isnan(g) & np.isnan(w)))
    if other.any():
        i = tuple(int(j) for j in np.argwhere(other)[0])
        return (f"{int(other.sum())} value(s) non-finite in another way than the reference's; e.g. at index {i} got "
                f"{g[i]}, expected {w[i]} (NaN comes from inf − inf, 0 · inf or 0/0: compute the limit the reference "
                "reaches, e.g. with log-sum-exp or torch.where)")
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: not compared (`both`)
        err = np.abs(g - w)
        tol = atol + rtol * np.abs(w)
    if (err[both] > tol[both]).any():
        i = np.unravel_index(int(np.argmax(np.where(both, err - tol, -np.inf))), g.shape)
        got_s, want_s = distinct_digits(g[i], w[i])
        return (f"values differ: max abs error {err[both].max():.4g}; e.g. at index {tuple(int(j) for j in i)} "
                f"got {got_s}, expected {want_s}")
    return None


def distinct_digits(a: float, b: float, least: int = 6) -> tuple[str, str]:
    """`a` and `b` with `least` significant digits, or as many more as it takes to tell them apart."""
    for digits in range(least, 18):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb:
            return sa, sb
    return repr(float(a)), repr(float(b))


def distance(got, want, rtol: float, atol: float) -> float:
    """How far `got` is from `want` in tolerance units: max |got − want| / (atol + rtol·|want|)
    (<= 1: `close`); inf for another shape, or NaN/inf where the other is finite."""
    try:
        g, w = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    except Exception:
        return math.inf
    if g.shape != w.shape:
        return math.inf
    if (np.isfinite(g) != np.isfinite(w)).any() or (np.isnan(g) != np.isnan(w)).any():
        return math.inf
    both = np.isfinite(g) & np.isfinite(w)
    if not both.any():
        return 0.0 if np.array_equal(g, w, equal_nan=True) else math.inf
    tol = atol + rtol * np.abs(w[both])
    err = np.abs(g[both] - w[both])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tol > 0, err / np.where(tol > 0, tol, 1), np.where(err > 0, np.inf, 0.0))
    if not np.array_equal(g[~both], w[~both], equal_nan=True):
        return math.inf
    return float(ratio.max())


def close(got, want, rtol: float, atol: float) -> bool:
    try:
        return mismatch(np.asarray(got), np.asarray(want), rtol, atol) is None
    except Exception:
        return False


# ---- mutants ------------------------------------------------------------------------------

_MUTANTS: dict[str, dict] = {}


def _load_mutants(rubric: Rubric) -> dict:
    if not rubric.mistakes_module:
        return {}
    if rubric.mistakes_module not in _MUTANTS:
        module = importlib.import_module(rubric.mistakes_module)
        _MUTANTS[rubric.mistakes_module] = dict(getattr(module, "MUTANTS", {}))
    return _MUTANTS[rubric.mistakes_module]


def to_torch(a: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True)).to(device)
