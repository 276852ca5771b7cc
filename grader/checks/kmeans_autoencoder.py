"""Checks of the `kmeans-autoencoder` assignment (rubric: rubrics/kmeans-autoencoder.toml,
reference: reference/kmeans_autoencoder.py, mutants: reference/kmeans_autoencoder_mistakes.py).

Unit checks: one `check_<name>(ctx)` per rubric entry with its own deterministic inputs, the
student's code run in the sandbox, the reference run here on the same inputs; known mistakes are
named through `ctx.diagnose`. Checks that use several of the student's functions together accept
the reference with mistakes already charged elsewhere (`expect_any_variant`).

The model half (component "model": k-means and the autoencoder trained by the course's loops on digits) is
grader/checks/kmeans_autoencoder_model.py, on the shared framework (grader/checks/model_level.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from grader.checks import interface, properties
from grader.checks import CheckContext, distance, close, expect_any_variant, mistake_cause, tensor, to_torch
from grader.checks.kmeans_autoencoder_model import (  # noqa: F401  (the model half: its checks, metrics, preflight)
    METRICS, check_model_autoencoder, check_model_kmeans, preflight,
)

LATENT, CHANNELS = 6, (4, 8)  # a small autoencoder for the unit checks


def _f(a, dtype: str = "float32") -> np.ndarray:
    return np.asarray(a, dtype=dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _points(ctx, n: int, d: int, dtype: str, scale: float = 1.0) -> np.ndarray:
    return _f(ctx.rng.uniform(0, 1, (n, d)) * scale, dtype)


# ---- k-means ---------------------------------------------------------------------------------------

def check_squared_distances(ctx: CheckContext) -> None:
    for label, n, k, d, dtype in [("float32, 6 points, 4 centres in 3-D", 6, 4, 3, "float32"),
                                  ("float64, 9 points, 3 centres in 64-D", 9, 3, 64, "float64"),
                                  ("float32, one point, one centre", 1, 1, 5, "float32")]:
        with ctx.case(label):
            x, c = _points(ctx, n, d, dtype), _points(ctx, k, d, dtype)
            got = tensor(ctx.call("squared_distances", x, c)["result"], "squared_distances", dtype=dtype)

            def reference(p, x=x, c=c):
                with ctx.patched(p):
                    return _np(ctx.ref.squared_distances(to_torch(x, ctx.device), to_torch(c, ctx.device)))

            ctx.expect_close(got, reference({}), f"{label}: (N, K) squared distances",
                             diagnose=lambda p, g=got, r=reference: distance(g, r(p), ctx.spec.rtol, ctx.spec.atol))


def _separated(ctx, n: int, k: int, d: int, dtype: str):
    """Points around k well-separated centres (no near-ties), shuffled."""
    c = _f(ctx.rng.uniform(0, 1, (k, d)) + np.arange(k)[:, None] * 0.7, dtype)
    lab = ctx.rng.integers(0, k, n)
    x = _f(c[lab] + ctx.rng.normal(0, 0.1, (n, d)), dtype)
    return x, c


def check_assign(ctx: CheckContext) -> None:
    for label, n, k, d, dtype in [("float32, 20 points, 5 centres", 20, 5, 3, "float32"),
                                  ("float64, 30 points, 10 centres in 64-D", 30, 10, 64, "float64")]:
        with ctx.case(label):
            x, c = _separated(ctx, n, k, d, dtype)
            res = ctx.call("assign", x, c)["result"]
            got = tensor(res, "assign")
            if not ctx.require(np.issubdtype(got.dtype, np.integer), f"{label}: integer indices",
                               f"assign returned a {res['dtype']} tensor: return indices (int64), e.g. with argmin"):
                continue

            def reference(p, x=x, c=c):
                with ctx.patched(p):
                    return _np(ctx.ref.assign(to_torch(x, ctx.device), to_torch(c, ctx.device)))

            expect_any_variant(ctx, got, reference, f"{label}: index of the nearest centre", 0, 0)
    _assign_ties(ctx)


def _assign_ties(ctx: CheckContext) -> None:
    """Exact ties (points on integer coordinates halfway between two centres): any of the nearest
    centres is correct, as the assignment does not fix how ties are broken."""
    c = _f([[0, 0], [2, 0], [0, 2], [2, 2]], "float64")
    x = _f([[1, 0], [0, 1], [1, 1], [2, 1], [3, 3], [0, 0]], "float64")
    got = tensor(ctx.call("assign", x, c)["result"], "assign")
    d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    nearest = d == d.min(1, keepdims=True)
    ok = got.shape == (len(x),) and all(0 <= int(g) < len(c) and nearest[i, int(g)] for i, g in enumerate(got.reshape(-1)))
    ctx.expect(ok, "float64, points exactly halfway between 2 or 4 centres: one of the nearest",
               f"got {got.tolist()}; nearest centres per point: {[np.flatnonzero(r).tolist() for r in nearest]}")


def _scalar(ctx, res, what: str, case: str) -> float | None:
    v = tensor(res, what)
    if not ctx.require(v.size == 1, case, f"shape {v.shape}, expected a scalar (0-dim tensor)"):
        return None
    return v.reshape(())


def check_kmeans_loss(ctx: CheckContext) -> None:
    for label, n, k, d, dtype in [("float32, 20 points, 4 centres", 20, 4, 3, "float32"),
                                  ("float64, 50 points, 10 centres in 64-D", 50, 10, 64, "float64"),
                                  ("float32, 7 points, 1 centre", 7, 1, 5, "float32")]:
        with ctx.case(label):
            x, c = _points(ctx, n, d, dtype), _points(ctx, k, d, dtype)
            got = _scalar(ctx, ctx.call("kmeans_loss", x, c)["result"], "kmeans_loss", label)
            if got is None:
                continue

            def reference(p, x=x, c=c):
                with ctx.patched(p):
                    return _np(ctx.ref.kmeans_loss(to_torch(x, ctx.device), to_torch(c, ctx.device))).reshape(())

            expect_any_variant(ctx, got, reference, f"{label}: mean squared distance to the nearest centre")


def _update_case(ctx, label, centres, x, lr, dtype):
    """Judge the new position of every centre that gets a point of the batch (the others are
    judged by the empty-centre check, so a mistake there is charged once)."""
    with ctx.case(label):
        centres, x = _f(centres, dtype), _f(x, dtype)
        got = tensor(ctx.call("minibatch_update", centres, x, lr)["result"], "minibatch_update", dtype=dtype)
        used = np.unique(_np(ctx.ref.assign(to_torch(x, ctx.device), to_torch(centres, ctx.device))))
        if not ctx.require(got.shape == centres.shape, f"{label}: shape", f"shape {got.shape}, expected {centres.shape}"):
            return
        got = got[used]

        def reference(p):
            with ctx.patched(p):
                return _np(ctx.ref.minibatch_update(to_torch(centres, ctx.device), to_torch(x, ctx.device), lr))[used]

        expect_any_variant(ctx, got, reference, label)


def _overlapping(ctx, n: int, k: int, d: int, dtype: str, clusters: int):
    """`clusters` blobs that overlap, and k centres drawn from the points: boundaries run through
    dense data, so points change centre when any centre moves (an update that re-assigns after
    each centre's move, instead of assigning the whole batch once, gives other centres)."""
    mids = ctx.rng.uniform(0, 1, (clusters, d))
    x = mids[ctx.rng.integers(0, clusters, n)] + ctx.rng.normal(0, 0.35, (n, d))
    c = x[ctx.rng.choice(n, k, replace=False)] + ctx.rng.normal(0, 0.05, (k, d))
    return _f(x, dtype), _f(c, dtype)


def check_minibatch_update(ctx: CheckContext) -> None:
    for label, n, k, d, dtype, lr in [("float32, 5 centres, batch of 20, lr 0.3", 20, 5, 3, "float32", 0.3),
                                      ("float64, 10 centres, batch of 64 in 64-D, lr 0.05", 64, 10, 64, "float64", 0.05),
                                      ("float32, 3 centres, batch of 12, lr 1 (a Lloyd step)", 12, 3, 4, "float32", 1.0)]:
        x, c = _separated(ctx, n, k, d, dtype)
        x = np.concatenate([c, x])  # every centre gets at least its own point
        c = c + _f(ctx.rng.normal(0, 0.05, c.shape), dtype)
        _update_case(ctx, label, c, x, lr, dtype)
    for label, n, k, clusters, dtype, lr in [
            ("float64, 4 centres on 2 overlapping blobs (K > clusters), batch of 40, lr 1", 40, 4, 2, "float64", 1.0),
            ("float32, 6 centres on 3 overlapping blobs, batch of 60, lr 0.7", 60, 6, 3, "float32", 0.7)]:
        x, c = _overlapping(ctx, n, k, 2, dtype, clusters)
        _update_case(ctx, label + ": every point assigned once, before any centre moves", c, x, lr, dtype)
    c = _points(ctx, 4, 3, "float32")
    _update_case(ctx, "float32, batch of one point, lr 0.5", c, _points(ctx, 1, 3, "float32"), 0.5, "float32")


def _empty_case(ctx, label, centres, x, lr, dtype, empty: list[int]) -> None:
    """Only the centres that get no point are judged here: unchanged and finite (the others are
    judged by check_minibatch_update, so a mistake there is not charged twice)."""
    with ctx.case(label):
        centres, x = _f(centres, dtype), _f(x, dtype)
        got = tensor(ctx.call("minibatch_update", centres, x, lr)["result"], "minibatch_update", dtype=dtype)
        if not ctx.require(got.shape == centres.shape, f"{label}: shape", f"shape {got.shape}, expected {centres.shape}"):
            return

        def reference(p):
            with ctx.patched(p):
                return _np(ctx.ref.minibatch_update(to_torch(centres, ctx.device), to_torch(x, ctx.device), lr))

        def empties(p) -> list[int]:
            """The centres that get no point, by the (possibly patched) reference's assign."""
            with ctx.patched(p):
                a = set(_np(ctx.ref.assign(to_torch(x, ctx.device), to_torch(centres, ctx.device))).tolist())
            return [j for j in range(len(centres)) if j not in a]

        for variant, patches in ctx.reference_variants():
            e = empties(patches) if variant else empty
            if e and close(got[e], centres[e], 0, 0):
                if variant:
                    ctx.notes.append(f"Judged with your other mistakes ({variant}) taken into account: no extra points lost here.")
                ctx.expect(True, label)
                return
        ctx.expect_close(got[empty], centres[empty], label, 0, 0,
                         diagnose=lambda p: close(got[empty], reference(p)[empty], 0, 0) and not close(
                             reference(p)[empty], centres[empty], 0, 0))


def check_minibatch_update_empty(ctx: CheckContext) -> None:
    x, c = _separated(ctx, 16, 3, 4, "float32")
    x = np.concatenate([c, x])
    _empty_case(ctx, "a centre far from every point (no point assigned) does not move",
                np.concatenate([c, np.full((1, 4), 50.0)]), x, 0.5, "float32", [3])
    _empty_case(ctx, "float64: two of four centres get no point, lr 0.2",
                np.concatenate([c[:2], [[40.0] * 4, [-40.0] * 4]]), x, 0.2, "float64", [2, 3])


def _digits_like(ctx, n: int = 60, d: int = 16):
    """Fake data: 10 classes, 6 images each, distinct rows (so a row identifies its image)."""
    y = np.repeat(np.arange(10), n // 10)
    ctx.rng.shuffle(y)
    x = _f(ctx.rng.uniform(0, 1, (n, d)), "float32")
    return x, y.astype("int64")


def _per_digit_signature(out: np.ndarray, x: np.ndarray, y: np.ndarray, k: int) -> tuple:
    """(shape ok, all rows are data rows, every row j is an image of digit j)."""
    if out.shape != (k, x.shape[1]):
        return (False, False, False)
    match = [np.nonzero(np.all(np.isclose(x, row, rtol=0, atol=1e-6), axis=1))[0] for row in out]
    rows = all(len(m) for m in match)
    labels = rows and all(y[m[0]] == j for j, m in enumerate(match))
    return (True, bool(rows), bool(labels))


DIAGNOSIS_SEEDS = 30  # the student's draws behind a diagnosis of init_centres: 300 centres
REFERENCE_SEEDS = 100  # a candidate's own-digit rate is estimated from this many draws of the patched reference


def _own_digit_count(out: np.ndarray, x: np.ndarray, y: np.ndarray) -> int | None:
    """How many centres j are an image of digit j; None when some centre is not an image of x."""
    count = 0
    for j, row in enumerate(out):
        match = np.nonzero(np.all(np.isclose(x, row, rtol=0, atol=1e-6), axis=1))[0]
        if not len(match):
            return None
        count += int(y[match[0]] == j)
    return count


def _own_digit_counts(ctx: CheckContext, x, y, k: int, seeds: tuple) -> tuple[int, int] | None:
    """(centres of their own digit, centres drawn) over the student's draws for seeds 0..DIAGNOSIS_SEEDS-1 (only
    seed 0 when `seed` is not supported); None when some draw has another shape or a centre that is no image."""
    total = own = 0
    for s in (range(DIAGNOSIS_SEEDS) if len(seeds) > 2 else (0,)):
        out = tensor(ctx.call("init_centres", x, y, k, "per_digit", s)["result"], "init_centres", dtype="float32")
        c = _own_digit_count(out, x, y) if out.shape == (k, x.shape[1]) else None
        if c is None:
            return None
        own, total = own + c, total + k
    return own, total


def _reference_own_digit_counts(ctx: CheckContext, patches: dict, x, y, k: int) -> tuple[int, int] | None:
    """_own_digit_counts of the reference with `patches`, over REFERENCE_SEEDS seeds."""
    total = own = 0
    for s in range(REFERENCE_SEEDS):
        with ctx.patched(patches):
            out = _np(ctx.ref.init_centres(to_torch(x, ctx.device), to_torch(y, ctx.device), k=k, how="per_digit",
                                           seed=s))
        c = _own_digit_count(out, x, y) if out.shape == (k, x.shape[1]) else None
        if c is None:
            return None
        own, total = own + c, total + k
    return own, total


def _own_digit_distance(student: tuple[int, int], candidate: tuple[int, int] | None) -> float:
    """Distance, in tolerances of 3 binomial standard errors (+1 centre), between the student's count of centres of
    their own digit and a candidate's rate; infinite when the candidate draws centres that are no images, or when
    exactly one of the two never draws a centre of its own digit (labels ignored picks one in ten: never over
    300 centres has probability 0.9^300; `y != j` never does, and was named labels-ignored on the coarse
    signature alone: held-out bench, seed 16743)."""
    if candidate is None:
        return math.inf
    (own, n), (c_own, c_n) = student, candidate
    if (own == 0) != (c_own == 0):
        return math.inf
    p = c_own / c_n
    return abs(own - n * p) / (3.0 * math.sqrt(n * p * (1.0 - p)) + 1.0)


def check_init_centres_per_digit(ctx: CheckContext) -> None:
    x, y = _digits_like(ctx)
    k = 10
    seeds = (0, 0) if interface.skip_unsupported(ctx, "init_centres", {"seed": 1}, "other seeds") else (0, 0, 1, 2, 3)
    got = [tensor(ctx.call("init_centres", x, y, k, "per_digit", s)["result"], "init_centres", dtype="float32")
           for s in seeds]
    sig = _per_digit_signature(got[0], x, y, k)
    if not ctx.require(sig[0], "shape (k, D)", f"shape {got[0].shape}, expected {(k, x.shape[1])}"):
        return

    def mutant_signature(p) -> bool:
        with ctx.patched(p):
            out = _np(ctx.ref.init_centres(to_torch(x, ctx.device), to_torch(y, ctx.device), k=k, how="per_digit", seed=0))
        return _per_digit_signature(out, x, y, k) == sig

    ok = ctx.expect(sig[1], "every centre is a copy of one of the images",
                    "some centres are not images of x: 'per_digit' copies one image of each digit")
    named = None
    if ok and not sig[2]:
        own = _own_digit_counts(ctx, x, y, k, seeds)
        named = ctx.diagnose(mutant_signature if own is None else
                             lambda p: _own_digit_distance(own, _reference_own_digit_counts(ctx, p, x, y, k)))
    ctx.expect(sig[2], "centre j is an image of digit j (j = 0..9)",
               "centre j must be an image whose label is j", cause=mistake_cause(named))
    ctx.expect(np.array_equal(got[0], got[1]), "the same seed gives the same centres",
               "two calls with seed=0 gave different centres: draw from a torch.Generator seeded with `seed`")
    if len(got) > 2:
        ctx.expect(any(not np.array_equal(got[0], g) for g in got[2:]), "the images are picked at random (the seed matters)",
                   "seeds 0, 1, 2 and 3 all gave the same centres: pick a random image of each digit")


def check_init_centres_random(ctx: CheckContext) -> None:
    for dtype in ("float32", "float64"):
        with ctx.case(dtype):
            x, y = _digits_like(ctx)
            x = _f(x, dtype)
            k = 7
            got = [tensor(ctx.call("init_centres", x, y, k, "random", s)["result"], "init_centres(how='random')",
                          dtype=dtype) for s in (5, 5, 6)]
            if not ctx.require(got[0].shape == (k, x.shape[1]), f"{dtype}: shape (k, D)",
                               f"shape {got[0].shape}, expected {(k, x.shape[1])}"):
                continue
            a = got[0]
            ctx.expect(bool(np.isfinite(a).all() and a.min() >= 0 and a.max() < 1 and np.unique(a).size > a.size // 2),
                       f"{dtype}: random pixels uniform in [0, 1)",
                       f"values from {a.min():.3g} to {a.max():.3g} with {np.unique(a).size} distinct: draw each pixel "
                       "uniformly in [0, 1) (torch.rand)")
            ctx.expect(np.array_equal(got[0], got[1]) and not np.array_equal(got[0], got[2]),
                       f"{dtype}: the same seed gives the same centres, another seed others",
                       "use a torch.Generator seeded with `seed`")


def check_confusion(ctx: CheckContext) -> None:
    # (the last case: no point in the last cluster and none of the last class, so the last cell is empty; a
    # bincount without minlength is then too short, and only this case showed it: held-out bench, seed 219385)
    for label, n, k, c, empty in [("k = 4 clusters, 3 classes", 40, 4, 3, 0),
                                  ("k = 10 clusters, 10 classes", 200, 10, 10, 0),
                                  ("k = 5 clusters, 4 classes; the last cluster and the last class empty", 30, 5, 4, 1)]:
        with ctx.case(label):
            a = ctx.rng.integers(0, k - empty, n).astype("int64")
            y = ctx.rng.integers(0, c - empty, n).astype("int64")
            res = ctx.call("confusion", a, y, k, c)["result"]
            got = tensor(res, "confusion")

            def reference(p, a=a, y=y, k=k, c=c):
                with ctx.patched(p):
                    return _np(ctx.ref.confusion(to_torch(a, ctx.device), to_torch(y, ctx.device), k, c))

            ctx.expect_close(got, reference({}), f"{label}: counts M[label, cluster], shape (n_classes, k)", 0, 0,
                             diagnose=lambda p, g=got, r=reference: distance(g, r(p), 0, 0))


# ---- autoencoder -------------------------------------------------------------------------------------

def _dedupe(shapes: list) -> list:
    """Stage shapes without repeats (activations keep the shape, so their place does not matter)."""
    out = []
    for s in shapes:
        if not out or list(s) != list(out[-1]):
            out.append(list(s))
    return out


def _ref_stage_shapes(ctx, patches, x, z):
    from grader.harnesses import kmeans_autoencoder as harness

    with ctx.patched(patches):
        r = harness.stage_shapes(ctx.ref, ctx.device, to_torch(x, ctx.device), to_torch(z, ctx.device), LATENT, CHANNELS)
    return {k: _dedupe(v) for k, v in r.items()}


def _fmt(shapes) -> str:
    return " → ".join("(" + ", ".join(str(d) for d in s) + ")" for s in shapes)


def check_autoencoder_io(ctx: CheckContext) -> None:
    """Shapes and ranges of encode, decode and forward (no reference needed: the sketch fixes them)."""
    ae = ctx.new("ae", "ConvAutoencoder", LATENT, list(CHANNELS))
    x = _f(ctx.rng.uniform(0, 1, (3, 1, 8, 8)))
    z = _f(ctx.rng.normal(0, 1, (5, LATENT)))
    for method, arg, shape in (("encode", x, (3, LATENT)), ("decode", z, (5, 1, 8, 8)), ("forward", x, (3, 1, 8, 8))):
        out = tensor(ctx.call(ctx.method(ae, method, f"ConvAutoencoder.{method}"), arg)["result"],
                     f"ConvAutoencoder.{method}", dtype="float32")
        ok = ctx.expect(out.shape == shape, f"{method}: shape {shape} (latent_dim={LATENT}, channels={CHANNELS})",
                        f"shape {out.shape}, expected {shape}")
        if not ok and method == "decode":
            ctx.attribute(ctx.diagnose(lambda p, got=out.shape: _ref_decode_shape(ctx, p, z) == got), -1)
        if ok and method != "encode":
            inside = bool(np.isfinite(out).all() and out.min() > 0 and out.max() < 1)
            if not ctx.expect(inside, f"{method}: pixel values in (0, 1)",
                              f"values from {out.min():.3g} to {out.max():.3g}: end the decoder with a sigmoid"):
                ctx.attribute(ctx.diagnose(lambda p: not _ref_decode_in_unit_interval(ctx, p, z)), -1)


def _ref_decode(ctx, patches, z):
    with ctx.patched(patches), torch.no_grad():
        torch.manual_seed(0)
        return _np(ctx.ref.ConvAutoencoder(LATENT, CHANNELS).to(ctx.device).decode(to_torch(z, ctx.device)))


def _ref_decode_shape(ctx, patches, z) -> tuple:
    return _ref_decode(ctx, patches, z).shape


def _ref_decode_in_unit_interval(ctx, patches, z) -> bool:
    out = _ref_decode(ctx, patches, z)
    return bool(out.min() > 0 and out.max() < 1)


def check_autoencoder_shapes(ctx: CheckContext) -> None:
    """The output shape of every stage of encoder and decoder, against the sketch."""
    x = _f(ctx.rng.uniform(0, 1, (3, 1, 8, 8)))
    z = _f(ctx.rng.normal(0, 1, (5, LATENT)))
    got = ctx.harness("kmeans_autoencoder.stage_shapes", timeout=ctx.call_timeout, x=x, z=z, latent_dim=LATENT,
                      channels=list(CHANNELS))
    got = {k: _dedupe(v) for k, v in got.items()}
    want = _ref_stage_shapes(ctx, {}, x, z)
    for part, inp in (("encoder", "x (3, 1, 8, 8)"), ("decoder", f"z (5, {LATENT})")):
        ok = ctx.expect(got[part] == want[part], f"{part} stages on {inp}",
                        f"your stages: {_fmt(got[part])}; expected {_fmt(want[part])} (channels={CHANNELS}, "
                        f"latent_dim={LATENT})")
        if not ok:
            ctx.attribute(ctx.diagnose(lambda p, part=part: _ref_stage_shapes(ctx, p, x, z)[part] == got[part]), -1)


def _ae_weights(ctx) -> np.ndarray:
    torch.manual_seed(ctx.seed % 2**31)
    model = ctx.ref.ConvAutoencoder(latent_dim=LATENT, channels=CHANNELS)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().astype("float32")


def _ref_outputs(ctx, patches, flat, x, z, n_generate=0, seed=0) -> dict:
    from grader.harnesses import kmeans_autoencoder as harness

    with ctx.patched(patches):
        return harness.run_with_params(ctx.ref, ctx.device, to_torch(flat, ctx.device), to_torch(x, ctx.device),
                                       to_torch(z, ctx.device), LATENT, CHANNELS, n_generate, seed)


def check_autoencoder_outputs(ctx: CheckContext) -> None:
    """encode, decode and forward with given weights (loaded in the parameter order of the sketch)."""
    flat = _ae_weights(ctx)
    x = _f(ctx.rng.uniform(0, 1, (4, 1, 8, 8)))
    z = _f(ctx.rng.normal(0, 2, (3, LATENT)))
    got = ctx.harness("kmeans_autoencoder.run_with_params", timeout=ctx.call_timeout, flat=flat, x=x, z=z,
                      latent_dim=LATENT, channels=list(CHANNELS))
    want = _ref_outputs(ctx, {}, flat, x, z)
    for key, case in (("encode", f"encode(x): codes (4, {LATENT})"),
                      ("decode", "decode(z): images (3, 1, 8, 8) with values in (0, 1)"),
                      ("forward", "forward(x) = decode(encode(x))")):
        ctx.expect_close(got[key], want[key], case,
                         diagnose=lambda p, key=key: distance(got[key], _ref_outputs(ctx, p, flat, x, z)[key], 1e-4, 1e-5))


def check_autoencoder_generate(ctx: CheckContext) -> None:
    """generate(n): n images decoded from z ~ N(0, I); the same seed as the reference gives the same
    images when drawn the same way, otherwise the mean and spread of 2,000 images must agree."""
    flat = _ae_weights(ctx)
    x, z = _f(np.zeros((1, 1, 8, 8))), _f(np.zeros((1, LATENT)))
    n = 2000
    got = ctx.harness("kmeans_autoencoder.run_with_params", timeout=ctx.call_timeout, flat=flat, x=x, z=z,
                      latent_dim=LATENT, channels=list(CHANNELS), n_generate=n, seed=3)
    g = got["generate"]
    if not ctx.require(g.shape == (n, 1, 8, 8), "generate(n) has shape (n, 1, 8, 8)",
                       f"shape {g.shape}, expected {(n, 1, 8, 8)}"):
        return
    if not ctx.require(bool(np.isfinite(g).all() and np.isfinite(got["generate_again"]).all()),
                       "generate(n) is finite", "non-finite pixel values (NaN or inf): no statistical test can pass"):
        return
    ctx.expect(not np.array_equal(g, got["generate_again"]), "fresh codes on every call",
               "two calls gave the same images: draw new codes z each call")
    want = None
    variants = list(ctx.reference_variants())
    own = ctx.diagnosed.get(ctx.spec.component)  # e.g. a decoder without sigmoid, already charged
    if own is not None and own.id in ctx.mutants:
        m = ctx.mutants[own.id]
        variants.append((own.id, {**variants[-1][1], m.component: m.fn}))
    for label, patches in variants:
        w = _ref_outputs(ctx, patches, flat, x, z, n, 3)["generate"]
        want = w if want is None else want
        if w.shape == g.shape and (close(g, w, 1e-4, 1e-5) or _same_distribution(g, w)):
            if label:
                ctx.notes.append(f"Matches the reference once your mistakes already charged elsewhere ({label}) are "
                                 "taken into account: no extra points lost here.")
            ctx.expect(True, "images decoded from z ~ N(0, I)")
            return
    ctx.expect(False, "images decoded from z ~ N(0, I)",
               f"mean pixel values differ from the reference's by up to {np.abs(g.mean(0) - want.mean(0)).max():.3g} "
               f"and their spread by up to {np.abs(g.std(0) - want.std(0)).max():.3g} over {n} images (more than 6 "
               "standard errors): draw z = torch.randn(n, latent_dim) and decode it")


def _same_distribution(g: np.ndarray, w: np.ndarray, sigmas: float = 6.0) -> bool:
    """Per-pixel mean and standard deviation of two samples agree within `sigmas` standard errors
    (64 pixels × 2 statistics at 6σ: a correct implementation fails with probability < 1e-6)."""
    n, m = len(g), len(w)
    vg, vw = g.var(0), w.var(0)
    mean_tol = sigmas * np.sqrt(vg / n + vw / m) + 1e-4
    std_tol = sigmas * np.sqrt(vg / (2 * n) + vw / (2 * m)) + 1e-4
    return bool((np.abs(g.mean(0) - w.mean(0)) <= mean_tol).all() and (np.abs(g.std(0) - w.std(0)) <= std_tol).all())


def check_reconstruction_loss(ctx: CheckContext) -> None:
    for label, shape, dtype in [("float32 images (8, 1, 8, 8)", (8, 1, 8, 8), "float32"),
                                ("float64 images (3, 1, 8, 8)", (3, 1, 8, 8), "float64")]:
        with ctx.case(label):
            x_hat, x = _f(ctx.rng.uniform(0, 1, shape), dtype), _f(ctx.rng.uniform(0, 1, shape), dtype)
            got = _scalar(ctx, ctx.call("reconstruction_loss", x_hat, x)["result"], "reconstruction_loss", label)
            if got is None:
                continue

            def reference(p, x_hat=x_hat, x=x):
                with ctx.patched(p):
                    return _np(ctx.ref.reconstruction_loss(to_torch(x_hat, ctx.device), to_torch(x, ctx.device))).reshape(())

            ctx.expect_close(got, reference({}), f"{label}: mean squared error over all elements",
                             diagnose=lambda p, g=got, r=reference: distance(g, r(p), ctx.spec.rtol, ctx.spec.atol))


# ---- examples for the declared properties (grader/checks/properties.py; rubric [properties]) ----------------

def _sizes(v, d: int = 3, k: int = 4) -> tuple[int, int, int]:
    """(points, centres, dimensions): non-square when `v.wide`, realistic pixel counts when `v.extreme`."""
    return v.batch, (5 if v.wide else k), (784 if v.extreme else 7 if v.wide else d)


def _example_distances(ctx, v):
    n, k, d = _sizes(v)
    x, c = _points(ctx, n, d, v.dtype, 100.0 if v.extreme else 1.0), _points(ctx, k, d, v.dtype, 100.0 if v.extreme else 1.0)
    return properties.Example("squared_distances", {"x": x, "centres": c},
                              lambda t: ctx.ref.squared_distances(t["x"], t["centres"]), batched=("x",))


def _example_assign(ctx, v):
    n, k, d = _sizes(v)
    x, c = _separated(ctx, n, k, d, v.dtype)
    return properties.Example("assign", {"x": x, "centres": c}, lambda t: ctx.ref.assign(t["x"], t["centres"]),
                              batched=("x",))


def _example_kmeans_loss(ctx, v):
    n, k, d = _sizes(v)
    x, c = _points(ctx, n, d, v.dtype, 100.0 if v.extreme else 1.0), _points(ctx, k, d, v.dtype, 100.0 if v.extreme else 1.0)
    return properties.Example("kmeans_loss", {"x": x, "centres": c}, lambda t: ctx.ref.kmeans_loss(t["x"], t["centres"]),
                              batched=("x",), batch_out=False)


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])] if a.ndim == 2 else a


def _example_minibatch_update(ctx, v):
    n, k, d = _sizes(v)
    if v.extreme:
        # ties: two equal centres (k-means can produce them) and points exactly as far from both; whichever of
        # the two takes the points, the *set* of new centres is the same, and every point counts once
        d = 64
        c = _points(ctx, k, d, v.dtype)
        c[1] = c[0]
        x = np.concatenate([c[:1] + _f(ctx.rng.normal(0, 0.01, (3, d)), v.dtype), _points(ctx, n, d, v.dtype)])
        return properties.Example("minibatch_update", {"centres": c, "x_batch": _f(x, v.dtype), "lr": 0.5},
                                  lambda t: ctx.ref.minibatch_update(t["centres"], t["x_batch"], t["lr"]),
                                  canonical=_sorted_rows, label="two equal centres, points tied between them")
    x, c = _separated(ctx, n, k, d, v.dtype)
    return properties.Example("minibatch_update", {"centres": c, "x_batch": x, "lr": 0.5},
                              lambda t: ctx.ref.minibatch_update(t["centres"], t["x_batch"], t["lr"]),
                              batched=("x_batch",), batch_out=False)


def _example_init_centres(ctx, v):
    x, y = _digits_like(ctx)
    return properties.Example("init_centres", {"x": _f(x, v.dtype), "y": y, "k": 10},
                              lambda t: ctx.ref.init_centres(t["x"], t["y"], t["k"]))


def _example_confusion(ctx, v):
    a, y = ctx.rng.integers(0, 4, 30).astype("int64"), ctx.rng.integers(0, 10, 30).astype("int64")
    return properties.Example("confusion", {"assignments": a, "labels": y, "k": 4},
                              lambda t: ctx.ref.confusion(t["assignments"], t["labels"], t["k"]))


def _example_autoencoder(ctx, v):
    ae = ctx.new("ae", "ConvAutoencoder", LATENT, list(CHANNELS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed % 2**31)
        ref_ae = ctx.ref.ConvAutoencoder(LATENT, CHANNELS).to(ctx.device)  # (its own weights: shapes only)
    x = _f(ctx.rng.uniform(0, 1, (v.batch, 1, 8, 8)))
    return properties.Example(ctx.method(ae, "forward", "ConvAutoencoder.forward"), {"x": x}, lambda t: ref_ae(t["x"]),
                              params="ae", ref_object=ref_ae, batched=("x",))


def _example_reconstruction_loss(ctx, v):
    shape = (v.batch, 1, 28, 28) if v.extreme else (v.batch, 1, 8, 8)
    x_hat, x = _f(ctx.rng.uniform(0, 1, shape), v.dtype), _f(ctx.rng.uniform(0, 1, shape), v.dtype)
    return properties.Example("reconstruction_loss", {"x_hat": x_hat, "x": x},
                              lambda t: ctx.ref.reconstruction_loss(t["x_hat"], t["x"]), batched=("x_hat", "x"),
                              batch_out=False)


EXAMPLES = {
    "distances": _example_distances, "assign": _example_assign, "kmeans_loss": _example_kmeans_loss,
    "minibatch_update": _example_minibatch_update, "init_centres": _example_init_centres,
    "confusion": _example_confusion, "autoencoder": _example_autoencoder,
    "reconstruction_loss": _example_reconstruction_loss,
}
