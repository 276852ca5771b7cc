"""Checks of the `density-models` assignment (rubric: rubrics/density-models.toml,
reference: reference/density_models.py, mutants: reference/density_models_mistakes.py).

Unit checks: one `check_<name>(ctx)` per rubric entry, each with its own deterministic inputs; the
student's code runs in the sandbox, the reference here on the same inputs. Composite checks (the
conv VAE's `elbo`, the EM step) accept the reference with mistakes already charged on other
components (`expect_any_variant`), so each mistake costs once.

The model half (component "model": PPCA, EM and the conv VAE fitted on digits) is
grader/checks/density_models_model.py, on the shared framework (grader/checks/model_level.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from grader.checks import interface, properties
from grader.checks import (
    CheckContext, StudentValueError, distance, close, expect_any_variant, sequence, tensor, to_torch,
)
from grader.checks.density_models_model import (  # noqa: F401  (the model half: its checks, metrics, preflight)
    METRICS, check_model_gmm, check_model_ppca, check_model_reconstruction, check_model_vae_elbo, comparison_key,
    preflight,
)
from grader.sandbox.client import StudentException

B = 5  # batch of the unit checks
L = 2  # VAE latent size of the unit checks
S = 8  # image side of the unit checks


def _f(a, dtype: str) -> np.ndarray:
    return np.asarray(a, dtype=dtype)


# ---- conv VAE: weights, student objects, reference models ----------------------------------------

def param_shapes(latent_dim: int = L, image_size: int = S) -> dict[str, tuple]:
    """The parameters the assignment specifies (names and shapes, in definition order)."""
    f = 32 * (image_size // 4) ** 2
    return {"conv1.weight": (16, 1, 3, 3), "conv1.bias": (16,), "conv2.weight": (32, 16, 3, 3), "conv2.bias": (32,),
            "fc_mu.weight": (latent_dim, f), "fc_mu.bias": (latent_dim,),
            "fc_log_var.weight": (latent_dim, f), "fc_log_var.bias": (latent_dim,),
            "fc_dec.weight": (f, latent_dim), "fc_dec.bias": (f,),
            "deconv1.weight": (32, 16, 3, 3), "deconv1.bias": (16,), "deconv2.weight": (16, 1, 3, 3), "deconv2.bias": (1,)}


def _vae_state(ctx: CheckContext, latent_dim: int = L, image_size: int = S) -> dict[str, np.ndarray]:
    """Deterministic weights for the specified layers (PyTorch-like scale), with the posterior pushed
    away from the prior (mu ≈ 1, log_var ≈ −1) so that KL and reparameterisation mistakes show."""
    state = {}
    for name, shape in param_shapes(latent_dim, image_size).items():
        bound = 1.0 / math.sqrt(float(np.prod(shape[1:]))) if len(shape) > 1 else 0.3
        state[name] = _f(ctx.rng.uniform(-bound, bound, shape), "float32")
    state["fc_mu.bias"] = state["fc_mu.bias"] + np.float32(1.0)
    state["fc_log_var.bias"] = state["fc_log_var.bias"] - np.float32(1.0)
    return state


def _student_vae(ctx: CheckContext, name: str, state: dict, latent_dim: int = L, image_size: int = S) -> dict:
    return ctx.new(name, "ConvVAE", latent_dim=latent_dim, image_size=image_size, state=state)


def _ref_vae(ctx: CheckContext, state: dict, latent_dim: int = L, image_size: int = S):
    """The reference ConvVAE (built under whatever patches are active) holding `state`."""
    model = ctx.ref.ConvVAE(latent_dim, image_size).to(ctx.device)
    model.load_state_dict({k: to_torch(v, ctx.device) for k, v in state.items()})
    return model.eval()


def _images(ctx: CheckContext, n: int = B, side: int = S, binary: bool = False) -> np.ndarray:
    x = ctx.rng.uniform(size=(n, 1, side, side))
    return _f(x > 0.5 if binary else x, "float32")


def _pair(reply, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = sequence(reply["result"], what, 2)
    return tensor(a, what), tensor(b, what)


def _layer_probes(ctx: CheckContext, patches: dict, state: dict, latent_dim: int, side: int, x, z,
                  inputs: dict | None = None) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(layer path, its description, input, output) of every layer of the reference ConvVAE built with
    `patches` (holding `state` where it fits), in the order encode(x) then decode(z) call them.
    With `inputs` ({path: array}) each of those layers runs on its array alone instead (to predict a
    mistaken constructor's layers on the inputs the student's layers got)."""
    from grader.sandbox.standins import layers

    seen: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    with ctx.patched(patches), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # (the grader's own RNG is left as it was)
        m = ctx.ref.ConvVAE(latent_dim, side).to(ctx.device)
        own = m.state_dict()
        for k, v in state.items():
            if k in own and tuple(own[k].shape) == tuple(v.shape):
                own[k].copy_(to_torch(v, ctx.device))
        if inputs is not None:
            for path, layer in layers(m):
                if path in inputs:
                    try:
                        seen.append((path, repr(layer), inputs[path], layer(to_torch(inputs[path], ctx.device)).cpu().numpy()))
                    except Exception:
                        pass  # this layer refuses that input: no prediction
            return seen
        hooks = [layer.register_forward_hook(
            lambda mod, args, out, path=path: seen.append((path, repr(mod), args[0].cpu().numpy(), out.cpu().numpy())))
            for path, layer in layers(m)]
        try:
            m.encode(to_torch(x, ctx.device))
            m.decode(to_torch(z, ctx.device))
        finally:
            for h in hooks:
                h.remove()
    return seen


def check_conv_vae_architecture(ctx: CheckContext) -> None:
    """The constructor alone: parameter names and shapes of the specified layers, then each layer on
    its own (given weights, the input the reference's forward gives it), 8×8 and 28×28. The
    student's encode/decode are not called: their mistakes are charged on their own checks."""
    from grader.checks.standins import MAX_LAYERS, map_layers
    from grader.sandbox.standins import layers

    rtol, atol = ctx.tolerance("float32")
    for latent_dim, side in ((2, 8), (3, 28)):
        label = f"ConvVAE(latent_dim={latent_dim}, image_size={side})"
        name = f"arch_{latent_dim}_{side}"
        state = _vae_state(ctx, latent_dim, side)
        ctx.new(name, "ConvVAE", latent_dim=latent_dim, image_size=side, state=state, partial_state=True)
        got = ctx.sandbox.request({"op": "params", "name": name}, timeout=ctx.call_timeout)
        got_shapes = {k: tuple(v.shape) for k, v in got.items() if isinstance(v, np.ndarray)}
        ref_shapes = param_shapes(latent_dim, side)
        missing = {k: v for k, v in ref_shapes.items() if got_shapes.get(k) != v}
        ctx.expect(not missing, f"{label}: layers named and shaped as specified",
                   "expected " + ", ".join(f"{k} {v}" for k, v in list(missing.items())[:6])
                   + f"; found {', '.join(f'{k} {v}' for k, v in list(got_shapes.items())[:8]) or 'no parameters'}")
        # each layer alone, on the input the specified network gives it
        x = _images(ctx, 3, side)
        z = _f(ctx.rng.standard_normal((3, latent_dim)), "float32")
        probes = _layer_probes(ctx, {}, state, latent_dim, side, x, z)
        student = ctx.sandbox.request({"op": "layers", "name": name}, timeout=ctx.call_timeout)["layers"][:MAX_LAYERS]
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            specified = [(p, type(m).__name__) for p, m in layers(ctx.ref.ConvVAE(latent_dim, side))]
        role = {v: k for k, v in map_layers([(str(p), str(t)) for p, t, _ in student], specified).items()}
        outs: dict[str, np.ndarray] = {}
        fed: dict[str, np.ndarray] = {}
        failed = False
        compared = []  # the cases of the layers that ran: those the diagnosis compares
        for path, desc, inp, want in probes:
            case = f"{label}: {path} = {desc} on a {'×'.join(map(str, inp.shape))} input"
            mine = role.get(path)
            if mine is None:
                failed |= not ctx.expect(False, case, "no layer of your ConvVAE plays this role (your layers: "
                                         + (", ".join(f"{p} {t}" for p, t, _ in student[:8]) or "none") + ")")
                continue
            try:
                reply = ctx.call(ctx.method({"__ref__": name}, mine, f"ConvVAE.{mine}"), inp)
                out = tensor(reply["result"], f"ConvVAE.{mine}")
            except (StudentException, StudentValueError) as e:
                msg = e.message if isinstance(e, StudentException) else str(e)
                failed |= not ctx.expect(False, case, f"your `{mine}` fails on this input: {msg.splitlines()[0][:200]}")
                continue
            outs[path], fed[path] = out, inp
            failed |= not ctx.expect_close(out, want, case + ("" if mine == path else f" (your `{mine}`)"), rtol, atol)
            compared.append(ctx.cases[-1])
        if failed and outs:
            def matches(patches, x=x, z=z, latent_dim=latent_dim, side=side, outs=outs, fed=fed, state=state):
                pred = {p: o for p, _, _, o in _layer_probes(ctx, patches, state, latent_dim, side, x, z, inputs=fed)}
                return max((distance(o, pred[p], rtol, atol) if p in pred else math.inf) for p, o in outs.items())
            ctx.attribute(ctx.diagnose(matches), compared)


def _not_isolated(ctx: CheckContext, name: str, case: str, what: str, own_run) -> bool:
    """The rule when a method cannot be checked apart from its constructor (docs/grading.md): a layer
    the method used is built with other shapes than specified, or has no specified counterpart and
    ran as written (`ctx.layers_differ`). Then a failing call or a result of the wrong shape (`what`)
    is not charged here — the constructor's mistake costs points once, on conv_vae.architecture —
    and the note says so, provided the method is right for its own constructor as far as that can be
    seen: `own_run()` (the same call on the layers the student's constructor built) runs and returns
    the specified shape. A method that fails there too is charged: adding a layer must not excuse a
    method that does not work. Wrong values of the right shape are the method's own: the layers it
    used answered as specified. True (and a passed case) when the rule applies."""
    differ = ctx.layers_differ(name)
    if not differ:
        return False
    try:
        with ctx.own_layers():
            fits = own_run()
        problem = "" if fits else "returns the wrong shape"
    except (StudentException, StudentValueError) as e:
        fits, problem = False, "fails (" + (e.message if isinstance(e, StudentException) else str(e)).splitlines()[0][:160] + ")"
    if not fits:
        ctx.notes.append(f"{case}: your ConvVAE's layers differ from the specification ({'; '.join(differ[:3])}), "
                         f"but this method also {problem} on the layers your own constructor built, so it is "
                         "judged as it is.")
        return False
    ctx.notes.append(f"{case}: not judged: {what}, but your ConvVAE's layers differ from the specification "
                     f"({'; '.join(differ[:3])}), so this method cannot be checked apart from your constructor "
                     "(on your own layers it runs and returns the specified shape). That mistake costs points "
                     "once, on conv_vae.architecture.")
    ctx.expect(True, case)
    return True


def _student_result(ctx: CheckContext, name: str, case: str, call, shape_of, expected):
    """`call()`'s value, or None when it fails and `_not_isolated` excuses the failure (`shape_of(value)`
    must then be `expected` when the call runs on the student's own layers)."""
    try:
        return call()
    except (StudentException, StudentValueError) as e:
        msg = e.message if isinstance(e, StudentException) else str(e)
        if _not_isolated(ctx, name, case, f"your code fails ({msg.splitlines()[0][:160]})",
                         lambda: shape_of(call()) == expected):
            return None
        raise


def check_conv_vae_encode(ctx: CheckContext) -> None:
    state = _vae_state(ctx)
    obj = _student_vae(ctx, "enc", state)
    x = _images(ctx)
    case = f"(mu, log_var) for {B} images with given weights"
    call = lambda: ctx.call(ctx.method(obj, "encode", "ConvVAE.encode"), x,  # noqa: E731
                            grad={"params": "enc", "outputs": "sum"})
    shapes = lambda reply: tuple(a.shape for a in _pair(reply, "ConvVAE.encode"))  # noqa: E731
    reply = _student_result(ctx, "enc", case, call, shapes, ((B, L), (B, L)))
    if reply is None:
        return
    mu, lv = _pair(reply, "ConvVAE.encode")
    # training reaches every encoder layer (a detached intermediate, found by generated mutants, scored full marks)
    # (parameters built under the specified name and shape; the others are the constructor's)
    grads = reply.get("grads") or {}
    misfit = {k for k, _ in ctx.unassigned.get("enc", [])}
    judged = [k for k in param_shapes() if k.split(".")[0] in ("conv1", "conv2", "fc_mu", "fc_log_var")
              and f"param:{k}" in grads and k not in misfit]
    stuck = [k for k in judged if grads[f"param:{k}"] is None or not np.any(grads[f"param:{k}"])]
    ctx.require(bool(grads) and not stuck, "gradients of mu and log_var reach conv1, conv2, fc_mu and fc_log_var",
               "no gradient reaches " + (", ".join(stuck) if stuck else "the encoder's parameters")
               + ": is an intermediate detached, or computed under torch.no_grad()?")
    got = np.concatenate([mu, lv], axis=1) if mu.shape == lv.shape == (B, L) else np.stack([mu.ravel()])

    def reference(patches):
        with ctx.patched(patches), torch.no_grad():
            m, v = _ref_vae(ctx, state).encode(to_torch(x, ctx.device))
            return torch.cat([m, v], dim=1).cpu().numpy()

    if got.shape != reference({}).shape and _not_isolated(ctx, "enc", case, f"the result has shape {got.shape}",
                                                          lambda: shapes(call()) == ((B, L), (B, L))):
        return
    expect_any_variant(ctx, got, reference, case)


def check_conv_vae_decode(ctx: CheckContext) -> None:
    state = _vae_state(ctx)
    obj = _student_vae(ctx, "dec", state)
    z = _f(ctx.rng.standard_normal((B, L)) * 1.5, "float32")
    case = f"Bernoulli means for {B} latents with given weights"
    call = lambda: ctx.call(ctx.method(obj, "decode", "ConvVAE.decode"), z,  # noqa: E731
                            grad={"inputs": ["args.0"], "cotangent": None})
    shape = lambda reply: tensor(reply["result"], "ConvVAE.decode").shape  # noqa: E731
    reply = _student_result(ctx, "dec", case, call, shape, (B, 1, S, S))
    if reply is None:
        return
    got = tensor(reply["result"], "ConvVAE.decode", dtype="float32")
    # training reaches the latents (a detached output, found by generated mutants, scored full marks)
    g = (reply.get("grads") or {}).get("args.0")
    ctx.expect(g is not None and bool(np.any(g)), "gradients flow back to the latents z",
               "no gradient reaches z through decode: is the output detached, or computed under torch.no_grad()?")

    def reference(patches):
        with ctx.patched(patches), torch.no_grad():
            return _ref_vae(ctx, state).decode(to_torch(z, ctx.device)).cpu().numpy()

    if got.shape != reference({}).shape and _not_isolated(ctx, "dec", case, f"the result has shape {got.shape}",
                                                          lambda: shape(call()) == (B, 1, S, S)):
        return
    if expect_any_variant(ctx, got, reference, case):
        return
    ctx.expect(bool(np.all((got > 0) & (got < 1))), "values are probabilities in (0, 1)",
               f"values range over [{np.nanmin(got):.3g}, {np.nanmax(got):.3g}]: apply a sigmoid to the last layer")


# ---- vae_elbo --------------------------------------------------------------------------------------

def _elbo_inputs(ctx, dtype: str, flat: bool, binary: bool, far: bool):
    x = ctx.rng.uniform(size=(B, 1, S, S))
    x = (x > 0.5).astype(float) if binary else x
    probs = ctx.rng.uniform(0.02, 0.98, size=(B, 1, S, S))
    if flat:
        x, probs = x.reshape(B, -1), probs.reshape(B, -1)
    mu = ctx.rng.standard_normal((B, L)) * (3.0 if far else 0.5)
    lv = ctx.rng.uniform(-3.0, 2.0, size=(B, L)) if far else ctx.rng.uniform(-0.5, 0.5, size=(B, L))
    return tuple(_f(a, dtype) for a in (x, probs, mu, lv))


def check_vae_elbo_values(ctx: CheckContext) -> None:
    cases = [("float32, binary x (B, 1, 8, 8)", "float32", False, True, False),
             ("float64, soft x in [0, 1], flattened (B, 64)", "float64", True, False, False),
             ("float32, posterior far from the prior (|mu| ~ 3, log_var in [-3, 2])", "float32", False, False, True)]
    for label, dtype, flat, binary, far in cases:
        with ctx.case(label):
            args = _elbo_inputs(ctx, dtype, flat, binary, far)
            got = tensor(ctx.call("vae_elbo", *args)["result"], "vae_elbo", dtype=dtype)
            rtol, atol = ctx.tolerance(dtype)

            def reference(patches, args=args):
                with ctx.patched(patches):
                    return ctx.ref.vae_elbo(*[to_torch(a, ctx.device) for a in args]).cpu().numpy()

            ctx.expect_close(got, reference({}), label, rtol, atol, diagnose=lambda p: distance(got, reference(p), rtol, atol))


def check_vae_elbo_extremes(ctx: CheckContext) -> None:
    x, probs, mu, lv = _elbo_inputs(ctx, "float32", False, True, False)
    probs = probs.copy()
    probs.flat[::3] = 0.0
    probs.flat[1::3] = 1.0
    got = tensor(ctx.call("vae_elbo", x, probs, mu, lv)["result"], "vae_elbo", dtype="float32")
    ok = got.shape == (B,) and bool(np.isfinite(got).all())
    ctx.expect(ok, "probabilities exactly 0 and 1 give a finite ELBO",
               f"shape {got.shape}, values {np.round(got, 2).tolist()[:5]} (clamp probs to [1e-6, 1 - 1e-6] before the logs)")


# ---- ConvVAE.elbo (composite) -----------------------------------------------------------------------

def _elbo_reference(ctx, state, x, eps):
    def reference(patches):
        with ctx.patched(patches), torch.no_grad():
            return _ref_vae(ctx, state).elbo(to_torch(x, ctx.device), to_torch(eps, ctx.device)).cpu().numpy()
    return reference


def check_conv_vae_elbo_value(ctx: CheckContext) -> None:
    state = _vae_state(ctx)
    obj = _student_vae(ctx, "elbo", state)
    x = _images(ctx)
    eps = _f(ctx.rng.standard_normal((B, L)), "float32")
    reference = _elbo_reference(ctx, state, x, eps)
    case = "per-example ELBO with the given noise eps"
    call = lambda: tensor(ctx.call(ctx.method(obj, "elbo", "ConvVAE.elbo"), x, eps)["result"],  # noqa: E731
                          "ConvVAE.elbo", dtype="float32")
    got = _student_result(ctx, "elbo", case, call, lambda v: v.shape, (B,))
    if got is None:
        return
    if got.shape != reference({}).shape and _not_isolated(ctx, "elbo", case, f"the result has shape {got.shape}",
                                                          lambda: call().shape == (B,)):
        return
    expect_any_variant(ctx, got, reference, case, rtol=1e-4, atol=1e-3)
    # without eps: fresh noise on every call
    draws = []
    for seed in (1, 2):
        v = tensor(ctx.call(ctx.method(obj, "elbo", "ConvVAE.elbo"), x, seed=seed)["result"], "ConvVAE.elbo")
        draws.append(v)
    ok = all(d.shape == (B,) and np.isfinite(d).all() for d in draws)
    if ctx.require(ok, "elbo(x) without eps: finite, one value per example",
                   f"shapes {[d.shape for d in draws]}, expected {(B,)}"):
        if ctx.expect(not np.allclose(draws[0], draws[1]), "elbo(x) without eps draws fresh noise",
                      "two calls with different seeds gave the same ELBO: z must be sampled, z = mu + exp(log_var/2)·eps"):
            _expect_standard_normal_noise(ctx, state, x)


NOISE_DRAWS = 200  # fresh-noise ELBOs per example in the distribution case (one call: the batch repeated)
NOISE_Z = 6.0  # |z| of a per-example mean difference beyond which the noise is not standard normal
NOISE_SPREAD = (0.75, 1.33)  # accepted ratio of the ELBO's spread over draws to the reference's


def _expect_standard_normal_noise(ctx: CheckContext, state, x) -> None:
    """elbo(x) without eps must draw eps ~ N(0, I): the mean of NOISE_DRAWS fresh-noise ELBOs of each example is
    compared with the reference's under standard-normal draws (two-sample z, per example). A uniform eps
    (`rand_like`) or a mis-scaled one shifts the mean; two different N(0, I) streams agree within |z| < 6.
    The weights are changed so that the ELBO depends strongly on the noise: a wide posterior (std ≈ 2.7)
    and a decoder whose output moves with z."""
    state = dict(state)
    state["fc_log_var.bias"] = state["fc_log_var.bias"] + np.float32(3.0)
    state["fc_dec.weight"] = state["fc_dec.weight"] * np.float32(8.0)
    obj = _student_vae(ctx, "noise", state)
    xs = np.repeat(x, NOISE_DRAWS, axis=0)  # example-major: rows b*N … b*N+N-1 are example b
    got = tensor(ctx.call(ctx.method(obj, "elbo", "ConvVAE.elbo"), xs, seed=3)["result"], "ConvVAE.elbo")
    if got.shape != (len(xs),):
        return  # the shape was judged above on the batch of B
    eps = _f(ctx.rng.standard_normal((len(xs), L)), "float32")
    ref = _elbo_reference(ctx, state, xs, eps)({})
    got, ref = got.reshape(-1, NOISE_DRAWS).astype(np.float64), ref.reshape(-1, NOISE_DRAWS).astype(np.float64)
    se = np.sqrt(got.var(axis=1) / NOISE_DRAWS + ref.var(axis=1) / NOISE_DRAWS) + 1e-12
    z = (got.mean(axis=1) - ref.mean(axis=1)) / se
    spread = got.std(axis=1).mean() / (ref.std(axis=1).mean() + 1e-12)
    worst = int(np.argmax(np.abs(z)))
    ok = bool(np.all(np.abs(z) < NOISE_Z)) and NOISE_SPREAD[0] < spread < NOISE_SPREAD[1]
    ctx.expect(ok, f"elbo(x) without eps: eps ~ N(0, I) ({NOISE_DRAWS} draws per example)",
               f"over {NOISE_DRAWS} fresh draws per example, your ELBO's spread is {spread:.2f}× the one with "
               f"standard-normal noise, and example {worst}'s mean is {got[worst].mean():.4f} against "
               f"{ref[worst].mean():.4f} ± {se[worst]:.4f} (z = {z[worst]:.1f}): draw eps with torch.randn_like, "
               "not rand_like or a rescaled normal")


def check_conv_vae_elbo_gradients(ctx: CheckContext) -> None:
    state = _vae_state(ctx)
    obj = _student_vae(ctx, "grad", state)
    x = _images(ctx)
    eps = _f(ctx.rng.standard_normal((B, L)), "float32")
    # the parameters the student's constructor built as specified; the others are the constructor's
    # mistake (conv_vae.architecture), their gradients are not judged here
    mine = ctx.sandbox.request({"op": "params", "name": "grad"}, timeout=ctx.call_timeout)
    order = [n for n in state if isinstance(mine.get(n), np.ndarray) and mine[n].shape == state[n].shape]
    skipped = [n for n in state if n not in order]
    if skipped:
        ctx.notes.append(f"gradients of {', '.join(skipped[:4])}{' …' if len(skipped) > 4 else ''} not judged: your "
                         "constructor does not build them under the specified names and shapes (charged once, on conv_vae.architecture).")

    def reference(patches):
        with ctx.patched(patches):
            m = _ref_vae(ctx, state)
            out = m.elbo(to_torch(x, ctx.device), to_torch(eps, ctx.device)).sum()
            named = dict(m.named_parameters())
            grads = torch.autograd.grad(out, [named[n] for n in order], allow_unused=True)
            return np.concatenate([(np.zeros(named[n].shape) if g is None else g.cpu().numpy()).ravel()
                                   for n, g in zip(order, grads)])

    case = "gradients of Σ elbo w.r.t. every parameter"
    reply = _student_result(ctx, "grad", case,
                            lambda: ctx.call(ctx.method(obj, "elbo", "ConvVAE.elbo"), x, eps, grad={"params": "grad"}),
                            lambda reply: tensor(reply["result"], "ConvVAE.elbo").shape, (B,))
    if reply is None:
        return
    tensor(reply["result"], "ConvVAE.elbo")
    grads = reply.get("grads") or {}
    have = [grads.get("param:" + n) for n in order]
    if not ctx.require(all(g is not None for g in have), "every parameter receives a gradient",
                       "no gradient for " + ", ".join(n for n, g in zip(order, have) if g is None)
                       + " (is the ELBO computed with torch operations end to end?)"):
        return
    got = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in have])
    expect_any_variant(ctx, got, reference, case, rtol=1e-3, atol=1e-3, diagnose=False)


# ---- PPCA ------------------------------------------------------------------------------------------

def _low_rank_data(ctx, N: int, D: int, rank: int, dtype: str) -> np.ndarray:
    Z = ctx.rng.standard_normal((N, rank))
    A = ctx.rng.standard_normal((rank, D)) * np.linspace(3, 1, rank)[:, None]
    X = Z @ A + 0.5 * ctx.rng.standard_normal((N, D)) + ctx.rng.uniform(-2, 2, D)
    return _f(X, dtype)


def _ppca_summary(W, mu, sigma2) -> np.ndarray:
    """Rotation-invariant summary of a PPCA fit: [mu, sigma2, W Wᵀ flattened]."""
    W = np.asarray(W, dtype=np.float64)
    return np.concatenate([np.asarray(mu, dtype=np.float64).ravel(), np.asarray(sigma2, dtype=np.float64).ravel(),
                           (W @ W.T).ravel()])


def check_ppca_fit(ctx: CheckContext) -> None:
    for N, D, q, dtype in ((150, 6, 2, "float64"), (200, 10, 3, "float64"), (300, 8, 2, "float32")):
        X = _low_rank_data(ctx, N, D, q + 1, dtype)
        label = f"{dtype} X {N}×{D}, q={q}"
        with ctx.case(label):
            W, mu, s2 = (tensor(v, "fit_ppca", dtype=dtype) for v in sequence(ctx.call("fit_ppca", X, q)["result"], "fit_ppca", 3))
            if not ctx.require(W.shape == (D, q) and mu.shape == (D,) and s2.size == 1, f"{label}: shapes",
                               f"W {W.shape}, mu {mu.shape}, sigma2 {s2.shape}; expected {(D, q)}, {(D,)} and a scalar"):
                continue

            def reference(patches, X=X, q=q):
                with ctx.patched(patches):
                    w, m, s = ctx.ref.fit_ppca(to_torch(X, ctx.device), q)
                return w.cpu().numpy(), m.cpu().numpy(), s.cpu().numpy()

            rtol, atol = ctx.tolerance(dtype)
            w_ref, mu_ref, s2_ref = reference({})
            got = _ppca_summary(W, mu, s2)
            matches = lambda p, got=got, reference=reference, rtol=rtol, atol=atol: close(got, _ppca_summary(*reference(p)), rtol, atol)
            since = len(ctx.cases)  # the three cases below: the summary the diagnosis compares
            ok = [ctx.expect_close(mu, mu_ref, f"{label}: mu", rtol, atol),
                  ctx.expect_close(s2.reshape(()), s2_ref.reshape(()), f"{label}: sigma2", rtol, atol),
                  ctx.expect_close(W @ W.T, w_ref @ w_ref.T, f"{label}: W Wᵀ (W itself is defined up to a rotation)", rtol, atol)]
            if not all(ok):
                ctx.attribute(ctx.diagnose(matches), since)


def _ppca_params(ctx, D: int, q: int, dtype: str):
    W = ctx.rng.standard_normal((D, q)) * 1.5
    mu = ctx.rng.uniform(-1, 1, D)
    return _f(W, dtype), _f(mu, dtype), _f(ctx.rng.uniform(0.2, 0.6), dtype)


def _fn_check(ctx: CheckContext, name: str, cases, variants: bool = False) -> None:
    """Call `name` on each (label, args, rtol, atol) and compare with the reference function."""
    for label, args, rtol, atol in cases:
        with ctx.case(label):
            dtype = args[0].dtype.name
            got = tensor(ctx.call(name, *args)["result"], name, dtype=dtype)

            def reference(patches, args=args):
                with ctx.patched(patches):
                    return getattr(ctx.ref, name)(*[to_torch(a, ctx.device) for a in args]).cpu().numpy()

            if variants:
                expect_any_variant(ctx, got, reference, label, rtol, atol)
            else:
                ctx.expect_close(got, reference({}), label, rtol, atol, diagnose=lambda p: distance(got, reference(p), rtol, atol))


def check_ppca_log_likelihood(ctx: CheckContext) -> None:
    cases = []
    for N, D, q, dtype in ((7, 6, 2, "float64"), (9, 64, 5, "float64"), (6, 16, 3, "float32")):
        W, mu, s2 = _ppca_params(ctx, D, q, dtype)
        X = _f(mu + ctx.rng.standard_normal((N, D)) * 1.2, dtype)
        cases.append((f"{dtype}: N={N}, D={D}, q={q}", (X, W, mu, s2), *ctx.tolerance(dtype)))
    _fn_check(ctx, "ppca_log_likelihood", cases)


def _posterior_cases(ctx):
    cases = []
    for N, D, q, dtype in ((6, 5, 2, "float64"), (8, 12, 3, "float32")):
        W, mu, s2 = _ppca_params(ctx, D, q, dtype)
        X = _f(mu + ctx.rng.standard_normal((N, D)), dtype)
        cases.append((f"{dtype}: N={N}, D={D}, q={q}", (X, W, mu, s2), *ctx.tolerance(dtype)))
    return cases


def check_ppca_posterior_mean(ctx: CheckContext) -> None:
    _fn_check(ctx, "ppca_posterior_mean", _posterior_cases(ctx))


def check_ppca_reconstruct(ctx: CheckContext) -> None:
    _fn_check(ctx, "ppca_reconstruct", _posterior_cases(ctx))


# ---- GMM -------------------------------------------------------------------------------------------

def _spd(ctx, K: int, D: int, scale: float = 1.0) -> np.ndarray:
    A = ctx.rng.standard_normal((K, D, D)) * 0.5
    return scale * (A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D))


def _gmm_params(ctx, K: int, D: int, dtype: str, spread: float = 3.0):
    w = ctx.rng.uniform(0.2, 1.0, K)
    w = w / w.sum()
    means = ctx.rng.standard_normal((K, D)) * spread
    return _f(w, dtype), _f(means, dtype), _f(_spd(ctx, K, D), dtype)


def check_gmm_log_likelihood_values(ctx: CheckContext) -> None:
    cases = []
    for N, K, D, dtype in ((8, 3, 2, "float64"), (10, 4, 5, "float64"), (6, 3, 3, "float32")):
        w, means, covs = _gmm_params(ctx, K, D, dtype)
        X = _f(means[ctx.rng.integers(0, K, N)] + ctx.rng.standard_normal((N, D)), dtype)
        cases.append((f"{dtype}: N={N}, K={K}, D={D}, unequal weights", (X, w, means, covs), *ctx.tolerance(dtype)))
    _fn_check(ctx, "gmm_log_likelihood", cases)


def check_gmm_log_likelihood_far(ctx: CheckContext) -> None:
    w, means, covs = _gmm_params(ctx, 3, 4, "float64", spread=1.0)
    X = _f(ctx.rng.standard_normal((6, 4)) * 60.0, "float64")
    _fn_check(ctx, "gmm_log_likelihood", [("points far from every mode (log-densities below -1000)",
                                           (X, w, means, covs), *ctx.tolerance("float64"))])


def _em_data(ctx, N: int, K: int, D: int):
    w, means, covs = _gmm_params(ctx, K, D, "float64", spread=2.5)
    X = means[ctx.rng.integers(0, K, N)] + ctx.rng.standard_normal((N, D)) * 0.8
    init_means = means + ctx.rng.standard_normal((K, D)) * 0.7
    init_covs = np.stack([np.eye(D) * 1.5] * K)
    init_w = np.linspace(1.0, 2.0, K) / np.linspace(1.0, 2.0, K).sum()
    return X, init_w, init_means, init_covs


def check_gmm_em_step(ctx: CheckContext) -> None:
    for N, K, D, kwargs in ((120, 3, 2, {}), (200, 4, 3, {"reg": 1e-3})):
        X, w, means, covs = _em_data(ctx, N, K, D)
        label = f"N={N}, K={K}, D={D}" + (f", reg={kwargs['reg']}" if kwargs else "")
        if interface.skip_unsupported(ctx, "gmm_em_step", kwargs, label):
            continue
        with ctx.case(label):
            reply = ctx.call("gmm_em_step", X, w, means, covs, **kwargs)
            nw, nm, nc = (tensor(v, "gmm_em_step", dtype="float64") for v in sequence(reply["result"], "gmm_em_step", 3))
            if not ctx.require(nw.shape == (K,) and nm.shape == (K, D) and nc.shape == (K, D, D), f"{label}: shapes",
                               f"weights {nw.shape}, means {nm.shape}, covs {nc.shape}; expected {(K,)}, {(K, D)}, {(K, D, D)}"):
                continue
            got = np.concatenate([nw.ravel(), nm.ravel(), nc.ravel()])

            def reference(patches, X=X, w=w, means=means, covs=covs, kwargs=kwargs):
                with ctx.patched(patches):
                    out = ctx.ref.gmm_em_step(*[to_torch(a, ctx.device) for a in (X, w, means, covs)], **kwargs)
                return np.concatenate([o.cpu().numpy().ravel() for o in out])

            expect_any_variant(ctx, got, reference, f"{label}: new (weights, means, covs)", *ctx.tolerance("float64"))


# ---- examples for the declared properties (grader/checks/properties.py; rubric [properties]) ----------------

def _example_encode(ctx, v):
    state = _vae_state(ctx)
    obj = _student_vae(ctx, "enc", state)
    ref = _ref_vae(ctx, state)
    return properties.Example(ctx.method(obj, "encode", "ConvVAE.encode"), {"x": _images(ctx, v.batch)},
                              lambda t: ref.encode(t["x"]), params="enc", ref_object=ref, batched=("x",))


def _example_decode(ctx, v):
    state = _vae_state(ctx)
    obj = _student_vae(ctx, "dec", state)
    ref = _ref_vae(ctx, state)
    z = _f(ctx.rng.standard_normal((v.batch, L)) * 1.5, "float32")
    return properties.Example(ctx.method(obj, "decode", "ConvVAE.decode"), {"z": z}, lambda t: ref.decode(t["z"]),
                              params="dec", ref_object=ref, batched=("z",))


def _example_conv_elbo(ctx, v):
    state = _vae_state(ctx)
    obj = _student_vae(ctx, "vae", state)
    ref = _ref_vae(ctx, state)
    eps = _f(ctx.rng.standard_normal((v.batch, L)), "float32")
    return properties.Example(ctx.method(obj, "elbo", "ConvVAE.elbo"), {"x": _images(ctx, v.batch), "eps": eps},
                              lambda t: ref.elbo(t["x"], t["eps"]), params="vae", ref_object=ref, batched=("x", "eps"))


def _example_vae_elbo(ctx, v):
    side = 28 if v.extreme else 6 if v.wide else S
    x = _f(ctx.rng.uniform(size=(v.batch, 1, side, side)) > 0.5, v.dtype)
    probs = ctx.rng.uniform(0.02, 0.98, size=(v.batch, 1, side, side))
    lat = 3 if v.wide else L
    mu, lv = ctx.rng.standard_normal((v.batch, lat)), ctx.rng.uniform(-1, 1, (v.batch, lat))
    if v.extreme:  # probabilities at the clamp, tiny and huge variances, 784 pixels
        probs.reshape(v.batch, -1)[:, ::3] = 0.0
        probs.reshape(v.batch, -1)[:, 1::3] = 1.0
        lv = np.resize(np.linspace(-15, 15, 7), (v.batch, lat))
    return properties.Example("vae_elbo", {"x": x, "probs": _f(probs, v.dtype), "mu": _f(mu, v.dtype), "log_var": _f(lv, v.dtype)},
                              lambda t: ctx.ref.vae_elbo(t["x"], t["probs"], t["mu"], t["log_var"]),
                              batched=("x", "probs", "mu", "log_var"))


def _example_ppca_fit(ctx, v):
    return properties.Example("fit_ppca", {"X": _low_rank_data(ctx, 60, 6, 3, v.dtype), "q": 2},
                              lambda t: ctx.ref.fit_ppca(t["X"], t["q"]))


def _ppca_example(ctx, v, name: str):
    D, q = (64, 5) if v.extreme else (7, 3) if v.wide else (5, 2)
    W, mu, s2 = _ppca_params(ctx, D, q, v.dtype)
    if v.extreme:  # a tiny noise variance
        s2 = _f(1e-4, v.dtype)
    X = _f(mu + ctx.rng.standard_normal((v.batch, D)), v.dtype)
    return properties.Example(name, {"X": X, "W": W, "mu": mu, "sigma2": s2},
                              lambda t: getattr(ctx.ref, name)(t["X"], t["W"], t["mu"], t["sigma2"]), batched=("X",))


def _example_gmm_log_likelihood(ctx, v):
    K, D = (4, 64) if v.extreme else (3, 5) if v.wide else (3, 2)
    w, means, covs = _gmm_params(ctx, K, D, v.dtype)
    X = _f(means[ctx.rng.integers(0, K, v.batch)] + ctx.rng.standard_normal((v.batch, D)), v.dtype)
    return properties.Example("gmm_log_likelihood", {"X": X, "weights": w, "means": means, "covs": covs},
                              lambda t: ctx.ref.gmm_log_likelihood(t["X"], t["weights"], t["means"], t["covs"]),
                              batched=("X",))


def _example_em_step(ctx, v):
    N, K, D = (200, 3, 64) if v.extreme else (60, 3, 2)
    X, w, means, covs = _em_data(ctx, N, K, D)
    args = {"X": X, "weights": w, "means": means, "covs": covs}
    return properties.Example("gmm_em_step", {n: _f(a, v.dtype) for n, a in args.items()},
                              lambda t: ctx.ref.gmm_em_step(t["X"], t["weights"], t["means"], t["covs"]),
                              label="float data in 64 dimensions" if v.extreme else "")


EXAMPLES = {
    "conv_vae.encode": _example_encode, "conv_vae.decode": _example_decode, "conv_vae.elbo": _example_conv_elbo,
    "vae_elbo": _example_vae_elbo, "ppca.fit": _example_ppca_fit,
    "ppca.log_likelihood": lambda ctx, v: _ppca_example(ctx, v, "ppca_log_likelihood"),
    "ppca.posterior": lambda ctx, v: _ppca_example(ctx, v, "ppca_posterior_mean"),
    "gmm.log_likelihood": _example_gmm_log_likelihood, "gmm.em_step": _example_em_step,
}
