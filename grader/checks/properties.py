"""Property checks: what every component must do whatever its maths (scikit-learn's estimator tags and checks).

A rubric declares, per component, the properties it has (`[properties]`, grader/rubric.py):

    [properties]
    log_normal_diag = { differentiable = ["x", "mu", "log_var"], pure = true, dtype = true, batch = true, range = true }
    "mog_prior.sample" = { stochastic = true, batch = true }
    minibatch_update = { dtype = true, range = true }   # ties are its extreme-but-legal input
    "conv_vae.architecture" = { none = "a constructor: ..." }

Each declared property becomes one hidden check of that component (`<component>.property.<property>`, kind
"property", points from [property_points] or grader.rubric.PROPERTY_POINTS), run by `check_<property>` below. The check calls the component on an *example*: the assignment's checks
module defines `EXAMPLES = {component: builder}` (or `{component: {property: builder, "default": builder}}` where a
property needs another call, e.g. a decoder's sampler; a list of builders, one per branch of the component, e.g. a
decoder's Bernoulli and categorical likelihoods: the check then runs on each), where `builder(ctx, variant) -> Example`
writes one call of the component against the template (inputs as arrays, objects built with `ctx.new`, the reference's answer). The
property checks are generic: a new assignment declares its components' properties and one builder per component.

Each check fails only when its property fails, so a mistake in the values costs the value checks, not these:

- **differentiable**: gradients reach each declared input (and, with "params", every parameter of the component's
  own network that the reference's reaches) and equal the reference's (a parameter kept under other attribute
  names is matched by its own network's path, `_same_parameter`); when the values differ from the reference (a
  mistake charged by the value checks), the inputs' gradients are compared with finite differences of the
  student's own function instead, and the parameters' only need to exist;
- **stochastic**: different seeds give different draws, the same seed the same draws (no reseeding inside the
  function, no global-state reset), and two unseeded calls differ;
- **pure**: the inputs are unchanged after the call (compared with copies), and backward through the result works
  when the inputs require gradients (an in-place edit of an input breaks it);
- **dtype**: float32 in, float32 out; float64 in, float64 out (an object's own tensors converted with
  `ctx.new(..., float_dtype=)`, e.g. a prior's parameters); integer results (counts, indices) stay integers;
- **batch**: a batch of one gives the same values as that example inside a batch, and non-square shapes (B, D and L
  all different) give the reference's shapes, so that a transpose or a hard-coded size shows;
- **range**: right on ordinary inputs, right on extreme but legal ones too (large spreads of log-weights, tiny and
  huge variances, realistic dimensions such as 64 and 784, ties): finite where the reference is finite and within
  10 tolerances of it. Values already wrong on ordinary inputs are not judged here.

A failing case's cause is its property (`Case.cause`), so the same root cause seen by a value check and a property
check is charged once (grader/charging.py); a failed property is also remembered for the model-level messages
(`Session.findings`, "your reconstruction_loss changes its input in place, so backward through it fails").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from grader.checks import CheckContext, StudentValueError, describe, distance, mismatch, to_torch
from grader.rubric import PROPERTY_POINTS
from grader.sandbox.errors import StudentException

PROPERTIES = tuple(PROPERTY_POINTS)  # (points and titles: grader/rubric.py, which must not import torch)


@dataclass(frozen=True)
class Variant:
    """Which example a property check asks for: its dtype, batch size, whether the shapes are non-square
    (every size different: B, D, L, K) and whether the inputs are extreme but legal (`range`)."""
    dtype: str = "float64"
    batch: int = 4
    wide: bool = False
    extreme: bool = False


@dataclass
class Example:
    """One call of a component, written against the template's signature.

    `args`: the positional arguments by template name, in order (arrays; a `{"__ref__": name}` object from
    `ctx.new`; plain numbers). `reference(tensors)`: the reference's output for the same arguments (a dict
    name -> torch tensor on ctx.device; non-array arguments as they are), computed in the grader; it may read
    the parameters of `ref_object` (an nn.Module built with the same weights as the student's object
    `params`, the `ctx.new` name), whose gradients are then compared with the student's. `batched`: the
    arguments whose first axis is the batch (the output's first axis is the batch too, unless `batch_out` is
    False: a scalar loss). `seed`: the seed of every call (stand-ins and sampling draw from it)."""
    target: object
    args: dict
    reference: Callable[[dict], object]
    kwargs: dict = field(default_factory=dict)
    params: str | None = None
    ref_object: torch.nn.Module | None = None
    batched: tuple = ()
    batch_out: bool = True
    rows_independent: bool = True  # False for samplers: a batch of one draws other noise than row 0 of a batch
    # outputs -> what is compared at extreme inputs (e.g. centres sorted by row: which of two equal centres
    # takes a tied point is not specified, so only the set of centres is)
    canonical: Callable[[np.ndarray], np.ndarray] | None = None
    seed: int | None = 0
    label: str = ""
    branch: str = ""  # which branch of the component this example takes (e.g. "categorical likelihood")


def declaration(ctx: CheckContext) -> dict:
    return ctx.rubric.properties.get(ctx.spec.component, {})


def example(ctx: CheckContext, variant: Variant) -> Example:
    import importlib

    builders = getattr(importlib.import_module(ctx.rubric.checks_module), "EXAMPLES", {})
    builder = builders.get(ctx.spec.component)
    if isinstance(builder, dict):  # {property: builder, "default": builder}: another call for some properties
        builder = builder.get(ctx.cause) or builder.get("default")
    if isinstance(builder, (list, tuple)):  # one builder per branch of the component: the check runs on each
        ctx.property_branches = max(getattr(ctx, "property_branches", 1), len(builder))
        builder = builder[min(getattr(ctx, "property_branch", 0), len(builder) - 1)]
    if builder is None:  # `grade lint-rubric` reports it; here it is the grader's bug, not the student's
        raise RuntimeError(f"{ctx.rubric.checks_module}.EXAMPLES has no builder for {ctx.spec.component!r}")
    ex = builder(ctx, variant)
    ctx.property_branch_label = ex.branch
    if getattr(ctx, "property_example", None) is None:
        ctx.property_example = ex  # the first (ordinary) example: `_excuse_constructor` runs it on the own layers
    return ex


# ---- calling ------------------------------------------------------------------------------------

def _positional(ex: Example, values: dict | None = None) -> list:
    values = ex.args if values is None else values
    return [values[n] for n in ex.args]


def _call(ctx: CheckContext, ex: Example, values: dict | None = None, seed="default", **extra) -> dict:
    return ctx.call(ex.target, *_positional(ex, values), seed=ex.seed if seed == "default" else seed, **ex.kwargs,
                    **extra)


def _tensors(reply_value, what: str) -> list[np.ndarray]:
    """The tensors of a return value (a tensor, or a tuple/list of tensors), as arrays."""
    v = reply_value
    if isinstance(v, dict) and "__tensor__" in v:
        return [v["__tensor__"]]
    if isinstance(v, dict) and "__seq__" in v and v["__seq__"] and all(isinstance(x, dict) and "__tensor__" in x
                                                                         for x in v["__seq__"]):
        return [x["__tensor__"] for x in v["__seq__"]]
    raise StudentValueError(f"{what} must return a torch.Tensor (or a tuple of tensors), but returned {describe(v)}")


def _dtypes(reply_value) -> list[str]:
    v = reply_value
    items = [v] if isinstance(v, dict) and "__tensor__" in v else (v.get("__seq__", []) if isinstance(v, dict) else [])
    return [x["dtype"] for x in items if isinstance(x, dict) and "__tensor__" in x]


def _reference(ctx: CheckContext, ex: Example, values: dict | None = None, wrt: tuple = (), cot=None):
    """(outputs as arrays, {input name: gradient}, {parameter name: gradient}) of the reference on `values`."""
    values = ex.args if values is None else values
    ts = {}
    for n, a in values.items():
        if isinstance(a, np.ndarray):
            ts[n] = to_torch(a, ctx.device)
            if n in wrt:
                ts[n].requires_grad_(True)
        else:
            ts[n] = a
    if ex.ref_object is not None:
        ex.ref_object.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=[]):
        if ex.seed is not None:
            torch.manual_seed(int(ex.seed))
        out = ex.reference(ts)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    grads_in, grads_p = {}, {}
    if cot is not None:
        total = sum(((o * to_torch(c, ctx.device).to(o.dtype)).sum() for o, c in zip(outs, cot) if o.requires_grad),
                    torch.zeros((), device=ctx.device))
        if total.requires_grad:
            total.backward()
        grads_in = {n: None if ts[n].grad is None else ts[n].grad.cpu().numpy() for n in wrt}
        if ex.ref_object is not None:
            grads_p = {n: None if p.grad is None else p.grad.cpu().numpy() for n, p in ex.ref_object.named_parameters()}
    return [o.detach().cpu().numpy() for o in outs], grads_in, grads_p


def _returns_sequence(ctx: CheckContext, ex: Example) -> bool:
    ts = {n: to_torch(a, ctx.device) if isinstance(a, np.ndarray) else a for n, a in ex.args.items()}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        return isinstance(ex.reference(ts), (tuple, list))


def _fail_on_exception(ctx: CheckContext, label: str, fn) -> object:
    """fn(), or None after recording the student's exception as this case's failure. Counts the calls that worked
    (`ctx.property_calls_ok`): code that never runs in a check shows nothing about its property."""
    try:
        out = fn()
        ctx.property_calls_ok = getattr(ctx, "property_calls_ok", 0) + 1
        return out
    except StudentException as e:
        ctx.expect(False, label, e.message + (f"\n  at {e.where}" if e.where else ""))
    except StudentValueError as e:  # an unusable return value (a NumPy array, a wrong type): like NaN on ordinary
        ctx.expect(False, label, str(e), cause=e.cause or "")  # inputs, code that does not work yet, no fault of the
        # property (unless the value's own check names its cause)
    return None


def _works(ctx: CheckContext, label: str, got: list, want: list | None = None) -> bool:
    """Code whose values are NaN or infinite where the reference's are finite does not work: a property check gives
    it no credit (a prerequisite, with no known cause: like code that raises, it costs every check)."""
    bad = 0
    for i, g in enumerate(got):
        g = np.asarray(g)
        if g.dtype.kind not in "fc":
            continue
        w = np.asarray(want[i]) if want is not None and i < len(want) and np.shape(want[i]) == g.shape else None
        finite_ref = np.isfinite(w.astype(np.float64)) if w is not None and w.dtype.kind in "fc" else np.ones(g.shape, bool)
        bad += int((~np.isfinite(g.astype(np.float64)) & finite_ref).sum())
    return ctx.require(not bad, f"{label}: finite values",
                       f"{bad} non-finite value(s) (NaN or infinite) for ordinary inputs: the code does not work yet, so its "
                       "properties cannot earn credit", cause="")


def _name(ex: Example) -> str:
    return ex.label or (ex.target if isinstance(ex.target, str) else str(ex.target.get("label", "")))


# ---- the properties -----------------------------------------------------------------------------

def _excuse_constructor(ctx: CheckContext) -> None:
    """When a layer the calls used was built by the student's constructor with other shapes than specified (or
    has no specified counterpart), a method cannot be checked apart from its constructor (docs/grading.md): its
    property is then not judged (the constructor's check charges that mistake once)."""
    if all(c.passed for c in ctx.cases):
        return
    differ = [why for name in list(ctx.specs) for why in ctx.layers_differ(name)]
    ex = getattr(ctx, "property_example", None)
    if not differ or ex is None:
        return
    try:  # excused only if it works on the layers its own constructor built (no unearned credit: docs/grading.md)
        with ctx.own_layers():
            own = _tensors(_call(ctx, ex)["result"], _name(ex))
        if not all(np.isfinite(np.asarray(o, dtype=np.float64)).all() for o in own):
            return
    except Exception:
        return
    ctx.cases = [c for c in ctx.cases if c.passed]
    ctx.notes.append("Not judged apart from your constructor: " + "; ".join(differ[:3])
                     + " (charged once, in the constructor's check).")
    if not ctx.cases:
        ctx.expect(True, "not judged apart from the constructor")


FINDINGS = {  # what a failed property means, for the model-level checks' "likely cause" (grader.checks.found_causes)
    "differentiable": "no gradient, or a wrong one, flows through your {name}, so training cannot reach what it computes",
    "stochastic": "your {name} draws the same values whatever the RNG's state (it reseeds the RNG itself)",
    "pure": "your {name} changes its input in place, so backward through it fails",
    "dtype": "your {name} changes the dtype of its inputs",
    "batch": "your {name} mixes the examples of a batch, or breaks on a batch of one",
    "range": "your {name} overflows or underflows on extreme but legal inputs (NaN or inf)",
}


def _property(check):
    """Every failing case of a property check has that property as its cause (grader/charging.py), and a failed
    property is remembered for the model-level messages (`Session.findings`)."""
    def run(ctx: CheckContext) -> None:
        prop = ctx.cause = check.__name__.removeprefix("check_")
        try:
            ctx.property_branch, ctx.property_branches = 0, 1
            check(ctx)
            _other_branches(ctx, check)
        finally:
            _excuse_constructor(ctx)
            # a finding only when the code ran at least once here: a missing function, or one that raises on every
            # input (the value checks say so), is no "likely cause" such as "changes its input in place"
            # (nor is code that returns NaN on ordinary inputs: that failure has no cause, `_works`)
            if any(not c.passed and c.cause == prop for c in ctx.cases) and getattr(ctx, "property_calls_ok", 0):
                name = str(ctx.rubric.component_targets.get(ctx.spec.component, ctx.spec.component))
                finding = FINDINGS[prop].format(name=name)
                found = ctx.session.findings.setdefault(ctx.spec.component, [])
                if finding not in found:
                    found.append(finding)

    run.__name__, run.__doc__ = check.__name__, check.__doc__
    return run


def _other_branches(ctx: CheckContext, check) -> None:
    """Run `check` again on each further branch of the component (EXAMPLES lists one builder per branch: a decoder's
    Bernoulli and categorical likelihoods), its cases named after the branch. A property that holds in one branch
    only (a .detach() in the categorical log-likelihood alone) went unseen while the check took one branch."""
    while ctx.property_branch + 1 < ctx.property_branches:
        ctx.property_branch += 1
        start = len(ctx.cases)
        ctx.property_branch_label = ""
        with ctx.case(f"branch {ctx.property_branch + 1}"):
            check(ctx)
        label = ctx.property_branch_label or f"branch {ctx.property_branch + 1}"
        for case in ctx.cases[start:]:
            if not case.name.startswith(label):
                case.name = f"{label}: {case.name}"


@_property
def check_differentiable(ctx: CheckContext) -> None:
    """Gradients reach the declared inputs (and parameters) and are right: equal to the reference's when the values
    are the reference's, else to finite differences of the student's own function (a value mistake is the value
    checks' to charge; a gradient cut by numpy, .detach(), .data or no_grad is this check's)."""
    wrt_all = declaration(ctx).get("differentiable") or []
    ex = example(ctx, Variant(dtype="float64"))
    wrt = tuple(n for n in wrt_all if n != "params" and isinstance(ex.args.get(n), np.ndarray))
    params = "params" in wrt_all and ex.params is not None
    name = _name(ex)
    want_vals, _, _ = _reference(ctx, ex)
    grad = {"inputs": [f"args.{list(ex.args).index(n)}" for n in wrt]}
    if _returns_sequence(ctx, ex) or not wrt:  # the gradient of the sum of the outputs: for a tuple, and for
        # parameters only (existence: then the student's own layout of the result, e.g. (B, L), is fine too)
        grad["outputs"] = "sum"
        grad["cotangent"] = None
        cot = [np.ones_like(w) for w in want_vals]
    else:
        cot = [ctx.rng.standard_normal(w.shape) for w in want_vals]
        grad["cotangent"] = cot[0]
    if params:
        grad["params"] = ex.params
    try:
        reply = _call(ctx, ex, grad=grad)
    except StudentException as e:
        # works without gradients, fails with them: an in-place edit of an input (a leaf that requires grad);
        # that is the `pure` property's root cause, charged once with it
        works = _fail_on_exception(ctx, "call without gradients", lambda: _call(ctx, ex)) is not None
        ctx.expect(False, "backward through the result", e.message + (f"\n  at {e.where}" if e.where else ""),
                   cause="pure" if works and "pure" in declaration(ctx) else None)
        return
    except StudentValueError as e:
        ctx.expect(False, "return value", str(e))
        return
    got_vals = _fail_on_exception(ctx, "return value", lambda: _tensors(reply["result"], name))
    if got_vals is None or not _works(ctx, "your result", got_vals, want_vals):
        return
    grads = reply.get("grads")
    if grads is None:
        ctx.expect(False, "the result carries gradients",
                   f"{name}'s result does not require grad for inputs that do: it was computed outside autograd "
                   "(numpy, .item(), .detach(), .data or torch.no_grad())")
        return
    _, want_in, want_p = _reference(ctx, ex, wrt=wrt, cot=cot)
    rtol, atol = ctx.tolerance("float64")
    same_values = _same_values(got_vals, want_vals, rtol, atol, summed=grad.get("outputs") == "sum")
    for n in wrt:
        g = grads.get(f"args.{list(ex.args).index(n)}")
        label = f"gradient w.r.t. {n}"
        if g is None:
            ctx.expect(False, label, f"no gradient reaches `{n}` (was it detached, or computed with numpy, .data, "
                                     ".item() or under torch.no_grad()?)")
        elif same_values:
            ctx.expect_close(g, want_in[n], label, max(rtol, 1e-4) * 10, max(atol, 1e-6) * 10)
    if not same_values and wrt and all(ex.args[n].dtype == np.float64 for n in wrt):
        _finite_differences(ctx, ex, wrt, grads, cot, got_vals)
    if params:
        _parameter_gradients(ctx, ex, grads, want_p, same_values)


def _same_values(got_vals: list, want_vals: list, rtol: float, atol: float, summed: bool) -> bool:
    """Whether the student's results are the reference's, so that their gradients must be the reference's too.
    `summed` (the gradient of the sum of each output): a result in the student's own layout (log q(z|x) per
    dimension, (B, L)) whose sums are the reference's has the reference's gradients too. Only for another layout:
    results of the reference's shape that differ (a Monte-Carlo KL, right in expectation) can match in their sum by
    chance, and their gradients were then compared with the reference's (a CI run failed a correct ELBO so)."""
    if len(got_vals) != len(want_vals):
        return False
    if all(distance(g, w, rtol, atol) <= 1 for g, w in zip(got_vals, want_vals)):
        return True
    return summed and any(np.shape(g) != np.shape(w) for g, w in zip(got_vals, want_vals)) and all(
        distance(np.sum(g, dtype=np.float64), np.sum(w, dtype=np.float64), rtol, atol) <= 1
        for g, w in zip(got_vals, want_vals))


def _finite_differences(ctx: CheckContext, ex: Example, wrt: tuple, grads: dict, cot: list, got_vals: list) -> None:
    """The student's gradients against a central difference of the student's own function along one random
    direction of all inputs in `wrt` (float64, same seed: stand-ins and noise are the same in all three calls)."""
    if any(grads.get(f"args.{list(ex.args).index(n)}") is None for n in wrt):
        return  # already charged: a missing gradient
    direction = {n: ctx.rng.standard_normal(np.shape(ex.args[n])) for n in wrt}
    h = 1e-6
    proj = []
    for sign in (1.0, -1.0):
        values = dict(ex.args)
        for n in wrt:
            values[n] = np.asarray(ex.args[n] + sign * h * direction[n], dtype=ex.args[n].dtype)
        out = _fail_on_exception(ctx, "finite differences of your function", lambda: _tensors(_call(ctx, ex, values)["result"], _name(ex)))
        if out is None:
            return
        proj.append(sum(float((o.astype(np.float64) * c).sum()) for o, c in zip(out, cot)))
    numeric = (proj[0] - proj[1]) / (2 * h)
    analytic = sum(float((grads[f"args.{list(ex.args).index(n)}"] * direction[n]).sum()) for n in wrt)
    if not np.isfinite(numeric):
        return  # the function is not smooth here (its own mistake, charged by the value checks)
    ok = abs(analytic - numeric) <= 1e-5 + 1e-3 * max(abs(numeric), abs(analytic))
    ctx.expect(ok, "gradients agree with finite differences of your own function",
               f"directional derivative from your gradients {analytic:.6g}, from your function's values {numeric:.6g}: "
               "part of the computation is cut from the graph or its backward is wrong")


def _parameter_gradients(ctx: CheckContext, ex: Example, grads: dict, want_p: dict, same_values: bool) -> None:
    got = {k.removeprefix("param:"): v for k, v in grads.items() if k.startswith("param:")}
    if not got:
        ctx.expect(False, "gradients reach the network's parameters",
                   "the network has no parameters that receive gradients")
        return
    for rname, want in want_p.items():
        if want is None:
            continue
        # (a parameter the constructor built under another shape, or that took no state, is the constructor's:
        # not judged here, as in the unit checks)
        misfit = {k for k, _ in ctx.unassigned.get(ex.params, [])}
        matches = [k for k in got if k == rname and k not in misfit
                   and (got[k] is None or np.shape(got[k]) == np.shape(want))]
        if not matches:
            matches = _same_parameter(rname, [k for k in got if k not in misfit and np.shape(got[k]) == np.shape(want)])
        if not matches:
            continue  # a parameter kept under another name: nothing to compare it with
        g = got[matches[0]]
        label = f"gradient reaches the parameter {matches[0]}"
        if g is None or (not np.any(g) and np.any(want)):
            ctx.expect(False, label, f"no gradient reaches `{matches[0]}`: the result is computed outside autograd "
                                     "(numpy, .detach(), .data or torch.no_grad()), so this network would not train")
        elif same_values:  # right values, so the gradient is the reference's (a part cut from the graph shows here)
            ctx.expect_close(g, want, f"gradient w.r.t. the parameter {matches[0]}", 1e-3, 1e-5)
        else:  # wrong values are the value checks' to charge; training still reaches the parameter
            ctx.expect(True, label)


def _same_parameter(rname: str, names: list[str]) -> list[str]:
    """The student's parameter (of the same shape) that is the reference's `rname` under other attribute names:
    the net's own path ("0.weight" of "decoder.0.weight") under whatever attribute the student keeps the net,
    when that path has an index or a submodule in it (never a bare ".weight"); among several, the one under the
    same top-level attribute ("decoder.decoder_net.0.bias", not "encoder.net.0.bias", for "decoder.net.0.bias":
    a decoder net kept under two names is listed once, under its first), then the longest common path. [] when
    none, or when two fit equally well (nothing to compare)."""
    parts = rname.split(".")
    ranked = []
    for k in names:
        mine = k.split(".")
        suffix = next((n for n in range(min(len(parts), len(mine)), 0, -1) if mine[-n:] == parts[-n:]), 0)
        prefix = int(mine[0] == parts[0])
        if suffix >= 2 and (suffix >= len(parts) - 1 or prefix):
            ranked.append(((prefix, suffix), k))
    ranked.sort(reverse=True)
    if not ranked or len(ranked) > 1 and ranked[0][0] == ranked[1][0]:
        return []
    return [ranked[0][1]]


@_property
def check_stochastic(ctx: CheckContext) -> None:
    """Two seeds give different draws, one seed the same draws, two unseeded calls different draws."""
    ex = example(ctx, Variant(dtype="float32", batch=64))
    name = _name(ex)
    draws = {}
    for label, seed in (("seed 1", 1), ("seed 1 again", 1), ("seed 2", 2)):
        out = _fail_on_exception(ctx, f"draw with {label}", lambda: _tensors(_call(ctx, ex, seed=seed)["result"], name))
        if out is None:
            return
        if not _works(ctx, label, out[:1]):
            return
        draws[label] = out[0]
    ctx.expect(not np.array_equal(draws["seed 1"], draws["seed 2"]), "different draws for different global seeds",
               f"{name} returned the same draws whatever the global RNG's state: it reseeds the RNG itself "
               "(e.g. torch.manual_seed inside the function), which also resets the RNG for the rest of the program")
    a = _fail_on_exception(ctx, "unseeded draws", lambda: _tensors(_call(ctx, ex, seed=None)["result"], name)[0])
    b = _fail_on_exception(ctx, "unseeded draws", lambda: _tensors(_call(ctx, ex, seed=None)["result"], name)[0])
    if a is not None and b is not None:
        ctx.expect(not np.array_equal(a, b), "fresh draws on every call",
                   "two calls in a row gave identical draws: draw new noise on every call")
        if a.size > 8 and np.issubdtype(a.dtype, np.floating) and a.std() > 0 and b.std() > 0:
            r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
            ctx.expect(not r > 0.999, "draws independent across calls",
                       f"two calls gave draws with correlation {r:.4f}: they share their noise")


@_property
def check_pure(ctx: CheckContext) -> None:
    """The inputs are unchanged after the call, and backward through the result works."""
    ex = example(ctx, Variant(dtype="float32"))
    name = _name(ex)
    reply = _fail_on_exception(ctx, "call", lambda: _call(ctx, ex, inputs_after=True))
    if reply is None:
        return
    got = _fail_on_exception(ctx, "return value", lambda: _tensors(reply["result"], name))
    if got is None or not _works(ctx, "your result", got, _reference(ctx, ex)[0]):
        return
    originals = [a for a in ex.args.values() if isinstance(a, np.ndarray)]
    after = {k: v["__tensor__"] for k, v in (reply.get("inputs_after") or {}).items()
             if isinstance(v, dict) and "__tensor__" in v}
    changed = [k for k, v in after.items()
               if not any(v.shape == o.shape and np.array_equal(v, o, equal_nan=True) for o in originals)]
    ctx.expect(not changed, "inputs unchanged after the call",
               f"{name} changes its input(s) in place ({', '.join(changed)}): the caller's tensor is overwritten "
               "and backward through it fails; compute a new tensor (x - y, not x.sub_(y) / x -= y)")
    wrt = [n for n, a in ex.args.items() if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    if not wrt:
        return
    grad = {"inputs": [f"args.{list(ex.args).index(n)}" for n in wrt], "cotangent": None, "outputs": "sum"}
    # (whether gradients reach the inputs is the `differentiable` property's: only a failing backward counts here)
    if _fail_on_exception(ctx, "backward through the result (inputs that require grad)",
                          lambda: _call(ctx, ex, grad=grad)) is not None:
        ctx.expect(True, "backward through the result works")


@_property
def check_dtype(ctx: CheckContext) -> None:
    """float32 in, float32 out; float64 in, float64 out (every floating output); an integer result (counts,
    indices: the reference's is an integer tensor) is an integer tensor."""
    for dtype in ("float32", "float64"):
        ex = example(ctx, Variant(dtype=dtype))
        want = _reference(ctx, ex)[0]
        floats = any(np.asarray(w).dtype.kind == "f" for w in want)
        if dtype == "float64" and not floats:
            continue  # integer results only (a confusion matrix): one call says it all
        name = _name(ex)
        reply = _fail_on_exception(ctx, f"{dtype} inputs", lambda: _call(ctx, ex))
        if reply is None:
            continue
        values = _fail_on_exception(ctx, f"{dtype} inputs", lambda: _tensors(reply["result"], name))
        if values is None or not _works(ctx, f"{dtype} inputs", values, want):
            continue
        dtypes = _dtypes(reply["result"])
        if floats:
            wrong = sorted(set(d for d in dtypes if d.startswith(("float", "bfloat")) and d != dtype))
            ctx.expect(not wrong, f"{dtype} in, {dtype} out",
                       f"{name} returned {', '.join(wrong)} for {dtype} inputs: keep the inputs' dtype (create "
                       "constants and new tensors with dtype=x.dtype, e.g. torch.zeros_like, "
                       "torch.as_tensor(c, dtype=x.dtype))")
            if wrong and not _values_right_but_for_dtype(ctx, values, want):
                # the slip does not explain the values: the other checks' dtype failures hide a value mistake, so
                # "dtype" is no root cause to refund there (a wrong function turned float16 got 3.7/5.95, 0.95 honest)
                ctx.session.causes_ruled_out.setdefault((ctx.spec.component, "dtype"), ctx.spec.id)
        counts = [d for d, w in zip(dtypes, want) if np.asarray(w).dtype.kind in "iu"]
        if counts:
            wrong = sorted(set(d for d in counts if not d.startswith(("int", "uint"))))
            ctx.expect(not wrong, "integer results are integer tensors",
                       f"{name} returned {', '.join(wrong)} where the assignment asks for integers (int64 counts or "
                       "indices): build them with an integer dtype (torch.bincount, torch.zeros(..., dtype=torch.long))")


def _values_right_but_for_dtype(ctx: CheckContext, got: list, want: list) -> bool:
    """The student's floating results, of the wrong dtype, equal the reference's at the float32 check's tolerance."""
    rtol, atol = ctx.tolerance("float32")
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.dtype.kind == "f" and w.dtype.kind == "f" and (
                g.shape != w.shape or mismatch(g.astype(np.float64), w.astype(np.float64), rtol, atol) is not None):
            return False
    return len(got) == len(want)


@_property
def check_batch(ctx: CheckContext) -> None:
    """A batch of one gives the values of that example in a batch; non-square shapes give the reference's shapes."""
    full = example(ctx, Variant(dtype="float64", batch=4))
    name = _name(full)
    got_full = _fail_on_exception(ctx, "a batch of 4", lambda: _tensors(_call(ctx, full)["result"], name))
    if got_full is not None and not _works(ctx, "a batch of 4", got_full, _reference(ctx, full)[0]):
        return
    # the same example (objects, weights), its first row: batched arrays sliced, a batch-size argument set to 1
    one = dataclasses.replace(full, args={n: (np.ascontiguousarray(a[:1]) if isinstance(a, np.ndarray) else 1)
                                          if n in full.batched else a for n, a in full.args.items()})
    want_one, _, _ = _reference(ctx, one)
    got_one = _fail_on_exception(ctx, "a batch of one", lambda: _tensors(_call(ctx, one)["result"], name))
    if got_one is not None:
        shapes = [tuple(g.shape) for g in got_one]
        wants = [tuple(w.shape) for w in want_one]
        if ctx.expect(shapes == wants, "a batch of one: shape", f"shapes {shapes}, expected {wants} (no squeeze() "
                      "that drops the batch axis of size 1)") and got_full is not None and full.batched and full.batch_out \
                and full.rows_independent:
            rows = [g[:1] for g in got_full]
            same = all(r.shape == o.shape and distance(o, r, *ctx.tolerance(str(o.dtype))) <= 1 for r, o in zip(rows, got_one))
            ctx.expect(same, "a batch of one: the same values as that example in a batch of 4",
                       "the values for one example depend on the other examples of the batch (a reduction over "
                       "the batch axis, or an axis mixed up)")
    wide = example(ctx, Variant(dtype="float64", batch=3, wide=True))
    want_wide, _, _ = _reference(ctx, wide)
    got_wide = _fail_on_exception(ctx, "non-square shapes", lambda: _tensors(_call(ctx, wide)["result"], name))
    if got_wide is not None:
        shapes = [tuple(g.shape) for g in got_wide]
        wants = [tuple(w.shape) for w in want_wide]
        ctx.expect(shapes == wants, "non-square shapes: the reference's shapes",
                   f"shapes {shapes}, expected {wants}: an axis is transposed or a size is hard-coded")


@_property
def check_range(ctx: CheckContext) -> None:
    """Right on ordinary inputs, right on extreme but legal ones too: finite wherever the reference is finite and
    within tolerance of it. A function whose values already differ on ordinary inputs is not judged here (the value
    checks charge that); so only a mistake that shows at extremes (overflow, underflow, ties) costs this check."""
    ordinary = example(ctx, Variant(dtype="float64"))
    want, _, _ = _reference(ctx, ordinary)
    got = _fail_on_exception(ctx, "ordinary inputs", lambda: _tensors(_call(ctx, ordinary)["result"], _name(ordinary)))
    if got is None or not _works(ctx, "ordinary inputs", got, want):
        return
    if not _all_close(ctx, got, want, "float64"):
        ctx.notes.append("Not judged: your values already differ from the reference's on ordinary inputs "
                         "(charged by the value checks).")
        ctx.expect(True, "extreme inputs (not judged)")
        return
    for dtype in ("float32", "float64"):
        ex = example(ctx, Variant(dtype=dtype, extreme=True))
        floats = {a.dtype.name for a in ex.args.values() if isinstance(a, np.ndarray) and a.dtype.kind == "f"}
        if dtype == "float64" and floats and "float64" not in floats:
            continue  # the component's example is float32 only (a network's weights): judged once
        name, label = _name(ex), f"{sorted(floats)[0] if floats else dtype}: {ex.label or 'extreme inputs'}"
        want, _, _ = _reference(ctx, ex)
        got = _fail_on_exception(ctx, label, lambda: _tensors(_call(ctx, ex)["result"], name))
        if got is None:
            continue
        if ex.canonical is not None:
            got, want = [ex.canonical(g) for g in got], [ex.canonical(w) for w in want]
        problems, overflow = [], False
        for i, (g, w) in enumerate(zip(got, want)):
            which = f"output {i}: " if len(got) > 1 else ""
            if g.shape != w.shape:
                problems.append(f"{which}shape {tuple(g.shape)}, expected {tuple(w.shape)}")
                continue
            bad = ~np.isfinite(g.astype(np.float64)) & np.isfinite(w.astype(np.float64))
            if bad.any():
                nan, inf = int(np.isnan(g[bad]).sum()), int(np.isinf(g[bad]).sum())
                problems.append(f"{which}{nan} NaN and {inf} infinite value(s) of {g.size} where the reference's are finite")
                overflow = True
            elif not _all_close(ctx, [g], [w], dtype, loose=10.0):
                problems.append(mismatch(g, w, *[t * 10 for t in ctx.tolerance(dtype)]) or "values differ")
        ctx.expect(not problems, label, "; ".join(problems)
                   + (" (overflow or underflow: work in log space, subtract the max before exp)" if overflow else ""))


def _all_close(ctx: CheckContext, got: list, want: list, dtype: str, loose: float = 1.0) -> bool:
    rtol, atol = ctx.tolerance(dtype)
    return len(got) == len(want) and all(distance(g, w, rtol * loose, atol * loose) <= 1 for g, w in zip(got, want))
