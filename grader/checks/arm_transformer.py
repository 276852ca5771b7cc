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

Model level (component "model", second half): the course's decoder with the student's block trained
by the course's loop in the sandbox on the 8×8 digits as 64-token sequences (embedded: nothing is
downloaded; `--data headlines:PATH` reads the course's headlines from a local text file), the reference
block trained the same way (cached), test NLL in bits per token and samples compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from grader.checks import (
    CheckContext, StudentValueError, UNBOUNDED_S, likely_causes, model_settings, note_epoch_matched,
    believed_epochs, reference_at_students_epochs, relative_score, tensor, timed_call,
)
from grader.history import TrainingClaim, epochs_done, stop_reason
from grader.metrics import Metric
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


def _name_mistake(ctx: CheckContext, got, signature, **kw) -> None:
    """Name the block's mistake whose mutant gives the same `signature` (a tuple of plain values) as the student's."""
    ctx.diagnose(lambda p: _reference_signature(ctx, signature, p, **kw) == got)


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
            ctx.expect(False, "finite outputs with the mask", f"outputs at position(s) {bad} are not finite: a position "
                       "whose every key is masked gets a softmax of -inf only (NaN)")
            _name_mistake(ctx, _nonfinite_positions(block, x), lambda r: _nonfinite_positions(r, x))
            return
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
            _name_mistake(ctx, signature(block), signature)


def check_block_noncausal(ctx: CheckContext) -> None:
    """causal=False: the output at every earlier position changes when a later input changes."""
    x = _x(ctx, 2, T)
    fresh = [_x(ctx, 2, 1)[:, 0] for _ in range(T - 1)]
    block = _Student(ctx, "noncausal")
    with ctx.case("block(x, causal=False)"):
        leaks = _leaks(block, x, fresh, ctx, False)
        failed = False
        for s, moved in enumerate(leaks, start=1):
            missing = sorted(set(range(s)) - set(moved))
            failed |= not ctx.expect(not missing, f"causal=False: outputs before position {s} depend on x[:, {s}]",
                                     f"the output at position(s) {missing} ignores x[:, {s}]: without the mask every "
                                     "position attends to every other")
        if failed:
            _name_mistake(ctx, leaks, lambda b: _leaks(b, x, fresh, ctx, False))


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
            ctx.diagnose(matches)


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


# =====================================================================================================
# Model level: the course's decoder with the student's block, trained on token sequences
# =====================================================================================================

DEFAULTS = {
    "data": "digits",  # "digits" (embedded, 8×8 images as 64 tokens) or "headlines:PATH" (one headline a line)
    "levels": 4,  # digits: intensities 0..16 quantized to this many tokens
    "max_length": 48,  # headlines: characters kept per headline
    "num_emb": 32, "num_neurons": 64, "num_heads": 4, "num_blocks": 2, "dropout_prob": 0.1,
    "lr": 1e-3, "batch_size": 32, "max_epochs": 5, "max_patience": 2, "time_budget_s": 45.0,
    "num_samples": 64, "seed": 0,
    # relative to the reference: full marks up to `*_full` worse, nothing from `*_zero` worse, linear between
    "nll_full": 0.05, "nll_zero": 0.25,
    # the student's model is evaluated in the sandbox (its architecture is its own), so an NLL this much *better* than
    # the reference's, trained alike, is not believed: no credit, and the note asks the instructor to look
    "nll_implausible": 0.15,
    "samples_full": 0.5, "samples_zero": 2.0,
}
TRAIN_KEYS = ("num_emb", "num_neurons", "num_heads", "num_blocks", "dropout_prob", "lr", "batch_size", "max_epochs",
              "max_patience", "time_budget_s", "num_samples", "seed")
CODE_FILES = ("reference/arm_transformer.py", "grader/harnesses/arm_transformer.py", "grader/checks/arm_transformer.py")
ALPHABET = "abcdefghijklmnopqrstuvwxyz "  # the course's Tokenizer: pad 0, a..z 1..26, ' ' 27, cls 28


class ModelGradingError(Exception):
    """The student's model could not be trained or evaluated; the message says why."""


def settings(ctx_or_rubric, session=None) -> dict:
    rubric = getattr(ctx_or_rubric, "rubric", ctx_or_rubric)
    session = session or getattr(ctx_or_rubric, "session", None)
    return model_settings(rubric, session, DEFAULTS)


def preflight(rubric, session, selected=None) -> None:
    """Fail early (before the sandbox starts) on bad [model] settings or data."""
    if selected is not None and not any(spec.kind == "model" for spec in selected):
        return
    _data(settings(rubric, session))


@dataclass
class Data:
    """Token sequences N×T (int64; the start token num_token_vals − 1 first) and how to show them."""
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    num_token_vals: int
    kind: str  # "digits" or "headlines"
    summary: str


_DATA: dict = {}


def _data(s: dict) -> Data:
    key = (s["data"], s["levels"], s["max_length"])
    if key not in _DATA:
        kind, _, path = str(s["data"]).partition(":")
        if kind == "digits" and not path:
            _DATA[key] = _digits(int(s["levels"]))
        elif kind == "headlines" and path:
            _DATA[key] = _headlines(Path(path).expanduser(), int(s["max_length"]))
        else:
            raise ValueError(f"arm-transformer data {s['data']!r}: use 'digits' (embedded) or 'headlines:PATH' (a text "
                             "file with one headline a line, e.g. the course's headline_cause titles)")
    return _DATA[key]


def _digits(levels: int) -> Data:
    """scikit-learn's 8×8 digits (grader.data's split), intensities 0..16 quantized to `levels` tokens, read row by row."""
    from grader.data import load_dataset

    if not 2 <= levels <= 17:
        raise ValueError(f"arm-transformer [model] levels must be in 2..17, got {levels}")
    ds = load_dataset("digits")

    def tokens(x) -> np.ndarray:
        q = np.minimum((x.numpy() * levels / 17.0).astype(np.int64), levels - 1)
        return np.concatenate([np.full((len(q), 1), levels, dtype=np.int64), q], axis=1)

    return Data(tokens(ds.x_train), tokens(ds.x_val), tokens(ds.x_test), levels + 1, "digits",
                f"{ds.summary()}; each image as 64 tokens (row by row, intensities quantized to {levels} levels) after a "
                "start token")


def _headlines(path: Path, max_length: int) -> Data:
    """One headline a line, tokenized as the course's Tokenizer does (pad 0, a..z, space, cls 28 first), split 80/10/10."""
    if not path.is_file():
        raise ValueError(f"headlines file {path} does not exist: give a text file with one headline a line")
    lines = [ln.strip().lower() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    fold = str.maketrans("éíáóæä", "eeaoaa")
    texts = ["".join(c for c in ln.translate(fold) if c in ALPHABET)[:max_length] for ln in lines]
    texts = [t for t in texts if t.strip()]
    if len(texts) < 30:
        raise ValueError(f"headlines file {path}: {len(texts)} usable lines; at least 30 are needed")
    x = np.zeros((len(texts), max_length + 1), dtype=np.int64)
    x[:, 0] = len(ALPHABET) + 1
    for i, t in enumerate(texts):
        x[i, 1:len(t) + 1] = [ALPHABET.index(c) + 1 for c in t]
    perm = np.random.default_rng(0).permutation(len(x))
    a, b = int(0.8 * len(x)), int(0.9 * len(x))
    return Data(x[perm[:a]], x[perm[a:b]], x[perm[b:]], len(ALPHABET) + 2, "headlines",
                f"headlines from {path.name}: {a}/{b - a}/{len(x) - b} train/val/test, {max_length} characters "
                "(the course's tokenizer) after a start token")


@dataclass
class Part:
    student: dict | None = None
    reference: dict = field(default_factory=dict)
    error: str = ""
    extra: dict = field(default_factory=dict)


METRICS = {
    "test_bits_per_token": Metric("Test negative log-likelihood", "bits per token", "lower"),
    "sample_distance": Metric("Samples: distance of the token frequencies per row from the test data's", "total variation", "lower"),
    "training": Metric("Training of your model", kind="note"),
    "sample_text": Metric("Headlines sampled from your model", kind="note"),
}


def _train_kwargs(s: dict, data: Data) -> dict:
    return {**{k: s[k] for k in TRAIN_KEYS}, "num_tokens": int(data.x_train.shape[1]),
            "num_token_vals": data.num_token_vals}


def _sample_distance(samples: np.ndarray, data: Data, groups: int = 8) -> float:
    """Mean over `groups` runs of consecutive positions (the image rows of the digits) of the total variation
    between the samples' token frequencies there and the test data's (pooled: 64 samples give 512 tokens a row)."""
    v = data.num_token_vals
    tv = []
    for cols in np.array_split(np.arange(1, data.x_test.shape[1]), groups):
        p = np.bincount(samples[:, cols].ravel(), minlength=v)[:v] / max(samples[:, cols].size, 1)
        q = np.bincount(data.x_test[:, cols].ravel(), minlength=v)[:v] / data.x_test[:, cols].size
        tv.append(0.5 * np.abs(p - q).sum())
    return float(np.mean(tv))


def _metrics(out: dict, data: Data, kw: dict) -> dict:
    """Bits per token from the log-probabilities the harness returned, after checking they are normalised,
    causal and of the right shape (the student's own loss values are never used)."""
    n, t = data.x_test.shape
    lp = np.asarray(out.get("test_log_probs"), dtype=np.float64)
    if lp.shape != (n, t - 1) or not np.isfinite(lp).all() or (lp > 1e-6).any():
        raise ModelGradingError(f"the trained model's test log-probabilities have shape {lp.shape} or are not finite "
                                "log-probabilities")
    norm = np.asarray(out.get("test_normaliser"), dtype=np.float64)
    if norm.shape != lp.shape or np.abs(norm).max() > 1e-3:
        raise ModelGradingError("the trained model's next-token probabilities do not sum to 1")
    cut = int(out.get("probe_cut", 0))
    prefix, probe = (np.asarray(out.get(k), dtype=np.float64) for k in ("test_prefix", "probe_prefix"))
    if not (cut > 0 and prefix.shape == probe.shape == (n, cut, kw["num_token_vals"])
            and np.allclose(prefix, probe, rtol=1e-4, atol=1e-4)):
        raise ModelGradingError(f"the trained model is not causal: its predictions of the first {cut} tokens change when "
                                "later tokens change, so its test NLL is not a likelihood")
    samples = np.asarray(out.get("samples"))
    if samples.ndim != 2 or samples.shape[1] != t or ((samples < 0) | (samples >= kw["num_token_vals"])).any():
        raise ModelGradingError(f"the samples have shape {samples.shape} or values out of range")
    return {"test_bits_per_token": float(-lp.mean() / math.log(2)), "sample_distance": _sample_distance(samples, data)}


def _reference(ctx: CheckContext, s: dict, data: Data) -> tuple[dict, dict, np.ndarray]:
    from grader import model_cache
    from grader.harnesses import arm_transformer as harness

    # never cut by wall-clock time: how far the reference trains must not depend on the machine's load
    kw = dict(_train_kwargs(s, data), time_budget_s=UNBOUNDED_S)
    key = model_cache.cache_key({"assignment": ctx.rubric.id, "data": data.summary, "train": kw,
                                 "device": ctx.device.type}, code_files=CODE_FILES)
    hit = model_cache.load(key)
    if hit is not None:
        ctx.session.metrics["reference_cache"] = "reused"
        return hit["meta"]["metrics"], hit["meta"]["history"], hit["state_dict"]["samples"]
    t = lambda a: torch.from_numpy(a).to(ctx.device)  # noqa: E731
    out = harness.train_and_evaluate(ctx.ref, ctx.device, t(data.x_train), t(data.x_val), t(data.x_test), **kw)
    if out.get("error"):
        raise RuntimeError(f"the reference failed to train: {out['error']}")
    metrics = _metrics(out, data, kw)
    model_cache.store(key, {"samples": out["samples"]}, {"metrics": metrics, "history": out["history"]})
    ctx.session.metrics["reference_cache"] = "trained now"
    return metrics, out["history"], out["samples"]


def _part(ctx: CheckContext) -> Part:
    if "arm" in ctx.session.cache:
        return ctx.session.cache["arm"]
    s = settings(ctx)
    data = _data(s)
    part = ctx.session.cache["arm"] = Part()
    part.reference, ref_history, ref_samples = _reference(ctx, s, data)
    part.extra.update(reference_history=ref_history, reference_samples=ref_samples)
    kw = _train_kwargs(s, data)
    try:
        budget = min(ctx.session.remaining_s(), s["time_budget_s"] * 2 + 30)
        out, seconds = timed_call(ctx.harness, "arm_transformer.train_and_evaluate", timeout=max(1.0, budget),
                                  x_train=data.x_train, x_val=data.x_val, x_test=data.x_test, **kw)
        part.extra["history"] = hist = out.get("history", {}) or {}
        if out.get("error"):
            raise ModelGradingError(f"training your model failed: {out['error']}")
        # what the child reports is a claim: a budget stop counts only when the grader's clock saw the budget run out
        claim = TrainingClaim("your model's training", epochs_done(hist), str(hist.get("stopped_because")), seconds,
                              float(s["time_budget_s"]))
        done = believed_epochs(ctx, claim, epochs_done(ref_history))
        if done:
            # load and speed are not mistakes: compare with the reference trained for as many epochs
            part.reference, ref_history, ref_samples = reference_at_students_epochs(
                ctx, lambda: _reference(ctx, dict(s, max_epochs=done), data))
            part.extra.update(reference_history=ref_history, reference_samples=ref_samples, epoch_matched=done)
        part.student = _metrics(out, data, kw)
        part.extra["samples"] = np.asarray(out["samples"])
        _training_note(ctx, hist, ref_history)
        _figures(ctx, part, data)
    except ModelGradingError as e:
        part.error = str(e)
    except Exception as e:  # a student crash or timeout inside the harness
        part.error = f"{type(e).__name__}: {getattr(e, 'message', e)}"
    ctx.session.metrics["data"] = data.summary
    for key in ("test_bits_per_token", "sample_distance"):
        ctx.session.metrics[key] = {"student": (part.student or {}).get(key), "reference": part.reference.get(key)}
    return part


def _training_note(ctx: CheckContext, hist: dict, ref_hist: dict) -> None:
    why = {"max_epochs": "after the last epoch", "early_stopping": "by early stopping", "time_budget": "at the time budget",
           "diverged": "because the loss became non-finite"}.get(stop_reason(hist.get("stopped_because")), "")
    ctx.session.metrics["training"] = (f"{hist.get('epochs', 0)} epoch(s) in {hist.get('seconds', 0):.0f} s, stopped {why}; "
                                       f"the reference: {ref_hist.get('epochs', 0)} epoch(s).")


def _figures(ctx: CheckContext, part: Part, data: Data) -> None:
    folder = ctx.session.figures_dir
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rel = "figures/arm_samples.png"
    if data.kind == "digits":
        from grader import figures

        levels = data.num_token_vals - 1
        rows = [a[:16, 1:].reshape(-1, 8, 8).astype(np.float32) / max(levels - 1, 1)
                for a in (part.extra["samples"], part.extra["reference_samples"])]
        from matplotlib.figure import Figure

        fig = Figure(figsize=(0.6 * 16 + 1.2, 1.6), layout="constrained")
        for ax, imgs, label in zip(fig.subplots(2, 1), rows, ("yours", "reference")):
            figures._show(ax, figures._mosaic(imgs, 1, len(imgs), (8, 8)), 1.0)
            ax.set_ylabel(label, fontsize=7)
        path = figures._save(fig, folder / "arm_samples.png")
        caption = "16 samples of your model (top) and of the reference trained the same way (bottom)."
    else:
        path = folder / "arm_samples.txt"
        text = lambda a: ["".join(ALPHABET[i - 1] if 0 < i <= len(ALPHABET) else "" for i in row[1:]) for row in a[:16]]  # noqa: E731
        path.write_text("yours:\n" + "\n".join(text(part.extra["samples"])) + "\n\nreference:\n"
                        + "\n".join(text(part.extra["reference_samples"])) + "\n")
        rel = "figures/arm_samples.txt"
        caption = "16 headlines sampled from your model and from the reference."
        ctx.session.metrics["sample_text"] = " · ".join(t.strip() or "(empty)" for t in text(part.extra["samples"])[:6])
    if not any(f["path"] == rel for f in ctx.session.figures) and Path(path).suffix == ".png":
        ctx.session.figures.append({"path": rel, "caption": caption, "tag": "model"})


BLOCK = ("block",)


def _grade(ctx: CheckContext, key: str, metric: str, label: str) -> None:
    part = _part(ctx)
    note_epoch_matched(ctx, part.extra.get("epoch_matched", 0))
    s = settings(ctx)
    if part.error:
        ctx.expect(False, label, part.error)
        likely_causes(ctx, BLOCK)
        return
    st, rf = part.student[key], part.reference[key]
    frac = relative_score(st, rf, s[f"{metric}_full"], s[f"{metric}_zero"])
    text = (f"yours {st:.4g}, reference {rf:.4g} (full marks within {s[f'{metric}_full']:.0%}, "
            f"none beyond {s[f'{metric}_zero']:.0%} worse)")
    ctx.partial(frac, label, text)
    if frac >= 1.0:
        ctx.notes.append(f"{label}: {text}")
    else:
        likely_causes(ctx, BLOCK)


def check_model_nll(ctx: CheckContext) -> None:
    label = "the course's decoder with your block, trained: test NLL in bits per token"
    part, s = _part(ctx), settings(ctx)
    if part.student and part.student["test_bits_per_token"] < (1 - s["nll_implausible"]) * part.reference["test_bits_per_token"]:
        ctx.expect(False, label, f"yours {part.student['test_bits_per_token']:.4g}, reference "
                   f"{part.reference['test_bits_per_token']:.4g}: more than {s['nll_implausible']:.0%} better than the "
                   "reference block trained the same way, which a transformer block cannot be; not credited (the "
                   "instructor is asked to look at this submission)")
        return
    _grade(ctx, "test_bits_per_token", "nll", label)


def check_model_samples(ctx: CheckContext) -> None:
    _grade(ctx, "sample_distance", "samples", "samples of the trained model: token frequencies per position against "
                                              "the test data's (mean total variation)")


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
