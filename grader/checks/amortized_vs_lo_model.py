"""The `amortized-vs-lo` assignment's model level: the student's CNN, amortized VAE and latent-optimization
model, each trained on digits by the course's loop.

A subclass of `grader.checks.model_level.ModelLevel` (settings, the cached reference, the timed training calls,
epoch matching and its notes are the framework's). The three loops (grader/harnesses/amortized_vs_lo.py) run in the
sandbox; only loss histories and weights come back. The weights are loaded into the *reference* classes (by role:
renamed submodules are matched by shape) and evaluated here with reference code: accuracy, −ELBO, importance-sampled
log p(x) per digit, train vs test. The reference models are trained by the same loops once and cached. Each loop is
a part: one that fails is graded 0 on its own (`run.errors`), and one stopped by its time budget is compared with
the reference trained for as many epochs (`run.claims`, one per loop).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grader import glossary, roles
from grader.checks import CheckContext, UNBOUNDED_S, likely_causes, note_epoch_matched, relative_score, seeded
from grader.checks.model_level import ModelGradingError, ModelLevel, ModelRun, Reference
from grader.history import epochs_done, bounded
from grader.metrics import Metric

LOOPS = {"train_classifier": "cnn", "train_vae": "vae", "train_lo": "lo"}  # harness -> part
WHAT = {"cnn": "your CNN classifier's training", "vae": "your VAE's training", "lo": "your LO model's training"}


@dataclass(frozen=True)
class Settings:
    data: str = "digits"
    cnn_epochs: int = 20
    vae_epochs: int = 30
    lo_epochs: int = 30
    L: int = 8
    H: int = 128
    lr: float = 1e-3
    lr_latent: float = 1e-2
    batch_size: int = 64
    seed: int = 0
    time_budget_s: float = 30.0
    K: int = 256  # importance samples per image
    lo_test_steps: int = 150  # Adam steps fitting q for unseen images (decoder frozen)
    # classifier: full marks within accuracy_full (absolute) of the reference, none from accuracy_zero below
    accuracy_full: float = 0.02
    accuracy_zero: float = 0.15
    # VAE / LO: relative to the reference, full marks up to *_full worse, none from *_zero worse
    vae_full: float = 0.05
    vae_zero: float = 0.25
    lo_full: float = 0.05
    lo_zero: float = 0.25


@dataclass
class Prepared:
    x_train: torch.Tensor  # (N, D) in [0, 1]
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple
    text: str  # the exact record (cache keys)
    words: str = ""  # the same for a student (the report's "Data set" line)

    def summary(self) -> str:
        return self.text


_BROKEN_NOTE = (" Red pixels: your model's output there is NaN or infinite (its numbers broke down; see the training "
                "notes above).")


def _prepare(spec: str) -> Prepared:
    from grader.data import load_dataset

    data = load_dataset(spec)
    scale = float(max(data.num_vals - 1, 1))
    f = lambda t: (t.float() / scale).clamp(0, 1) if data.likelihood != "bernoulli" else t.float()  # noqa: E731
    return Prepared(f(data.x_train), data.y_train.long(), f(data.x_val), data.y_val.long(), f(data.x_test),
                    data.y_test.long(), tuple(data.image_shape), data.summary(), _words(data))


def _words(data) -> str:
    """The data in a student's words: grey values scaled to [0, 1] (read as Bernoulli means) are no categorical
    pixels, which `Dataset.describe` would name."""
    if data.likelihood == "bernoulli":
        return data.describe()
    return glossary.data_description(data.name, len(data.x_train), len(data.x_val), len(data.x_test),
                                     data.image_shape, data.num_vals) + ", scaled to [0, 1]"


def _img(x: torch.Tensor, shape) -> torch.Tensor:
    return x.reshape(len(x), 1, *shape)


def _train_all(run_harness, s: Settings, data: Prepared) -> dict:
    """The three course loops through `run_harness(name, **kwargs)` (sandboxed for students)."""
    common = dict(lr=s.lr, batch_size=s.batch_size, seed=s.seed, time_budget_s=s.time_budget_s)
    size = data.image_shape[0]
    return {
        "cnn": run_harness("train_classifier", x_train=_img(data.x_train, data.image_shape), y_train=data.y_train,
                           x_val=_img(data.x_val, data.image_shape), y_val=data.y_val, image_size=size,
                           epochs=s.cnn_epochs, **common),
        "vae": run_harness("train_vae", x_train=data.x_train, x_val=data.x_val, L=s.L, H=s.H, epochs=s.vae_epochs,
                           **common),
        "lo": run_harness("train_lo", x_train=data.x_train, L=s.L, H=s.H, epochs=s.lo_epochs, lr_latent=s.lr_latent,
                          **common),
    }


def _load(model, weights: dict, what: str, device):
    if not weights:
        raise ModelGradingError(f"no weights came back for your {what}")
    try:  # by role: renamed submodules matched by shape in order, extra buffers ignored
        mapped, _ignored = roles.match_state(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()})
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in mapped.items()}, strict=True)
    except Exception as e:  # a tensor nothing fits, dtypes
        raise ModelGradingError(f"your {what}'s weights do not fit the assignment's architecture: "
                                f"{str(e).splitlines()[0][:300]}") from None
    return model.to(device).eval()


def _reference_models(ctx, s: Settings, data: Prepared):
    """The reference's three classes, freshly initialised (the same every time): weights are loaded into them."""
    from grader.harnesses import amortized_vs_lo as H

    ref = ctx.ref
    N, Dx = data.x_train.shape
    with seeded(0, "cpu"):
        cnn = ref.CNNClassifier(num_classes=10, image_size=data.image_shape[0])
        vae = H.build_vae(ref, Dx, s.L, s.H)
        lo = H.build_lo(ref, Dx, s.L, s.H, N)
    return cnn, vae, lo


@torch.no_grad()
def _evaluate_cnn(model, data: Prepared, device) -> dict:
    out = {}
    for split in ("val", "test"):
        x, y = getattr(data, f"x_{split}").to(device), getattr(data, f"y_{split}").to(device)
        logits = model(_img(x, data.image_shape))
        out[f"{split}_accuracy"] = float((logits.argmax(1) == y).float().mean())
        out[f"{split}_loss"] = float(torch.nn.functional.cross_entropy(logits, y))
    return out


def _per_digit(values: torch.Tensor, labels: torch.Tensor) -> list[float]:
    return [float(values[labels == k].mean()) if (labels == k).any() else math.nan for k in range(10)]


def _log_px(ref, model, x, K: int, seed: int, idx=None, batch: int = 100) -> torch.Tensor:
    out = []
    with torch.no_grad(), seeded(seed, x.device):
        for i in range(0, len(x), batch):
            j = None if idx is None else idx[i:i + batch]
            out.append(ref.log_px_importance(model, x[i:i + batch], K, j))
    return torch.cat(out)


def _fit_lo_test(ref, lo, x: torch.Tensor, steps: int, lr: float, seed: int):
    """A latent-optimization model has no q for unseen images: fit one per image with the decoder frozen."""
    fitted = ref.LatentOptimizationVAE(lo.decoder, len(x), lo.L).to(x.device)
    for p in fitted.decoder.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        fitted.mu.zero_()
        fitted.log_var.zero_()
    opt = torch.optim.Adam([fitted.mu, fitted.log_var], lr=lr)
    idx = torch.arange(len(x), device=x.device)
    with seeded(seed, x.device):
        for _ in range(steps):
            loss = -fitted.elbo(x, idx).mean()
            if not torch.isfinite(loss):
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in fitted.decoder.parameters():
        p.requires_grad_(True)
    return fitted.eval()


def _evaluate(ctx, s: Settings, data: Prepared, cnn, vae, lo, device) -> dict:
    ref = ctx.ref
    m = {"cnn": _evaluate_cnn(cnn, data, device)}
    xtr, xva, xte = (t.to(device) for t in (data.x_train, data.x_val, data.x_test))
    with torch.no_grad(), seeded(1, device):
        m["vae_val_neg_elbo"] = float(-vae.elbo(xva).mean())
    lp_te, lp_tr = _log_px(ref, vae, xte, s.K, 2), _log_px(ref, vae, xtr, s.K, 3)
    m["vae_test_log_px"], m["vae_train_log_px"] = float(lp_te.mean()), float(lp_tr.mean())
    m["vae_test_log_px_per_digit"] = _per_digit(lp_te.cpu(), data.y_test)
    idx = torch.arange(len(xtr), device=device)
    with torch.no_grad(), seeded(4, device):
        m["lo_train_neg_elbo"] = float(-lo.elbo(xtr, idx).mean())
    lo_tr = _log_px(ref, lo, xtr, s.K, 5, idx)
    m["lo_train_log_px"] = float(lo_tr.mean())
    m["lo_train_log_px_per_digit"] = _per_digit(lo_tr.cpu(), data.y_train)
    if s.lo_test_steps > 0:
        fitted = _fit_lo_test(ref, lo, xte, int(s.lo_test_steps), 0.05, 6)
        lo_te = _log_px(ref, fitted, xte, s.K, 7, torch.arange(len(xte), device=device))
        m["lo_test_log_px"] = float(lo_te.mean())
    return m


def _strip(h: dict) -> dict:
    return {k: v for k, v in h.items() if k != "state_dict"}


class AmortizedVsLoModel(ModelLevel):
    name = "amortized_vs_lo.model"
    Settings = Settings
    reference_fields = ("cnn_epochs", "vae_epochs", "lo_epochs", "L", "H", "lr", "lr_latent", "batch_size", "seed", "K",
                        "lo_test_steps")
    code_files = ("reference/amortized_vs_lo.py", "grader/harnesses/amortized_vs_lo.py",
                  "grader/checks/amortized_vs_lo_model.py")

    def load_data(self, s: Settings) -> Prepared:
        return _prepare(s.data)

    # ---- the reference: the three models, one cache entry ----------------------------------------------------
    def train_reference(self, ctx: CheckContext, s: Settings, data: Prepared):
        from grader.harnesses import amortized_vs_lo as harness

        device = ctx.device
        # never cut by wall-clock time: how far it trains must not depend on the load of the machine that first
        # filled the cache (a student's loop cut by the budget is matched to epochs instead)
        s = dataclasses.replace(s, time_budget_s=UNBOUNDED_S)
        hists = _train_all(lambda name, **kw: getattr(harness, name)(
            ctx.ref, device, **{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}), s, data)
        for name, h in hists.items():
            if h.get("stopped_because") in ("error", "diverged"):
                raise RuntimeError(f"the reference {name} failed to train: {h.get('message')}")
        weights = {f"{name}/{k}": v for name, h in hists.items() for k, v in h["state_dict"].items()}
        models = self._reference_loaded(ctx, s, data, weights)
        meta = {"metrics": _evaluate(ctx, s, data, *models, device),
                "history": {name: _strip(h) for name, h in hists.items()}}
        return weights, meta, models

    def load_reference(self, ctx: CheckContext, s: Settings, data: Prepared, state: dict, meta: dict) -> Reference:
        return Reference(meta["metrics"], meta["history"], self._reference_loaded(ctx, s, data, state))

    @staticmethod
    def _reference_loaded(ctx, s: Settings, data: Prepared, weights: dict) -> tuple:
        cnn, vae, lo = _reference_models(ctx, s, data)
        for name, model in (("cnn", cnn), ("vae", vae), ("lo", lo)):
            _load(model, {k.split("/", 1)[1]: v for k, v in weights.items() if k.startswith(name + "/")},
                  f"reference {name}", ctx.device)
        return cnn, vae, lo

    def reference_epochs(self, run: ModelRun, epochs_field: str) -> int:
        return epochs_done(run.reference_history.get(epochs_field.removesuffix("_epochs")))

    # ---- the student's three loops -----------------------------------------------------------------------------
    def train_student(self, ctx: CheckContext, s: Settings, data: Prepared, run: ModelRun) -> dict:
        timeout = lambda: max(1.0, min(ctx.session.remaining_s(), s.time_budget_s * 2 + 30))  # noqa: E731
        seconds: dict = {}  # part -> the grader's own clock around its training call

        def run_harness(name, **kw):
            t0 = time.monotonic()
            try:
                return ctx.harness(f"amortized_vs_lo.{name}", timeout=timeout(),
                                   **{k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()})
            except Exception as e:  # a crash or timeout of the student's code in the sandbox
                return {"stopped_because": "error", "message": getattr(e, "message", None) or f"{type(e).__name__}: {e}"}
            finally:
                seconds[LOOPS[name]] = time.monotonic() - t0

        hists = {name: bounded(h) for name, h in _train_all(run_harness, s, data).items()}
        run.student_history = {name: _strip(h) for name, h in hists.items()}
        for name, h in hists.items():
            run.claims[f"{name}_epochs"] = self.claim(s, h, seconds.get(name, 0.0), what=WHAT[name])
        return hists

    def evaluate(self, ctx: CheckContext, s: Settings, data: Prepared, run: ModelRun, hists: dict) -> None:
        """The student's weights loaded into fresh reference models and evaluated with reference code; a part
        whose weights do not load is evaluated with the (matched) reference's model in its place."""
        cnn, vae, lo = _reference_models(ctx, s, data)
        models = run.extra["models"] = {}
        for name, model, what in (("cnn", cnn, "CNNClassifier"), ("vae", vae, "VAE"), ("lo", lo, "LatentOptimizationVAE")):
            h = hists[name]
            try:
                if h.get("stopped_because") == "error" and not h.get("epochs"):
                    raise ModelGradingError(f"training your {what} failed: {h.get('message')}")
                models[name] = _load(model, h.get("state_dict") or {}, what, ctx.device)
            except ModelGradingError as e:
                run.errors[name] = str(e)
        if len(models) == 3:
            run.student_metrics = _evaluate(ctx, s, data, models["cnn"], models["vae"], models["lo"], ctx.device)
            return
        ref_models, part = run.reference.model, {}  # evaluate what can be
        if "cnn" in models:
            part["cnn"] = _evaluate_cnn(models["cnn"], data, ctx.device)
        for name in ("vae", "lo"):
            if name in models:
                try:
                    full = _evaluate(ctx, s, data, ref_models[0], models.get("vae", ref_models[1]),
                                     models.get("lo", ref_models[2]), ctx.device)
                    part.update({k: v for k, v in full.items() if k.startswith(name)})
                except Exception as e:
                    run.errors[name] = f"evaluating your model failed: {type(e).__name__}: {e}"
        run.student_metrics = part

    def record(self, ctx: CheckContext, run: ModelRun) -> None:
        st, rf = run.student_metrics or {}, run.reference_metrics

        def num(v):  # results.json is strict JSON: non-finite values are written as text
            return v if v is None or not isinstance(v, float) or math.isfinite(v) else str(v)

        pair = lambda a, b: {"student": num(a), "reference": num(b)}  # noqa: E731
        M = ctx.session.metrics
        M["data"] = run.data.words
        M["K (importance samples)"] = run.settings.K
        M["CNN validation accuracy"] = pair(st.get("cnn", {}).get("val_accuracy"), rf["cnn"]["val_accuracy"])
        M["CNN test accuracy"] = pair(st.get("cnn", {}).get("test_accuracy"), rf["cnn"]["test_accuracy"])
        M["CNN validation loss"] = pair(st.get("cnn", {}).get("val_loss"), rf["cnn"]["val_loss"])
        M["VAE validation −ELBO"] = pair(st.get("vae_val_neg_elbo"), rf["vae_val_neg_elbo"])
        M["VAE log p(x) train (IS)"] = pair(st.get("vae_train_log_px"), rf["vae_train_log_px"])
        M["VAE log p(x) test (IS)"] = pair(st.get("vae_test_log_px"), rf["vae_test_log_px"])
        M["LO training −ELBO"] = pair(st.get("lo_train_neg_elbo"), rf["lo_train_neg_elbo"])
        M["LO log p(x) train (IS)"] = pair(st.get("lo_train_log_px"), rf["lo_train_log_px"])
        if "lo_test_log_px" in rf:
            M["LO log p(x) test (IS, q fitted)"] = pair(st.get("lo_test_log_px"), rf.get("lo_test_log_px"))
        for key in ("vae_test_log_px_per_digit", "lo_train_log_px_per_digit"):  # one value per digit 0-9
            got = st.get(key)
            M[key] = {"student": None if got is None else [num(v) for v in got], "reference": [num(v) for v in rf[key]]}
        for name, h in run.student_history.items():
            M[f"{name} training"] = (glossary.training_note(h.get("stopped_because") or "", len(h.get("epochs") or []),
                                                            h.get("seconds") or 0)
                                     + (f" ({h['message']})" if h.get("message") else ""))

    def figures(self, ctx: CheckContext, run: ModelRun) -> None:
        _figures(ctx, run, run.extra["models"])


MODEL = AmortizedVsLoModel()


def preflight(rubric, session, selected) -> None:
    """Before grading: bad [model] settings or a missing data folder are the instructor's to fix."""
    MODEL.preflight(rubric, session, selected)


# How the numbers recorded above are shown in the report (grader/metrics.py).
_NATS = "nats per image"
METRICS = {
    "K (importance samples)": Metric("Importance samples per image (K)", kind="note"),
    "CNN validation accuracy": Metric("CNN validation accuracy", "share of images classified correctly", "higher"),
    "CNN test accuracy": Metric("CNN test accuracy", "share of images classified correctly", "higher"),
    "CNN validation loss": Metric("CNN validation loss", "cross-entropy, nats per image", "lower"),
    "VAE validation −ELBO": Metric("Amortized VAE: validation negative ELBO", _NATS, "lower"),
    "VAE log p(x) train (IS)": Metric("Amortized VAE: training log-likelihood (importance sampling)", _NATS, "higher"),
    "VAE log p(x) test (IS)": Metric("Amortized VAE: test log-likelihood (importance sampling)", _NATS, "higher"),
    "LO training −ELBO": Metric("Latent optimization: training negative ELBO", _NATS, "lower"),
    "LO log p(x) train (IS)": Metric("Latent optimization: training log-likelihood (importance sampling)", _NATS, "higher"),
    "LO log p(x) test (IS, q fitted)": Metric("Latent optimization: test log-likelihood (q fitted per image)", _NATS,
                                              "higher"),
    "vae_test_log_px_per_digit": Metric("Amortized VAE: test log-likelihood per digit", _NATS, "higher", kind="per_class",
                                        class_label="digit"),
    "lo_train_log_px_per_digit": Metric("Latent optimization: training log-likelihood per digit", _NATS, "higher",
                                        kind="per_class", class_label="digit"),
    **{f"{name} training": Metric(f"Training of your {what}", kind="note")
       for name, what in (("cnn", "CNN"), ("vae", "amortized VAE"), ("lo", "latent-optimization model"))},
}


# ---- figures -------------------------------------------------------------------------------------------

def _figures(ctx, run: ModelRun, models: dict) -> None:
    folder = ctx.session.figures_dir
    if folder is None:
        return
    from matplotlib.figure import Figure

    from grader import figures as F

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    # loss curves
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    titles = {"cnn": "CNN: cross-entropy", "vae": "amortized VAE: −ELBO", "lo": "latent optimization: −ELBO (train)"}
    for ax, name in zip(axes, ("cnn", "vae", "lo")):
        series = []
        for label, h, color in (("reference", run.reference_history.get(name, {}), "tab:gray"),
                                ("yours", run.student_history.get(name, {}), "tab:blue")):
            for key, ls in (("train_loss", "--"), ("val_loss", "-")):
                if len(h.get(key) or []):
                    series.append({"label": f"{label}: {key.split('_')[0]}", "values": h[key], "color": color, "ls": ls,
                                   "reference": label == "reference",
                                   "diverged": label == "yours" and h.get("stopped_because") == "diverged"})
        F.draw_losses(ax, series)
        ax.set_title(titles[name], fontsize=9)
        if ax.get_legend():
            ax.legend(fontsize=6)
    made.append((F._save(fig, folder / "loss_curves.png"),
                 "Loss per epoch (dashed: training, solid: validation; for LO the whole training set): yours and the reference.",
                 "model"))
    data, shape = run.data, run.data.image_shape
    device = ctx.device
    pick = [int(torch.nonzero(data.y_train == k)[0]) for k in range(10) if (data.y_train == k).any()]
    idx = torch.tensor(pick, device=device)
    x = data.x_train[pick].to(device)
    rows, labels = [x.cpu().numpy()], ["data"]
    with torch.no_grad():
        for name, label in (("vae", "amortized"), ("lo", "LO")):
            m = models.get(name)
            if m is None:
                continue
            mu, _ = m.posterior(x, idx)
            rows.append(m.decoder(mu).cpu().numpy())
            labels.append(label)
    fig = Figure(figsize=(7, 0.9 * len(rows) + 0.3), layout="constrained")
    broken = 0
    for ax, imgs, label in zip(np.atleast_1d(fig.subplots(len(rows), 1)), rows, labels):
        broken += F.show_images(ax, imgs, 1, len(pick), shape, 1.0)
        ax.set_ylabel(label, fontsize=7)
    made.append((F._save(fig, folder / "reconstructions.png"),
                 "One training image per digit (top) and its reconstruction (decoder mean at z = mu) by your amortized VAE "
                 "and your latent-optimization model." + _BROKEN_NOTE * bool(broken), "model"))
    rows, labels = [], []
    with torch.no_grad(), seeded(0, device):
        z = torch.randn(10, run.settings.L, device=device)
        for name, label in (("vae", "amortized"), ("lo", "LO")):
            if name in models:
                rows.append(models[name].decoder(z).cpu().numpy())
                labels.append(label)
    if rows:
        fig = Figure(figsize=(7, 0.9 * len(rows) + 0.3), layout="constrained")
        broken = 0
        for ax, imgs, label in zip(np.atleast_1d(fig.subplots(len(rows), 1)), rows, labels):
            broken += F.show_images(ax, imgs, 1, 10, shape, 1.0)
            ax.set_ylabel(label, fontsize=7)
        made.append((F._save(fig, folder / "samples.png"),
                     "Decoder means for the same 10 draws z ~ N(0, I): your amortized VAE and your LO model."
                     + _BROKEN_NOTE * bool(broken), "model"))
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    student = run.student_metrics or {}
    for ax, key, title in zip(axes, ("vae_test_log_px_per_digit", "lo_train_log_px_per_digit"),
                              ("amortized VAE (test images)", "latent optimization (training images)")):
        k = np.arange(10)
        ref_v = np.asarray(run.reference_metrics[key], dtype=float)
        ax.bar(k - 0.2, ref_v, 0.4, color="tab:gray", label="reference")
        if key in student:
            ax.bar(k + 0.2, np.asarray(student[key], dtype=float), 0.4, color="tab:blue", label="yours")
        shown = np.concatenate([ref_v, np.asarray(student.get(key, []), dtype=float)])
        shown = shown[np.isfinite(shown)]
        if len(shown):  # zoom on the values: the differences between digits are a few nats
            lo_, hi_ = shown.min(), shown.max()
            ax.set_ylim(lo_ - 0.15 * (hi_ - lo_ + 1), hi_ + 0.15 * (hi_ - lo_ + 1))
        ax.set_xticks(k)
        ax.set_xlabel("digit")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"mean log p(x) (nats, IS with K={run.settings.K})")
    made.append((F._save(fig, folder / "log_px_per_digit.png"),
                 "Average log p(x) per digit, estimated by importance sampling (reference code on your trained weights).",
                 "model"))
    for path, caption, tag in made:
        ctx.session.figures.append({"path": f"figures/{Path(path).name}", "caption": caption, "tag": tag})


# ---- scoring -------------------------------------------------------------------------------------------

# The student's components each model-level metric runs (training and evaluation use the reference's
# code for everything else): only their mistakes are named as likely causes.
_TRAINED_VAE = ("reparameterize", "kl", "decoder.forward", "decoder.log_prob", "elbo")
DEPENDS_ON = {"cnn": ("classifier",), "vae": _TRAINED_VAE + ("encoder", "vae"), "lo": _TRAINED_VAE + ("lo",)}


def _diagnose_model(ctx, run: ModelRun, name: str) -> None:
    h = run.student_history.get(name, {})
    if h.get("stopped_because") == "diverged":
        ctx.notes.append(f"Diagnosis: training diverged ({h.get('message')}): look for log(0) (a missing sigmoid or "
                         "clamp) and for exp overflow.")
    elif h.get("stopped_because") == "error":
        ctx.notes.append(f"Diagnosis: training stopped with an error: {h.get('message')}")
    val = [v for v in h.get("val_loss", []) if v is not None and math.isfinite(v)]
    if len(val) >= 3 and val[-1] > min(val) * 1.05 and val[-1] > val[0]:
        ctx.notes.append("Diagnosis: the loss rose during training: the optimiser made the model worse "
                         "(check the sign of each term of the loss).")
    likely_causes(ctx, DEPENDS_ON[name])


def check_model_accuracy(ctx: CheckContext) -> None:
    run = MODEL.run(ctx)
    s, st = run.settings, run.student_metrics or {}
    if "cnn" in run.errors:
        ctx.expect(False, "validation accuracy", run.errors["cnn"])
        return
    got, want = st["cnn"]["val_accuracy"], run.reference_metrics["cnn"]["val_accuracy"]
    gap = want - got
    frac = 1.0 if gap <= s.accuracy_full else 0.0 if gap >= s.accuracy_zero else \
        (s.accuracy_zero - gap) / (s.accuracy_zero - s.accuracy_full)
    epochs = run.epochs_matched.get("cnn_epochs", s.cnn_epochs)
    text = (f"yours {100 * got:.1f} %, reference {100 * want:.1f} % after {epochs} epochs "
            f"(full marks within {100 * s.accuracy_full:.0f} points, none from {100 * s.accuracy_zero:.0f} below)")
    ctx.partial(frac, "validation accuracy of the trained CNN", text)
    note_epoch_matched(ctx, run.epochs_matched.get("cnn_epochs", 0))
    ctx.notes.append(f"Test accuracy: yours {100 * st['cnn']['test_accuracy']:.1f} %, "
                     f"reference {100 * run.reference_metrics['cnn']['test_accuracy']:.1f} %.")
    if frac < 1:
        _diagnose_model(ctx, run, "cnn")


def _grade_relative(ctx, run: ModelRun, name: str, key: str, label: str, sign: float) -> None:
    s, st = run.settings, run.student_metrics or {}
    if name in run.errors or key not in st:
        ctx.expect(False, label, run.errors.get(name, "no result"))
        return
    got, want = sign * st[key], sign * run.reference_metrics[key]  # lower is better
    full, zero = getattr(s, f"{name}_full"), getattr(s, f"{name}_zero")
    frac = relative_score(got, want, full, zero)
    text = (f"yours {got:.2f} nats, reference {want:.2f} nats (full marks within {full:.0%}, "
            f"none beyond {zero:.0%} worse)")
    ctx.partial(frac, label, text)
    note_epoch_matched(ctx, run.epochs_matched.get(f"{name}_epochs", 0))
    if frac >= 1:
        ctx.notes.append(f"{label}: {text}")
    else:
        _diagnose_model(ctx, run, name)


def check_model_vae(ctx: CheckContext) -> None:
    """−log p(x) of the test images (importance sampling with reference code on the trained weights)."""
    run = MODEL.run(ctx)
    _grade_relative(ctx, run, "vae", "vae_test_log_px", f"amortized VAE: test −log p(x) (IS, K={run.settings.K})", -1.0)


def check_model_lo(ctx: CheckContext) -> None:
    """−ELBO of the training images under the trained LO model (its own per-example q)."""
    _grade_relative(ctx, MODEL.run(ctx), "lo", "lo_train_neg_elbo", "latent optimization: training-set −ELBO", 1.0)
