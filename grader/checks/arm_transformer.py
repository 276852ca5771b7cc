"""Checks of the `arm-transformer` assignment (rubric: rubrics/arm-transformer.toml, reference:
reference/arm_transformer.py, mutants: reference/arm_transformer_mistakes.py, the course's given code:
grader/harnesses/arm_transformer.py).

Students write `TransformerBlock(num_emb, num_neurons, num_heads)`; its parameters are theirs to
choose (pre- or post-norm, any activation, `nn.MultiheadAttention` or hand-written attention), so the
unit checks test *properties* of the student's block with its own seeded initialisation, never
values against the reference's weights: shapes and dtypes, causality, the effect of `causal=False`,
permutation equivariance without the mask, that the heads are heads, that gradients reach every
parameter, and that the course's decoder, NLL and sampler work with it. A failing property is named
when the same statistic of a mutant of the reference gives the same answer (`_signature` for both).

The model half (component "model") is grader/checks/arm_transformer_model.py, on the shared framework
(grader/checks/model_level.py).
"""

from __future__ import annotations

import numpy as np
import torch

from grader.checks import CheckContext, StudentValueError, tensor
from grader.checks.arm_transformer_model import (  # noqa: F401
    METRICS, check_model_nll, check_model_samples, preflight, train_ahead)
from grader.sandbox.client import StudentException

D, N, H = 16, 32, 4  # embedding size, MLP neurons, heads of the unit checks' blocks
T = 6  # sequence length of the unit checks
FORWARD = "TransformerBlock.forward"


# ---- the student's block and the reference's, behind one interface -------------------------------

def _x(ctx: CheckContext, b: int, t: int, d: int = D, dtype: str = "float32") -> np.ndarray:
    return np.asarray(ctx.rng.standard_normal((b, t, d)), dtype=dtype)


class _Student:
    """The student's block in the sandbox: `new` builds it (seeded, eval mode), `__call__` runs forward."""

    def __init__(self, ctx: CheckContext, name: str, d: int = D, n: int = N, h: int = H, state: dict | None = None):
        self.ctx, self.name = ctx, name
        self.obj = ctx.new(name, "TransformerBlock", num_emb=d, num_neurons=n, num_heads=h, state=state,
                           partial_state=False)  # a state entry that does not fit fails the request
        ctx.call(ctx.method(self.obj, "eval", "TransformerBlock.eval"))  # dropout off: outputs must be deterministic

    def __call__(self, x: np.ndarray, causal: bool | None = None, grad: dict | None = None) -> np.ndarray:
        kwargs = {} if causal is None else {"causal": causal}
        reply = self.ctx.call(self.ctx.method(self.obj, "forward", FORWARD), x, grad=grad, **kwargs)
        self.last = reply
        return tensor(reply["result"], FORWARD, dtype=x.dtype.name)


class _Reference:
    """The reference block (with whatever mutant is patched in), seeded, eval mode, run here."""

    def __init__(self, ctx: CheckContext, d: int = D, n: int = N, h: int = H):
        self.ctx = ctx
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.block = ctx.ref.TransformerBlock(d, n, h).to(ctx.device).eval()

    def __call__(self, x: np.ndarray, causal: bool | None = None, grad=None) -> np.ndarray:
        kwargs = {} if causal is None else {"causal": causal}
        with torch.no_grad():
            t = torch.from_numpy(x).to(self.ctx.device)
            return self.block.to(t.dtype)(t, **kwargs).cpu().numpy()


def _reference_signature(ctx: CheckContext, signature, patches: dict, **kw):
    with ctx.patched(patches):
        return signature(_Reference(ctx, **kw))


def _name_mistake(ctx: CheckContext, got, signature, since: int, **kw) -> None:
    """Name the block's mistake whose mutant gives the same `signature` (a tuple of plain values) as the student's,
    as the cause of the failing cases recorded from index `since` on (the cases the signature sums up)."""
    ctx.attribute(ctx.diagnose(lambda p: _reference_signature(ctx, signature, p, **kw) == got), since)


def _changed(a: np.ndarray, b: np.ndarray, ctx: CheckContext) -> np.ndarray:
    """Per position (axis 1): does `b` differ from `a` beyond the check's tolerance (NaN counts as a change)?"""
    rtol, atol = ctx.tolerance(a.dtype.name)
    diff = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=False)
    return diff.reshape(a.shape[0], a.shape[1], -1).any(axis=(0, 2))


# ---- unit checks ---------------------------------------------------------------------------------

def _nonfinite_positions(block, x) -> tuple:
    out = block(x)
    return tuple(bool(v) for v in ~np.isfinite(out).reshape(out.shape[0], out.shape[1], -1).all(axis=(0, 2)))


def check_block_shapes(ctx: CheckContext) -> None:
    """B×T×D in, B×T×D out (float32, finite without the mask), for several sizes, one token, causal and not.
    Non-finite outputs with the mask are the mask's mistake: charged once, in block.causal."""
    masked_nan = False
    for d, n, h, b, t in ((16, 32, 4, 2, 6), (24, 8, 3, 3, 5), (8, 16, 1, 1, 1), (16, 64, 2, 4, 1), (32, 32, 8, 2, 9)):
        for causal in (None, True, False):
            label = (f"TransformerBlock(num_emb={d}, num_neurons={n}, num_heads={h}) on {b}×{t}×{d}"
                     + ("" if causal is None else f", causal={causal}"))
            with ctx.case(label):
                block = _Student(ctx, f"shape_{d}_{h}_{b}_{t}_{causal}", d, n, h)
                out = block(_x(ctx, b, t, d), causal=causal)
                if ctx.expect(out.shape == (b, t, d), label, f"returned shape {out.shape}, expected {(b, t, d)}") \
                        and not np.isfinite(out).all():
                    if causal is False:
                        ctx.expect(False, label + ": finite", f"{int((~np.isfinite(out)).sum())} non-finite value(s)")
                    else:
                        masked_nan = True
    if masked_nan:
        ctx.notes.append("With the causal mask some outputs are not finite: charged once, in block.causal.")


def _leaks(block, x: np.ndarray, fresh: list, ctx: CheckContext, causal) -> tuple:
    """leak[s − 1] = the positions t < s whose output changes when only x[:, s] becomes fresh[s − 1] (tuples)."""
    base = block(x, causal=causal)
    out = []
    for s in range(1, x.shape[1]):
        x2 = x.copy()
        x2[:, s] = fresh[s - 1]
        moved = _changed(base, block(x2, causal=causal), ctx)
        out.append(tuple(int(t) for t in np.flatnonzero(moved[:s])))
    return tuple(out)


def _constant_in_constant_out(block, c: np.ndarray, ctx: CheckContext) -> bool:
    """A sequence of identical tokens gives identical outputs (attention weights sum to 1 over the keys)."""
    out = block(np.repeat(c, T, axis=1))
    return not _changed(np.repeat(out[:, :1], T, axis=1), out, ctx).any()


def check_block_causal(ctx: CheckContext) -> None:
    """causal=True (and the default, as the course's decoder calls `block(x)`): no output at position t
    changes when an input after t changes."""
    x = _x(ctx, 2, T)
    fresh = [_x(ctx, 2, 1)[:, 0] for _ in range(T - 1)]
    c = _x(ctx, 2, 1)
    block = _Student(ctx, "causal")

    def signature(b):
        return _leaks(b, x, fresh, ctx, None), _leaks(b, x, fresh, ctx, True), _constant_in_constant_out(b, c, ctx)

    failed = False
    with ctx.case("finite outputs with the mask"):
        if not np.isfinite(block(x)).all():
            bad = [t for t, v in enumerate(_nonfinite_positions(block, x)) if v]
            since = len(ctx.cases)
            ctx.expect(False, "finite outputs with the mask", f"outputs at position(s) {bad} are not finite: a position "
                       "whose every key is masked gets a softmax of -inf only (NaN)")
            _name_mistake(ctx, _nonfinite_positions(block, x), lambda r: _nonfinite_positions(r, x), since)
            return
    since = len(ctx.cases)  # the leak cases, which `signature` sums up
    for causal in (True, None):
        how = "block(x)" if causal is None else "block(x, causal=True)"
        with ctx.case(how):
            leaks = _leaks(block, x, fresh, ctx, causal)
            for s, moved in enumerate(leaks, start=1):
                failed |= not ctx.expect(not moved, f"{how}: outputs before position {s} do not depend on x[:, {s}]",
                                         f"changing x[:, {s}] changed the output at position(s) {list(moved)}: "
                                         "the future leaks in (mask the scores of keys s > t before the softmax)")
    if failed:
        with ctx.case("diagnosis"):
            _name_mistake(ctx, signature(block), signature, since)


def check_block_noncausal(ctx: CheckContext) -> None:
    """causal=False: the output at every earlier position changes when a later input changes."""
    x = _x(ctx, 2, T)
    fresh = [_x(ctx, 2, 1)[:, 0] for _ in range(T - 1)]
    block = _Student(ctx, "noncausal")
    with ctx.case("block(x, causal=False)"):
        since = len(ctx.cases)
        leaks = _leaks(block, x, fresh, ctx, False)
        failed = False
        for s, moved in enumerate(leaks, start=1):
            missing = sorted(set(range(s)) - set(moved))
            failed |= not ctx.expect(not missing, f"causal=False: outputs before position {s} depend on x[:, {s}]",
                                     f"the output at position(s) {missing} ignores x[:, {s}]: without the mask every "
                                     "position attends to every other")
        if failed:
            _name_mistake(ctx, leaks, lambda b: _leaks(b, x, fresh, ctx, False), since)


def check_block_permutation(ctx: CheckContext) -> None:
    """causal=False: permuting the positions permutes the outputs (self-attention has no order of its own)."""
    block = _Student(ctx, "perm")
    x = _x(ctx, 2, T)
    with ctx.case("causal=False is honoured"):
        if not _changed(block(x, causal=True), block(x, causal=False), ctx).any():
            ctx.notes.append("Not judged: your block gives the same output with causal=False as with causal=True "
                             "(charged once, in block.noncausal).")
            ctx.expect(True, "not applicable while causal=False is ignored (see the notes)")
            return
    for b, t in ((2, 7), (1, 5)):
        x = _x(ctx, b, t)
        perm = ctx.rng.permutation(t)
        with ctx.case(f"{b}×{t}×{D}, positions permuted {perm.tolist()}"):
            ctx.expect_close(block(x[:, perm], causal=False), block(x, causal=False)[:, perm],
                             f"causal=False on {b}×{t}×{D}: block(x[:, perm]) = block(x)[:, perm]")


def _heads_matter(ctx: CheckContext, make, x) -> tuple:
    """(blocks with num_heads 1 and 2 holding the weights of the num_heads=4 block give other outputs,) or None
    when the weights do not fit (parameter shapes that depend on the number of heads)."""
    base = make(H, None)
    want = base(x)
    out = []
    for h in (1, 2):
        other = make(h, base)
        if other is None:
            return None
        out.append(bool(_changed(want, other(x), ctx).any()))
    return tuple(out)


def check_block_heads(ctx: CheckContext) -> None:
    """Every head is used: the block with num_heads=4 is not the block with 1 or 2 heads given the same weights
    (a block whose heads all attend alike, or that ignores num_heads, computes single-head attention)."""
    x = _x(ctx, 2, T)

    def student(h, base):
        if base is None:
            return _Student(ctx, "heads_4", h=h)
        state = {k: v for k, v in ctx.sandbox.request({"op": "params", "name": base.name}, timeout=ctx.call_timeout).items()
                 if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
        try:
            return _Student(ctx, f"heads_{h}", h=h, state=state)
        except StudentException:  # the weights do not fit a block with h heads
            return None

    def reference(h, base, patches):
        r = _Reference(ctx, h=h)
        if base is not None:
            r.block.load_state_dict(base.block.state_dict())
        return r

    with ctx.case("num_heads=4 against 1 and 2 heads with the same weights"):
        got = _heads_matter(ctx, student, x)
        if got is None:
            ctx.notes.append("Your block's parameter shapes depend on num_heads (one module per head?), so the same "
                             "weights cannot be tried with other numbers of heads: this check was not judged.")
            ctx.expect(True, "not applicable to your layout (see the notes)")
            return
        ok = ctx.expect(all(got), "heads: 4 heads compute something else than 1 or 2 heads with the same weights",
                        "with the same weights your block gives the same output with "
                        + " and ".join(f"{h} head(s)" for h, g in zip((1, 2), got) if not g)
                        + " as with 4: the heads all attend alike (split queries, keys and values into num_heads "
                        "parts of num_emb/num_heads dimensions, and attend within each)")
        if not ok:
            def matches(p):
                with ctx.patched(p):
                    return _heads_matter(ctx, lambda h, base: reference(h, base, p), x) == got
            ctx.attribute(ctx.diagnose(matches), len(ctx.cases) - 1)


def check_block_gradients(ctx: CheckContext) -> None:
    """A loss of the output back-propagates to every parameter of the block and to the input."""
    block = _Student(ctx, "grad")
    x = _x(ctx, 2, T)
    cot = _x(ctx, 2, T)
    block(x, grad={"params": "grad", "inputs": ["args.0"], "cotangent": cot})
    grads = block.last.get("grads") or {}
    params = {k[len("param:"):]: v for k, v in grads.items() if k.startswith("param:")}
    ctx.expect(bool(params), "the block has parameters", "TransformerBlock has no parameters (nn.Module layers "
                                                          "built in __init__)")
    stuck = sorted(k for k, v in params.items() if v is None)
    ctx.expect(not stuck, "gradients reach every parameter",
               f"no gradient reaches {', '.join(stuck[:6])}: a layer built but not used, or a detached intermediate")
    gx = grads.get("args.0")
    ctx.expect(gx is not None and bool(np.any(gx)), "gradients reach the input", "no gradient reaches x: is the "
                                                                                   "output detached from it?")
    zero = sorted(k for k, v in params.items() if v is not None and not np.any(v))
    if zero:  # legitimate for some: a key bias adds the same score to every key (softmax ignores it)
        ctx.notes.append(f"The gradient of {', '.join(zero[:6])} is exactly zero here (expected for a key bias, "
                         "which shifts all scores of a query alike).")


def check_block_dtypes(ctx: CheckContext) -> None:
    """float32 in, float32 out; after .double(), float64 in, float64 out, matching float32 to float32 precision."""
    block = _Student(ctx, "dtype")
    x = _x(ctx, 2, T)
    with ctx.case("float32"):
        out32 = block(x)
        ctx.expect(True, "float32 in, float32 out")
    with ctx.case("float64 after block.double()"):
        ctx.call(ctx.method(block.obj, "double", "TransformerBlock.double"))
        for causal in (True, False):
            out64 = block(x.astype(np.float64), causal=causal)
            ctx.expect(True, f"float64 in, float64 out (causal={causal})")
            if causal:  # (non-finite values are charged once, in block.causal: NaN where float32 has NaN passes)
                ctx.expect_close(out64, out32.astype(np.float64), "float64 matches float32 (causal=True)",
                                 rtol=1e-3, atol=1e-4)


# ---- the course's decoder, NLL and sampler with the student's block --------------------------------

SMALL = {"num_tokens": 4, "num_token_vals": 4, "num_emb": 16, "num_neurons": 32, "num_heads": 4, "num_blocks": 2}


def _leaky(ctx: CheckContext) -> bool:
    """Whether the block's default call lets the future in (charged once, in block.causal)."""
    if "leaky" not in ctx.session.cache:
        block = _Student(ctx, "leak_probe")
        x = _x(ctx, 2, T)
        fresh = [_x(ctx, 2, 1)[:, 0] for _ in range(T - 1)]
        try:
            ctx.session.cache["leaky"] = any(_leaks(block, x, fresh, ctx, None))
        except (StudentException, StudentValueError):
            ctx.session.cache["leaky"] = False
    return ctx.session.cache["leaky"]


def _not_judged_if_leaky(ctx: CheckContext) -> bool:
    if _leaky(ctx):
        ctx.notes.append("Not judged: your block lets the future in (charged once, in block.causal); the decoder's "
                         "probabilities are then not those of an autoregressive model.")
        ctx.expect(True, "not applicable while the block is not causal (see the notes)")
        return True
    return False


def check_decoder_nll(ctx: CheckContext) -> None:
    """The course's decoder with the student's blocks is a normalised autoregressive model: exp(−NLL) sums to 1
    over all V^(T−1) sequences; 'sum' and 'mean' agree with the per-sequence NLLs; the loss reaches every block."""
    if _not_judged_if_leaky(ctx):
        return
    out = ctx.harness("arm_transformer.decoder_nll", timeout=ctx.call_timeout * 3, **SMALL)
    nll = np.asarray(out["nll"], dtype=np.float64)
    ctx.require(bool(np.isfinite(nll).all()), "finite NLL", "the NLL is not finite for some sequences")
    total = float(np.exp(-nll).sum())
    n = len(nll)
    ctx.expect(abs(total - 1.0) < 1e-4, f"Σ exp(−NLL) over all {n} sequences = 1",
               f"the probabilities of all {n} sequences sum to {total:.6g}, not 1")
    ctx.expect(abs(out["sum"] - nll.sum()) <= 1e-4 * max(1.0, abs(nll.sum())), "reduction='sum' is the sum",
               f"{out['sum']:.6g} against {nll.sum():.6g}")
    ctx.expect(abs(out["mean"] - nll.mean()) <= 1e-4 * max(1.0, abs(nll.mean())), "reduction='mean'",
               f"{out['mean']:.6g} against {nll.mean():.6g}")
    stuck = out.get("blocks_without_grad") or []
    ctx.expect(not stuck, "the loss's gradient reaches every block", f"no gradient reaches block(s) {stuck}")


SAMPLES = 4000


def check_decoder_sample(ctx: CheckContext) -> None:
    """The course's sampler with the student's blocks (prefixes of 1 … T−1 tokens): the start token first,
    values in range, and the sequences' frequencies agree with exp(−NLL) of the same model (a G-test)."""
    if _not_judged_if_leaky(ctx):
        return
    from scipy.stats import chi2

    samples = np.asarray(ctx.harness("arm_transformer.decoder_samples", timeout=ctx.call_timeout * 3, n=SAMPLES,
                                     **SMALL)["samples"])
    t, v = SMALL["num_tokens"], SMALL["num_token_vals"]
    if not ctx.require(samples.shape == (SAMPLES, t), "shape", f"samples of shape {samples.shape}, expected {(SAMPLES, t)}"):
        return
    ctx.expect(bool((samples[:, 0] == v - 1).all()), "every sample starts with the start token", "")
    in_range = bool(((samples >= 0) & (samples < v)).all())
    if not ctx.expect(in_range, "values in 0 … V−1", "values out of range"):
        return
    nll = np.asarray(ctx.harness("arm_transformer.decoder_nll", timeout=ctx.call_timeout * 3, **SMALL)["nll"])
    p = np.exp(-nll)
    p = p / p.sum()
    idx = (samples[:, 1:] * (v ** np.arange(t - 2, -1, -1))).sum(1)  # lexicographic, as all_sequences
    counts = np.bincount(idx, minlength=len(p))
    expected = p * SAMPLES
    seen = counts > 0
    g = 2.0 * float((counts[seen] * np.log(counts[seen] / np.maximum(expected[seen], 1e-300))).sum())
    pval = float(chi2.sf(g, len(p) - 1))
    ctx.expect(pval > 1e-6, f"{SAMPLES} samples follow the model's probabilities (G-test)",
               f"G = {g:.1f} on {len(p) - 1} degrees of freedom (p = {pval:.2g}): the sampler, which feeds prefixes "
               "of growing length, does not draw from the distribution the NLL scores")


# ---- mutation testing ----------------------------------------------------------------------------------

def probe(M) -> dict:
    """Run module `M`'s TransformerBlock in process on fixed float64 inputs (grader/mutation: a mutant that changes
    nothing here cannot be planted): outputs with causal True, False and the default, at T = 1 and T = 6, and the
    gradients of a fixed projection of them with respect to the input and the parameters."""
    out: dict = {}
    for key, (t, causal) in {"T6.causal": (6, True), "T6.open": (6, False), "T6.default": (6, None),
                             "T1.causal": (1, True)}.items():
        try:
            torch.manual_seed(1)
            block = M.TransformerBlock(D, N, H).double().eval()
            x = torch.randn(2, t, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
            y = block(x) if causal is None else block(x, causal=causal)
            out[key] = y.detach().clone()
            proj = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
            grads = torch.autograd.grad((y * proj).sum(), [x, *block.parameters()], allow_unused=True)
            for i, g in enumerate(grads):
                out[f"{key}.grad[{i}]"] = None if g is None else g.detach().clone()
        except Exception as e:  # a mutant may crash where the reference does not: that is behaviour too
            out[key] = ("raises", type(e).__name__)
    return out
