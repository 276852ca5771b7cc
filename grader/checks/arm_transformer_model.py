"""The `arm-transformer` assignment's model level: does the course's decoder work with the student's block?

A subclass of `grader.checks.model_level.ModelLevel` (settings, the cached reference, the timed training call,
epoch matching and its notes are the framework's). The course's decoder-transformer with the student's block is
trained by the course's loop in the sandbox (grader/harnesses/arm_transformer.py) on the 8×8 digits as 64-token
sequences (embedded: nothing is downloaded; `--data headlines:PATH` reads the course's headlines from a local text
file, one a line); the reference block is trained the same way. The architecture is the student's, so the trained
model is evaluated in the sandbox by the course's code too, on rows the grader lays out (`EvalSet`: the test rows
mixed with causality probes and copies): only arrays come back (full next-token log-probabilities, samples) and the
grader computes the metrics from them, refusing log-probabilities that are not normalised, not causal or that
depend on other rows (`_metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grader.checks import CheckContext, UNBOUNDED_S, likely_causes, note_epoch_matched, relative_score
from grader.checks.model_level import ModelGradingError, ModelLevel, ModelRun, Reference, TrainingCall
from grader.checks.inputs import check_seed
from grader.history import epochs_done, stop_reason, bounded
from grader.metrics import Metric
from grader.sandbox.errors import StudentCodeError

ALPHABET = "abcdefghijklmnopqrstuvwxyz "  # the course's Tokenizer: pad 0, a..z 1..26, ' ' 27, cls 28
# Test rows kept (the same for every student and the reference): each is evaluated three times (`EvalSet`) and comes
# back as T×V floats, so a large headlines file would otherwise send hundreds of MB (2000: 3×2000×48×29 float32, 33 MB)
MAX_TEST_ROWS = 2000


@dataclass(frozen=True)
class Settings:  # the rubric's [model] keys and their defaults
    data: str = "digits"  # "digits" (embedded, 8×8 images as 64 tokens) or "headlines:PATH" (one headline a line)
    levels: int = 4  # digits: intensities 0..16 quantized to this many tokens
    max_length: int = 48  # headlines: characters kept per headline
    num_emb: int = 32
    num_neurons: int = 64
    num_heads: int = 4
    num_blocks: int = 2
    dropout_prob: float = 0.1
    lr: float = 1e-3
    batch_size: int = 32
    max_epochs: int = 5
    max_patience: int = 2
    time_budget_s: float = 45.0
    num_samples: int = 64
    seed: int = 0
    # relative to the reference: full marks up to `*_full` worse, nothing from `*_zero` worse, linear between
    nll_full: float = 0.05
    nll_zero: float = 0.25
    # the model is evaluated in the sandbox (its architecture is the student's), so an NLL this much *better* than
    # the reference's, trained alike, is not believed: no credit, and the note asks the instructor to look
    nll_implausible: float = 0.15
    samples_full: float = 0.5
    samples_zero: float = 2.0


TRAIN_FIELDS = ("num_emb", "num_neurons", "num_heads", "num_blocks", "dropout_prob", "lr", "batch_size", "max_epochs",
                "max_patience", "time_budget_s", "num_samples", "seed")


@dataclass
class Data:
    """Token sequences N×T (int64; the start token num_token_vals − 1 first) and how to show them."""
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    num_token_vals: int
    kind: str  # "digits" or "headlines"
    text: str

    def summary(self) -> str:
        return self.text


_DATA: dict = {}


def load(s: Settings) -> Data:
    key = (s.data, s.levels, s.max_length)
    if key not in _DATA:
        kind, _, path = str(s.data).partition(":")
        if kind == "digits" and not path:
            _DATA[key] = _digits(int(s.levels))
        elif kind == "headlines" and path:
            _DATA[key] = _headlines(Path(path).expanduser(), int(s.max_length))
        else:
            raise ValueError(f"arm-transformer data {s.data!r}: use 'digits' (embedded) or 'headlines:PATH' (a text "
                             "file with one headline a line, e.g. the course's headline_cause titles)")
    return _DATA[key]


def _digits(levels: int) -> Data:
    """scikit-learn's 8×8 digits (grader.data's split), intensities 0..16 quantized to `levels` tokens, row by row."""
    from grader.data import load_dataset

    if not 2 <= levels <= 17:
        raise ValueError(f"arm-transformer [model] levels must be in 2..17, got {levels}")
    ds = load_dataset("digits")

    def tokens(x) -> np.ndarray:
        q = np.minimum((x.numpy() * levels / 17.0).astype(np.int64), levels - 1)
        return np.concatenate([np.full((len(q), 1), levels, dtype=np.int64), q], axis=1)

    return Data(tokens(ds.x_train), tokens(ds.x_val), tokens(ds.x_test), levels + 1, "digits",
                # in words (the report's "Data set" line): not the record's "D=64 (8, 8), categorical with num_vals=17"
                f"{ds.name}: {len(ds.x_train):,} training, {len(ds.x_val):,} validation and {len(ds.x_test):,} test "
                f"images of 8×8 pixels, each as 64 tokens (row by row, its {ds.num_vals} grey levels quantized to "
                f"{levels}) after a start token")


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
    x_test = x[perm[b:b + MAX_TEST_ROWS]]
    return Data(x[perm[:a]], x[perm[a:b]], x_test, len(ALPHABET) + 2, "headlines",
                f"headlines from {path.name}: {a}/{b - a}/{len(x_test)} train/val/test, {max_length} characters "
                "(the course's tokenizer) after a start token")


def _train_kwargs(s: Settings, data: Data) -> dict:
    return {**{k: getattr(s, k) for k in TRAIN_FIELDS}, "num_tokens": int(data.x_train.shape[1]),
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


@dataclass(frozen=True)
class EvalSet:
    """The rows the trained model is evaluated on, as the grader lays them out (`eval_set`).

    Each test row i is sent three times, shuffled together so that the child cannot tell which is which: as
    itself (row `test[i]` of `x`), as its causality probe (row `probe[i]`: tokens from position `cut[i]` on
    replaced by random ones, the one at the cut never the test row's own) and as a copy (row `copy[i]`,
    mostly in another batch of `batch_size` rows). A causal model that reads nothing but its own sequence
    predicts the probe's first `cut[i]` tokens as it does the test row's, predicts the copy as the row itself,
    and cannot predict the random tokens better than chance (`_metrics`)."""
    x: np.ndarray  # M×T int64, M = 3N
    test: np.ndarray  # N row indices into x
    probe: np.ndarray  # N
    copy: np.ndarray  # N
    cut: np.ndarray  # N: the first replaced position of each probe, 1..T−1
    batch_size: int


def eval_set(x_test: np.ndarray, num_token_vals: int, seed: int) -> EvalSet:
    """`x_test` (N×T, data values 0..num_token_vals − 2 after the start token) laid out with its probes and copies,
    all drawn from `seed` (the run's secret for a student, so the child cannot know the layout in advance)."""
    rng = np.random.default_rng(seed)
    n, t = x_test.shape
    v = int(num_token_vals) - 1  # the data values; num_token_vals − 1 is the start token
    cut = rng.integers(1, t, size=n)
    probe = x_test.copy()
    after = np.arange(t)[None, :] >= cut[:, None]
    probe[after] = rng.integers(0, v, size=int(after.sum()))
    rows = np.arange(n)
    probe[rows, cut] = (x_test[rows, cut] + rng.integers(1, max(v, 2), size=n)) % v  # never the test row's token
    order = rng.permutation(3 * n)
    where = np.empty(3 * n, dtype=np.int64)
    where[order] = np.arange(3 * n)  # where[j]: the row of x holding stacked row j
    x = np.concatenate([x_test, probe, x_test])[order]
    return EvalSet(x, where[:n], where[n:2 * n], where[2 * n:], cut, batch_size=max(1, min(256, -(-3 * n // 4))))


def _random_token_bound(es: EvalSet, num_token_vals: int) -> float:
    """Nats per token below which no model can predict the probes' random tokens if it sees only the tokens before
    each (Gibbs: a token uniform over m values independent of what the predictor sees costs ≥ log m in expectation):
    the mean of log m over them, m = V − 2 at the cut (any value but the test row's), V − 1 after."""
    t = es.x.shape[1]
    v = num_token_vals - 1
    after = (t - 1 - es.cut).sum()
    return float((len(es.cut) * math.log(max(v - 1, 1)) + after * math.log(v)) / (len(es.cut) + after))


def _metrics(out: dict, data: Data, es: EvalSet, num_token_vals: int) -> dict:
    """Bits per token of the test rows, computed here from the full next-token log-probabilities the harness
    returned for the grader's `EvalSet` (the student's own loss values are never used), after checking that they
    are normalised, do not depend on the other rows of a batch, are causal, and do not predict the probes' random
    tokens better than chance (which only a model that reads the tokens it predicts can do)."""
    n, t = data.x_test.shape
    lp = np.asarray(out.get("log_probs"), dtype=np.float64)
    if lp.shape != (len(es.x), t - 1, num_token_vals) or not np.isfinite(lp).all() or (lp > 1e-6).any():
        raise ModelGradingError(f"the trained model's next-token log-probabilities have shape {lp.shape} (expected "
                                f"{(len(es.x), t - 1, num_token_vals)}) or are not finite log-probabilities")
    norm = np.log(np.exp(lp).sum(axis=2))
    if np.abs(norm).max() > 1e-3:
        raise ModelGradingError("the trained model's next-token probabilities do not sum to 1")
    if not np.allclose(lp[es.test], lp[es.copy], rtol=1e-4, atol=1e-4):
        raise ModelGradingError("the trained model's predictions for a sequence depend on the other sequences of its "
                                "batch (the same sequence, sent twice in different batches, was predicted differently), "
                                "so its test NLL is not a likelihood")
    before = np.arange(t - 1)[None, :] < es.cut[:, None]  # positions predicting tokens 1..cut: the same prefix
    if not np.allclose(lp[es.test][before], lp[es.probe][before], rtol=1e-4, atol=1e-4):
        raise ModelGradingError("the trained model is not causal: its predictions of a sequence's tokens change when "
                                "later tokens change, so its test NLL is not a likelihood")
    x_probe = es.x[es.probe]
    probe_lp = np.take_along_axis(lp[es.probe], x_probe[:, 1:, None], axis=2)[:, :, 0]
    random_nll = float(-probe_lp[~before].mean())
    bound = _random_token_bound(es, num_token_vals)
    if random_nll < 0.8 * bound:
        raise ModelGradingError(f"the trained model is not causal: it predicts tokens the grader drew at random with "
                                f"{random_nll / math.log(2):.3g} bits per token, where a model that sees only the tokens "
                                f"before them needs at least {bound / math.log(2):.3g} on average: it reads the tokens it "
                                "predicts (later in its sequence, or in other sequences it was sent with)")
    test_lp = np.take_along_axis(lp[es.test], data.x_test[:, 1:, None], axis=2)[:, :, 0]
    samples = np.asarray(out.get("samples"))
    if samples.ndim != 2 or samples.shape[1] != t or ((samples < 0) | (samples >= num_token_vals)).any():
        raise ModelGradingError(f"the samples have shape {samples.shape} or values out of range")
    return {"test_bits_per_token": float(-test_lp.mean() / math.log(2)), "sample_distance": _sample_distance(samples, data)}


class ArmModel(ModelLevel):
    name = "arm_transformer.model"
    Settings = Settings
    reference_fields = tuple(f for f in TRAIN_FIELDS if f != "time_budget_s")  # (the reference is never cut by time)
    code_files = ("reference/arm_transformer.py", "grader/harnesses/arm_transformer.py",
                  "grader/checks/arm_transformer_model.py")
    student = "your model"

    def load_data(self, s: Settings) -> Data:
        return load(s)

    def train_reference(self, ctx: CheckContext, s: Settings, data: Data):
        from grader.harnesses import arm_transformer as course

        kw = dict(_train_kwargs(s, data), time_budget_s=UNBOUNDED_S)
        t = lambda a: torch.from_numpy(a).to(ctx.device)  # noqa: E731
        es = eval_set(data.x_test, data.num_token_vals, s.seed)
        out = course.train_and_evaluate(ctx.ref, ctx.device, t(data.x_train), t(data.x_val), t(es.x), **kw,
                                        eval_batch_size=es.batch_size)
        if out.get("error"):
            raise RuntimeError(f"the reference failed to train: {out['error']}")
        meta = {"metrics": _metrics(out, data, es, data.num_token_vals), "history": out["history"]}
        return {"samples": out["samples"]}, meta, np.asarray(out["samples"])  # the Reference's "model": its samples

    def load_reference(self, ctx: CheckContext, s: Settings, data: Data, state: dict, meta: dict) -> Reference:
        return Reference(meta["metrics"], meta["history"], model=np.asarray(state["samples"]))  # "model": its samples

    def eval_set(self, ctx: CheckContext, data: Data) -> EvalSet:
        """The student's `EvalSet`, drawn from the run's secret (the same for the call made ahead and for `evaluate`)."""
        key = "arm_transformer.model: eval set"
        if key not in ctx.session.cache:
            ctx.session.cache[key] = eval_set(data.x_test, data.num_token_vals,
                                              check_seed(ctx.session.secret, "arm_transformer.model.eval_set"))
        return ctx.session.cache[key]

    def training_call(self, ctx: CheckContext, s: Settings, data: Data) -> TrainingCall:
        budget = min(ctx.session.remaining_s(), s.time_budget_s * 2 + 30)
        es = self.eval_set(ctx, data)
        return TrainingCall("arm_transformer.train_and_evaluate",
                            dict(x_train=data.x_train, x_val=data.x_val, x_eval=es.x, eval_batch_size=es.batch_size,
                                 **_train_kwargs(s, data)), timeout=max(1.0, budget))

    def train_student(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun) -> dict:
        try:
            out, seconds = self.run_training(ctx, self.training_call(ctx, s, data))
        except StudentCodeError as e:  # the student's code raised, timed out or crashed inside the course's loop
            raise ModelGradingError(f"{type(e).__name__}: {getattr(e, 'message', e)}") from None
        if not isinstance(out, dict):
            raise ModelGradingError("the course's loop returned nothing readable")
        run.student_history = bounded(out.get("history"))
        run.claim = self.claim(s, run.student_history, seconds)
        if out.get("error"):
            raise ModelGradingError(f"training your model failed: {out['error']}")
        return out  # not weights: the arrays the course's code computed with the trained model (see evaluate)

    def evaluate(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun, out: dict) -> None:
        run.student_metrics = _metrics(out, data, self.eval_set(ctx, data), data.num_token_vals)
        run.extra["samples"] = np.asarray(out["samples"])

    def figures(self, ctx: CheckContext, run: ModelRun) -> None:
        folder, data = ctx.session.figures_dir, run.data
        if folder is None or "samples" not in run.extra:
            return
        folder.mkdir(parents=True, exist_ok=True)
        mine, ref = run.extra["samples"], run.reference.model
        if data.kind != "digits":
            text = lambda a: ["".join(ALPHABET[i - 1] if 0 < i <= len(ALPHABET) else "" for i in row[1:])  # noqa: E731
                              for row in a[:16]]
            (folder / "arm_samples.txt").write_text("yours:\n" + "\n".join(text(mine)) + "\n\nreference:\n"
                                                    + "\n".join(text(ref)) + "\n")
            ctx.session.metrics["sample_text"] = " · ".join(t.strip() or "(empty)" for t in text(mine)[:6])
            return
        from matplotlib.figure import Figure

        from grader import figures

        levels = data.num_token_vals - 1
        rows = [a[:16, 1:].reshape(-1, 8, 8).astype(np.float32) / max(levels - 1, 1) for a in (mine, ref)]
        fig = Figure(figsize=(0.6 * 16 + 1.2, 1.6), layout="constrained")
        for ax, imgs, label in zip(fig.subplots(2, 1), rows, ("yours", "reference")):
            figures._show(ax, figures._mosaic(imgs, 1, len(imgs), (8, 8)), 1.0)
            ax.set_ylabel(label, fontsize=7)
        figures._save(fig, folder / "arm_samples.png")
        if not any(f["path"] == "figures/arm_samples.png" for f in ctx.session.figures):
            ctx.session.figures.append({"path": "figures/arm_samples.png", "tag": "model", "caption":
                                        "16 samples of your model (top) and of the reference trained the same way (bottom)."})

    def record(self, ctx: CheckContext, run: ModelRun) -> None:
        ctx.session.metrics["data"] = run.data.summary()
        for key in ("test_bits_per_token", "sample_distance"):
            ctx.session.metrics[key] = {"student": (run.student_metrics or {}).get(key),
                                        "reference": run.reference_metrics.get(key)}
        hist, ref_hist = run.student_history, run.reference_history
        if hist:
            why = {"max_epochs": "after the last epoch", "early_stopping": "by early stopping",
                   "time_budget": "at the time budget", "diverged": "because the loss became non-finite"}
            ctx.session.metrics["training"] = (
                f"{epochs_done(hist)} epoch(s) in {hist.get('seconds', 0):.0f} s, stopped "
                f"{why.get(stop_reason(hist.get('stopped_because')), '')}; the reference: {epochs_done(ref_hist)} epoch(s).")


MODEL = ArmModel()

METRICS = {  # how the numbers recorded above are shown in the report (grader/metrics.py)
    "test_bits_per_token": Metric("Test negative log-likelihood", "bits per token", "lower"),
    "sample_distance": Metric("Samples: distance of the token frequencies per row from the test data's", "total variation",
                              "lower"),
    "training": Metric("Training of your model", kind="note"),
    "sample_text": Metric("Headlines sampled from your model", kind="note"),
}


def preflight(rubric, session, selected) -> None:
    MODEL.preflight(rubric, session, selected)


def train_ahead(ctx: CheckContext) -> bool:
    return MODEL.train_ahead(ctx)


BLOCK = ("block",)


def _grade(ctx: CheckContext, run: ModelRun, key: str, metric: str, label: str) -> None:
    note_epoch_matched(ctx, run.epoch_matched)
    if run.error or not run.student_metrics:
        ctx.expect(False, label, run.error or "your model could not be evaluated")
        likely_causes(ctx, BLOCK)
        return
    s = run.settings
    full, zero = getattr(s, f"{metric}_full"), getattr(s, f"{metric}_zero")
    st, rf = run.student_metrics[key], run.reference_metrics[key]
    frac = relative_score(st, rf, full, zero)
    text = f"yours {st:.4g}, reference {rf:.4g} (full marks within {full:.0%}, none beyond {zero:.0%} worse)"
    ctx.partial(frac, label, text)
    if frac >= 1.0:
        ctx.notes.append(f"{label}: {text}")
    else:
        likely_causes(ctx, BLOCK)


def check_model_nll(ctx: CheckContext) -> None:
    """The course's decoder with the student's block, trained: test NLL in bits per token against the reference's."""
    label = "the course's decoder with your block, trained: test NLL in bits per token"
    run = MODEL.run(ctx)
    s = run.settings
    if run.student_metrics and (run.student_metrics["test_bits_per_token"]
                                < (1 - s.nll_implausible) * run.reference_metrics["test_bits_per_token"]):
        ctx.expect(False, label, f"yours {run.student_metrics['test_bits_per_token']:.4g}, reference "
                   f"{run.reference_metrics['test_bits_per_token']:.4g}: more than {s.nll_implausible:.0%} better than "
                   "the reference block trained the same way, which a transformer block cannot be; not credited (the "
                   "instructor is asked to look at this submission)")
        return
    _grade(ctx, run, "test_bits_per_token", "nll", label)


def check_model_samples(ctx: CheckContext) -> None:
    """The trained model's samples: token frequencies per row against the test data's, relative to the reference's."""
    _grade(ctx, MODEL.run(ctx), "sample_distance", "samples", "samples of the trained model: token frequencies per "
                                                               "row against the test data's (mean total variation)")
