"""One runner per check kind (grader/kinds.py): how a rubric's check entry is judged.

The engine hands a runner one `CheckRun` (the check, the sandbox, the submission's shared state and
the context factory) and gets back the check's `Outcome`; it never asks which kind it runs.

    unit       the check function once, then its re-run policies (each may replace the outcome):
               `lenient_interface` and `own_layout` (below)
    interface  the unit runner; `check = "interface"` uses the shared `judge_signatures`
    property   the unit runner (declared property checks)
    model      the check function once, with the grader's torch threads left as they are (it trains)
"""

from __future__ import annotations

import copy
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from grader.checks import CheckContext, Outcome, Session, StudentValueError, torch_threads
from grader.checks.interface import NotJudged, SignatureError, judge_signatures
from grader.kinds import KINDS
from grader.results import GradeResult, TestResult
from grader.rubric import CheckSpec, Rubric, RubricError
from grader.sandbox.errors import StudentCodeError

ContextFactory = Callable[..., CheckContext]
"""Builds a check's context: `factory(spec, rubric, sandbox, device, diagnosed, call_timeout, session, layout=...)`.
`grade_submission(..., context=...)` takes one (the release recorder's and the self-check's contexts answer
from recorded reference values); the default is `CheckContext`."""


@dataclass
class CheckRun:
    """Everything one check's judgement needs; the engine builds it, a runner reads it."""

    spec: CheckSpec
    rubric: Rubric
    sandbox: object  # grader.sandbox.client.Sandbox, or the self-check's in-process stand-in
    device: str
    diagnosed: dict  # component -> Mistake found by earlier checks (shared by the submission's checks)
    timeout: float  # per call into the student's code
    deadline: float  # time.monotonic() at which the submission's budget is spent
    session: Session
    result: GradeResult  # internal errors are recorded here
    test: TestResult  # `error` is set here when the student's code did not run
    context: ContextFactory = CheckContext
    function: Callable | None = field(default=None)  # the check function (set by the runner)

    def new_context(self, **kwargs) -> CheckContext:
        return self.context(self.spec, self.rubric, self.sandbox, self.device, self.diagnosed, self.timeout,
                            self.session, **kwargs)


def judge(run: CheckRun, ctx: CheckContext, test: TestResult | None = None) -> Outcome:
    """Run the check function on `ctx` and turn whatever it raises into its Outcome (sets `test.error`)."""
    spec, test = run.spec, test or run.test
    try:
        with torch_threads(None if spec.kind_info.trains else 1):
            run.function(ctx)
        outcome = ctx.outcome()
    except StudentCodeError as e:
        where = f"\n  at {e.where}" if e.where else ""
        blocked = blocked_by_constructor(e, spec, run.rubric, run.session)
        if blocked:
            test.error = "blocked"  # scored after every check ran: credit_blocked
            return Outcome(1.0, f"Not judged: {blocked}")
        ctx.expect(False, "your code", f"{e.message}{where}")
        outcome = ctx.outcome()
        test.error = e.kind
        if e.kind == "timeout":
            outcome.message += f"\n(limit: {ctx.call_timeout:g} s per call)"
    except NotJudged as e:  # a case needs a parameter the student's signature lacks: charged once, elsewhere
        ctx.notes.append(e.note)
        ctx.not_judged += 1
        outcome = ctx.outcome()
    except SignatureError as e:
        ctx.expect(False, "signature", str(e))
        outcome = ctx.outcome()
        test.error = "value"
    except StudentValueError as e:
        ctx.expect(False, "return value", str(e), cause=getattr(e, "cause", None))
        outcome = ctx.outcome()
        test.error = "value"
    except RubricError:
        raise
    except Exception as e:  # a grader bug must not take the batch down: record it loudly
        outcome = Outcome(0.0, f"Internal grader error in check {spec.id}: {type(e).__name__}: {e}. "
                               "This is not your fault; the course staff has been told.")
        run.result.errors.append(f"internal error in {spec.id}: {traceback.format_exc(limit=-3)}")
        test.error = "internal"
    return outcome


def _constructor_owners(rubric: Rubric, cls: str) -> list[str]:
    """The components that grade class `cls` itself or one of its methods (rubric [components])."""
    return [c for c, target in rubric.component_targets.items()
            if c != "model" and target and (target == cls or target.startswith(cls + "."))]


def blocked_by_constructor(e: StudentCodeError, spec: CheckSpec, rubric: Rubric, session: Session) -> str:
    """Why `spec` cannot be judged when the student's code failed inside `Class.__init__` of a class
    that another component grades ('' when it is this check's own failure, charged as usual).

    A constructor's mistake is charged once, on its class's components: the first check of an owning
    component that hits it records it (and is charged); later checks of other components that need an
    object of that class (a composite, the trained model) say why they could not run and are scored by
    `credit_blocked`. A class never found broken by its own checks (e.g. not selected by --only) is charged where it
    fails, so a claim of the child alone never earns credit."""
    cls = e.constructor.rpartition(".")[0] if e.constructor.endswith(".__init__") else ""
    owners = _constructor_owners(rubric, cls) if cls else []
    if not owners:
        return ""
    broken = session.cache.setdefault("broken_constructors", {})
    if spec.component in owners:
        broken.setdefault(cls, e.message)
        return ""
    if cls not in broken:
        return ""
    charged = " and ".join(f"`{rubric.component_targets[c]}`" for c in owners)
    return (f"your `{cls}` could not be built ({broken[cls]}, in `{cls}.__init__`) and this check needs one. "
            f"That mistake is charged once, in the checks of {charged}; this check is not charged for it again.")


def credit_blocked(tests: list[TestResult], rubric: Rubric, session: Session) -> None:
    """Give each check that could not run because another class's constructor failed (error "blocked")
    the student's rate on the checks that did run, the broken classes' own checks left out.

    The constructor's mistake is then not charged again (a submission right everywhere else keeps these
    points), and breaking a constructor on purpose earns nothing the rest of the work did not: code that
    fails the other checks gets as little here. No judged check to take a rate from: nothing is credited."""
    blocked = [t for t in tests if t.error == "blocked"]
    if not blocked:
        return
    owners = {c for cls in session.cache.get("broken_constructors", {}) for c in _constructor_owners(rubric, cls)}
    judged = [t for t in tests if t.error != "blocked" and t.max_score > 0 and t.component not in owners]
    possible = sum(t.max_score for t in judged)
    rate = sum(t.score for t in judged) / possible if possible else 0.0
    for t in blocked:
        t.score = t.max_score * rate
        t.output += (f"\nCredited at your rate on the checks that ran ({rate:.0%} of their points), the "
                     "checks of the broken class left out." if possible else
                     "\nNo other check ran to credit it from, so it earns no points in this run.")


# ---- re-run policies of the unit runner: (run, ctx, outcome) -> (ctx, outcome) ----------------------

def lenient_interface(run: CheckRun, ctx: CheckContext, outcome: Outcome) -> tuple[CheckContext, Outcome]:
    """Every case passes a parameter the student's function lacks: judge it called without that
    parameter, so that "not applicable" is never credit for code that does not work
    (CheckContext._lenient_outcome)."""
    if not ctx.nothing_judged or run.test.error:
        return ctx, outcome
    ctx = run.new_context()
    ctx.lenient_interface = True
    return ctx, judge(run, ctx)


def own_layout(run: CheckRun, ctx: CheckContext, outcome: Outcome) -> tuple[CheckContext, Outcome]:
    """The student's code keeps an upstream value in its own layout (e.g. log p(z) per latent
    dimension, B×L) and that upstream is wrong. A composite written against that layout is graded
    again with the correct values laid out the student's way; it keeps the better score, so the
    upstream mistake is charged on its own component only (docs/grading.md)."""
    if outcome.fraction >= 1.0 or not ctx.stand_ins.own_layouts or time.monotonic() >= run.deadline:
        return ctx, outcome
    own = run.new_context(layout="own")
    own.lenient_interface = ctx.lenient_interface
    trial = copy.copy(run.test)
    trial.error = ""
    own_outcome = judge(run, own, trial)
    if own_outcome.fraction > outcome.fraction:
        names = ", ".join(f"`{n}`" for n in sorted(ctx.stand_ins.own_layouts))
        own_outcome.message += (f"\nGraded with correct upstream values in your own layout of {names} "
                                "(one value per dimension, which your code reduces itself).")
        run.test.error = trial.error
        return ctx, own_outcome
    return ctx, outcome


# ---- runners --------------------------------------------------------------------------------------

class UnitRunner:
    """The check function once, then each re-run policy in order."""

    policies = (lenient_interface, own_layout)
    shared_function: Callable | None = None  # the kind's own check function, when the checks module has none

    def run(self, run: CheckRun) -> Outcome:
        shared = self.shared_function if run.spec.check == run.spec.kind else None
        run.function = run.rubric.check_function(run.spec, shared=shared)
        ctx = run.new_context()
        outcome = judge(run, ctx)
        for policy in self.policies:
            ctx, outcome = policy(run, ctx, outcome)
        return outcome


class InterfaceRunner(UnitRunner):
    shared_function = staticmethod(judge_signatures)


class ModelRunner:
    """Model level: the student's whole model, trained and evaluated (no stand-ins, nothing to re-run)."""

    def run(self, run: CheckRun) -> Outcome:
        run.function = run.rubric.check_function(run.spec)
        return judge(run, run.new_context())


RUNNERS = {"unit": UnitRunner(), "interface": InterfaceRunner(), "property": UnitRunner(), "model": ModelRunner()}
assert set(RUNNERS) == set(KINDS), "every kind of grader/kinds.py has a runner"


def runner_for(spec: CheckSpec):
    return RUNNERS[spec.kind]
