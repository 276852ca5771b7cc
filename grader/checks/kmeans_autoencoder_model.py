"""The `kmeans-autoencoder` assignment's model level: do the student's k-means and autoencoder work on digits?

A subclass of `grader.checks.model_level.ModelLevel` (settings, the cached reference, the timed training call,
epoch matching and its notes are the framework's). The course's loops (grader/harnesses/kmeans_autoencoder.py)
train k-means with the student's `init_centres`/`minibatch_update` (per-digit and random initialisation) and the
student's `ConvAutoencoder` with their `reconstruction_loss`, in the sandbox, on the 8×8 digits scaled to [0, 1].
Only arrays come back (centres after every epoch, flat weights, reconstructions); they are judged here with
reference code against the reference trained by the same loops. Each part (`per_digit`, `random`, `ae`) that
fails is graded 0 on its own (`run.errors`). Figures: k-means centres, confusion matrix, k-means test loss per
epoch, reconstructions, images decoded from random codes, loss curves.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grader import glossary
from grader.history import bounded
from grader.checks import (CheckContext, UNBOUNDED_S, found_causes, likely_causes, note_epoch_matched, relative_score,
                           timed_call, to_torch)
from grader.checks.model_level import ModelLevel, ModelRun, Reference
from grader.metrics import Metric
from grader.sandbox.client import StudentCodeError

INITS = ("per_digit", "random")  # the k-means loop's two initialisations (parts of the run)


@dataclass(frozen=True)
class Settings:
    data: str = "digits"
    k: int = 10
    kmeans_lr: float = 0.2
    kmeans_epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    latent_dim: int = 16
    channels: tuple = (16, 32)
    ae_epochs: int = 15
    ae_lr: float = 3e-3
    time_budget_s: float = 30.0
    n_generate: int = 20
    # relative to the reference: full marks up to `*_full` worse, nothing from `*_zero` worse, linear between
    kmeans_full: float = 0.05
    kmeans_zero: float = 0.30
    autoencoder_full: float = 0.25
    autoencoder_zero: float = 1.5


@dataclass
class Data:
    """The digits scaled to [0, 1]: split -> (x (N, 64) float32, y (N,) int64)."""
    splits: dict
    text: str  # the data set's exact record (cache keys)

    def summary(self) -> str:
        return self.text

    def images(self, split: str) -> np.ndarray:
        """(N, 1, 8, 8): the autoencoder's input."""
        return self.splits[split][0].reshape(-1, 1, 8, 8)


def _kmeans_kwargs(s: Settings, data: Data, how: str) -> dict:
    x, y = data.splits["train"]
    return dict(x=x, y=y, k=int(s.k), how=how, seed=int(s.seed), lr=float(s.kmeans_lr), epochs=int(s.kmeans_epochs),
                batch_size=int(s.batch_size))


def _ae_kwargs(s: Settings, data: Data) -> dict:
    return dict(x_train=data.images("train"), x_val=data.images("val"), x_test=data.images("test"),
                latent_dim=int(s.latent_dim), channels=[int(c) for c in s.channels], epochs=int(s.ae_epochs),
                lr=float(s.ae_lr), batch_size=int(s.batch_size), seed=int(s.seed), time_budget_s=float(s.time_budget_s),
                n_generate=int(s.n_generate))


def _run_here(fn, ctx, kwargs) -> dict:
    """Run a harness on the reference in this process (tensors on the grading device)."""
    kw = {k: (to_torch(v, ctx.device) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
    return fn(ctx.ref, ctx.device, **kw)


def _test_kmeans_loss(ctx, centres: np.ndarray, x: np.ndarray) -> float:
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 2 or not np.isfinite(c).all():
        return math.nan
    return float(ctx.ref.kmeans_loss(to_torch(x.astype(np.float64), ctx.device), to_torch(c, ctx.device)))


def _mse(a, b) -> float:
    """Mean squared error of two image arrays, by the reference's reconstruction_loss (NaN on a shape mismatch)."""
    from reference import kmeans_autoencoder as ref

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return math.nan
    return float(ref.reconstruction_loss(torch.from_numpy(a), torch.from_numpy(b)))


def _failed(what: str, e: Exception) -> str:
    return (f"{what} with the course loop failed: {getattr(e, 'message', str(e))}"
            + (f" (at {e.where})" if getattr(e, "where", "") else ""))


class KmeansAutoencoderModel(ModelLevel):
    name = "kmeans_autoencoder.model"
    Settings = Settings
    epochs_field = "ae_epochs"  # only the autoencoder's loop has a time budget
    reference_fields = ("k", "kmeans_lr", "kmeans_epochs", "batch_size", "seed", "latent_dim", "channels", "ae_epochs",
                        "ae_lr", "n_generate")
    code_files = ("reference/kmeans_autoencoder.py", "grader/harnesses/kmeans_autoencoder.py",
                  "grader/checks/kmeans_autoencoder_model.py")
    student = "your autoencoder"

    def load_data(self, s: Settings) -> Data:
        """The data set scaled to [0, 1]; ValueError unless its images are 8×8 (the autoencoder's input shape)."""
        from grader.data import load_dataset

        ds = load_dataset(s.data)
        if ds.image_shape != (8, 8):
            raise ValueError(f"the kmeans-autoencoder assignment is sized for 8×8 images ('digits'); "
                             f"{ds.name} has {ds.image_shape[0]}×{ds.image_shape[1]} images")
        scale = float(ds.num_vals - 1)
        splits = {}
        for split in ("train", "val", "test"):
            x, y = ds.split(split)
            splits[split] = ((x / scale).numpy().astype("float32"), y.numpy().astype("int64"))
        return Data(splits, ds.summary())

    # ---- the reference: k-means centres (both inits) and the autoencoder -------------------------------------
    def train_reference(self, ctx: CheckContext, s: Settings, data: Data):
        from grader.harnesses import kmeans_autoencoder as harness

        s = dataclasses.replace(s, time_budget_s=UNBOUNDED_S)
        arrays = {f"centres_{how}": np.stack(_run_here(harness.train_kmeans, ctx, _kmeans_kwargs(s, data, how))["centres"])
                  for how in INITS}
        ae = _run_here(harness.train_autoencoder, ctx, _ae_kwargs(s, data))
        arrays.update(ae_params=ae["params"], val_recon=np.stack(ae["val_recon"]), test_recon=ae["test_recon"],
                      generated=ae["generated"])
        history = {k: ae[k] for k in ("train_loss", "epochs", "stopped_because", "seconds")}
        return arrays, {"metrics": self._metrics(ctx, data, arrays), "history": history}, arrays

    def load_reference(self, ctx: CheckContext, s: Settings, data: Data, state: dict, meta: dict) -> Reference:
        return Reference(meta["metrics"], meta["history"], {k: np.asarray(v) for k, v in state.items()})

    @staticmethod
    def _metrics(ctx, data: Data, arrays: dict) -> dict:
        """Test k-means loss of the last centres of each init, test MSE of the autoencoder's reconstructions."""
        x_test = data.splits["test"][0]
        return {"kmeans_test_loss": _test_kmeans_loss(ctx, arrays["centres_per_digit"][-1], x_test),
                "kmeans_test_loss_random_init": _test_kmeans_loss(ctx, arrays["centres_random"][-1], x_test),
                "autoencoder_test_mse": _mse(arrays["test_recon"], data.images("test"))}

    # ---- the student's loops ---------------------------------------------------------------------------------
    def train_student(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun) -> dict:
        kmeans = run.extra["kmeans"] = {}  # init -> (E+1, k, D) centres after initialisation and every epoch
        for how in INITS:
            try:
                reply = ctx.harness("kmeans_autoencoder.train_kmeans", timeout=min(ctx.session.remaining_s(), 60),
                                    **_kmeans_kwargs(s, data, how))
                kmeans[how] = np.stack([np.asarray(c, dtype=np.float64) for c in reply["centres"]])
            except (StudentCodeError, ValueError, TypeError, KeyError) as e:
                run.errors[how] = _failed(f"training k-means ({how} initialisation)", e)
        run.extra["ae"] = None
        try:
            budget = min(ctx.session.remaining_s(), float(s.time_budget_s) * 2 + 30)
            ae, seconds = timed_call(ctx.harness, "kmeans_autoencoder.train_autoencoder", timeout=budget,
                                     **_ae_kwargs(s, data))
            run.student_history = bounded({k: ae[k] for k in ("train_loss", "epochs", "stopped_because", "seconds")})
            run.claim = self.claim(s, run.student_history, seconds)
            run.extra["ae"] = ae
        except (StudentCodeError, ValueError, TypeError, KeyError) as e:
            self._ae_failed(ctx, e, run)
        return {}  # the weights are in run.extra["ae"]["params"], loaded in evaluate

    def _ae_failed(self, ctx: CheckContext, e: Exception, run: ModelRun) -> None:
        causes = found_causes(ctx, DEPENDS_ON["autoencoder"])
        run.extra["ae"] = None
        run.errors["ae"] = _failed("training your autoencoder", e) + (
            f" — likely cause, found by the unit checks: {causes}" if causes
            else " — check that decode(encode(x)) has the shape of x, (N, 1, 8, 8)")

    def evaluate(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun, weights: dict) -> None:
        """The student's test reconstructions: their trained weights in the reference architecture, evaluated by
        reference code. Weights that do not fit it are not graded: the reconstructions the sandbox sent are the
        student's code's claim (an identity `forward` inside the course loop claimed a test MSE of 0)."""
        from grader.harnesses import kmeans_autoencoder as harness

        ae = run.extra["ae"]
        if ae is None:
            return
        # the reference model outside the `try`: a fault building it is the grader's, never the student's
        model = ctx.ref.ConvAutoencoder(latent_dim=int(s.latent_dim), channels=tuple(s.channels)).to(ctx.device)
        try:
            flat = np.asarray(ae["params"], dtype=np.float32)
            try:
                harness.load_flat(model, to_torch(flat.reshape(-1), ctx.device))
            except (ValueError, RuntimeError):
                want = sum(p.numel() for p in model.parameters())
                run.extra["ae"] = None
                run.errors["ae"] = (
                    f"your trained weights ({flat.size:,} numbers) do not fit the reference architecture ({want:,} "
                    "numbers: the sketch's layers, in its order). The grader evaluates trained weights in the reference "
                    "architecture itself and never grades reconstructions computed by your own code; check your layers "
                    "and their sizes against the sketch (an extra parameter counts too)")
                return
            ae["source"] = "your weights in the reference architecture"
            with torch.no_grad():
                model.eval()
                ae["student_test_recon"] = model(to_torch(data.images("test"), ctx.device)).detach().cpu().numpy()
        except (TypeError, KeyError, AttributeError, ValueError) as e:  # a reply without the arrays the course's loop returns
            self._ae_failed(ctx, e, run)

    def record(self, ctx: CheckContext, run: ModelRun) -> None:
        data, m, ae = run.data, ctx.session.metrics, run.extra.get("ae")
        x_test = data.splits["test"][0]
        kmeans = run.extra.get("kmeans", {})
        for how, key in zip(INITS, ("kmeans_test_loss", "kmeans_test_loss_random_init")):
            m[key] = {"student": _test_kmeans_loss(ctx, kmeans[how][-1], x_test) if how in kmeans else None,
                      "reference": run.reference_metrics[key]}
        stu = _mse(ae["student_test_recon"], data.images("test")) if ae else None
        m["autoencoder_test_mse"] = {"student": stu, "reference": run.reference_metrics["autoencoder_test_mse"]}
        if ae:
            h = run.student_history
            note = glossary.training_note(h["stopped_because"], len(h["epochs"]), h["seconds"])
            note += f"; the test error above was computed with {ae['source']}"
            own = _mse(ae["val_recon"][-1], data.images("val")) if len(ae["val_recon"]) else None
            if own is not None and stu is not None and np.isfinite(own) and np.isfinite(stu) and \
                    max(own, stu) > 1.5 * max(min(own, stu), 1e-12) and "reference architecture" in ae["source"]:
                # the figure's validation curve is the student's own model: say why its numbers differ from the table's
                note += (f". Your own model's last validation MSE (the loss-curve figure) is {own:.3g}, not {stu:.3g}: "
                         "your forward pass computes something the reference architecture does not (an extra or "
                         "missing activation, a different output layer?), and the table grades the weights in the "
                         "reference one.")
            m["autoencoder_training"] = note
        m["data"] = "digits scaled to [0, 1] (pixel / 16)"

    def figures(self, ctx: CheckContext, run: ModelRun) -> None:
        folder = ctx.session.figures_dir
        if folder is None:
            return
        from grader import figures

        folder.mkdir(parents=True, exist_ok=True)
        add = lambda path, caption, tag: ctx.session.figures.append(  # noqa: E731
            {"path": f"figures/{Path(path).name}", "caption": caption, "tag": tag})
        x_test, y_test = run.data.splits["test"]
        kmeans, ref, ae = run.extra["kmeans"], run.reference.model, run.extra["ae"]
        if "per_digit" in kmeans:
            c = kmeans["per_digit"][-1]
            add(_rows_figure({"reference": ref["centres_per_digit"][-1], "yours": c}, folder / "kmeans_centres.png"),
                "Final k-means centres (per-digit initialisation): the reference's (top) and yours (bottom).",
                "model.kmeans")
            if np.isfinite(c).all():
                a = ctx.ref.assign(to_torch(x_test.astype(np.float64), ctx.device), to_torch(c, ctx.device))
                m = ctx.ref.confusion(a, to_torch(y_test, ctx.device), len(c), 10).detach().cpu().numpy()
                add(_confusion_figure(m, folder / "confusion.png"),
                    "Confusion matrix of your centres on the test images: true digit (rows) against cluster (columns).",
                    "model.kmeans")
        if "random" in kmeans:
            add(_rows_figure({"reference": ref["centres_random"][-1], "yours": kmeans["random"][-1]},
                             folder / "kmeans_centres_random.png"),
                "Final centres with random initialisation: the reference's (top) and yours (bottom).", "model.kmeans")
        curves = {}
        for how in INITS:
            curves[f"reference, {how}"] = [_test_kmeans_loss(ctx, c, x_test) for c in ref[f"centres_{how}"]]
            if how in kmeans:
                curves[f"yours, {how}"] = [_test_kmeans_loss(ctx, c, x_test) for c in kmeans[how]]
        add(_curves_figure(curves, "test k-means loss", folder / "kmeans_loss.png"),
            "Test k-means loss after initialisation (epoch 0) and after each epoch, per-digit and random initialisation.",
            "model.kmeans")
        if ae:
            x_img = run.data.images("test")
            add(figures.image_grid(x_img[:16], ae["student_test_recon"][:16], folder / "reconstructions.png", (8, 8),
                                   vmax=1.0),
                "16 test images (top) and their reconstructions by your autoencoder (bottom).", "model.autoencoder")
            add(figures.sample_grid(ae["generated"], folder / "generated.png", (8, 8), vmax=1.0),
                f"{len(ae['generated'])} images decoded by your model from random codes z ~ N(0, I).",
                "model.autoencoder")
            x_val = run.data.images("val")
            curves = {"reference: training loss": run.reference_history["train_loss"],
                      "reference: validation MSE": [_mse(r, x_val) for r in ref["val_recon"]],
                      "yours: training loss": ae["train_loss"],
                      "yours: validation MSE": [_mse(r, x_val) for r in ae["val_recon"]]}
            add(_curves_figure(curves, "reconstruction loss", folder / "ae_loss_curves.png", start=1),
                "Autoencoder: training loss (as computed by each reconstruction_loss) and validation MSE per epoch.",
                "model.autoencoder")


MODEL = KmeansAutoencoderModel()


def preflight(rubric, session, selected) -> None:
    """Before grading: model-level checks need the 8×8 digits (the autoencoder's input shape)."""
    MODEL.preflight(rubric, session, selected)


# How the numbers recorded above are shown in the report (grader/metrics.py).
METRICS = {
    "kmeans_test_loss": Metric("Test k-means loss, per-digit initialisation", "mean squared distance to the nearest centre",
                               "lower"),
    "kmeans_test_loss_random_init": Metric("Test k-means loss, random initialisation (not graded)",
                                           "mean squared distance to the nearest centre", "lower"),
    "autoencoder_test_mse": Metric("Autoencoder test reconstruction error", "mean squared error per pixel", "lower"),
    "autoencoder_training": Metric("Training of your autoencoder", kind="note"),
}


# ---- scoring ------------------------------------------------------------------------------------------

# The student's components each model-level metric runs (the metrics themselves are computed with
# the reference's code): only their mistakes are named as likely causes.
DEPENDS_ON = {"kmeans": ("distances", "assign", "minibatch_update", "init_centres"),
              "autoencoder": ("autoencoder", "reconstruction_loss")}


def _grade(ctx, run: ModelRun, label: str, metric: str, key: str, error: str | None, diagnoses) -> None:
    s = run.settings
    if error:
        ctx.expect(False, label, error)
        return
    v = ctx.session.metrics[key]
    stu, ref = v["student"], v["reference"]
    full, zero = getattr(s, f"{metric}_full"), getattr(s, f"{metric}_zero")
    frac = relative_score(stu, ref, full, zero)
    shown = "not finite" if stu is None or not math.isfinite(stu) else f"{stu:.4g}"
    text = f"yours {shown}, reference {ref:.4g} (full marks within {full:.0%}, none beyond {zero:.0%} worse)"
    ctx.partial(frac, label, text)
    if frac >= 1.0:
        ctx.notes.append(f"{label}: {text}")
        return
    for d in diagnoses:
        ctx.notes.append(f"Diagnosis: {d}.")
    likely_causes(ctx, DEPENDS_ON[metric])


def check_model_kmeans(ctx: CheckContext) -> None:
    """k-means trained with your init_centres('per_digit') and minibatch_update: test loss."""
    run = MODEL.run(ctx)
    diagnoses = []
    c = run.extra["kmeans"].get("per_digit")
    if c is not None:
        if not np.isfinite(c[-1]).all():
            diagnoses.append("some centres became NaN or infinite during training (empty clusters?)")
        else:
            x = run.data.splits["train"][0]
            used = np.unique(ctx.ref.assign(to_torch(x.astype(np.float64), ctx.device),
                                            to_torch(c[-1], ctx.device)).cpu().numpy()).size
            if used < len(c[-1]):
                diagnoses.append(f"only {used} of {len(c[-1])} centres are the nearest to some training image")
    _grade(ctx, run, f"test k-means loss after {run.settings.kmeans_epochs} epochs (per-digit initialisation)", "kmeans",
           "kmeans_test_loss", run.errors.get("per_digit"), diagnoses)
    r = ctx.session.metrics.get("kmeans_test_loss_random_init", {})
    if r.get("student") is not None:
        yours = f"{r['student']:.4g}" if math.isfinite(r["student"]) else "not finite (NaN or infinite centres)"
        ctx.notes.append(f"With random initialisation (not graded): yours {yours}, reference {r['reference']:.4g}.")


def check_model_autoencoder(ctx: CheckContext) -> None:
    """Your ConvAutoencoder trained with your reconstruction_loss: test reconstruction MSE."""
    run = MODEL.run(ctx)
    diagnoses = []
    ae = run.extra["ae"]
    if ae:
        tl = [v for v in ae["train_loss"] if v is not None]
        if ae["stopped_because"] == "diverged":
            diagnoses.append("training diverged: the loss became NaN or infinite")
        elif len(tl) >= 2 and tl[-1] >= tl[0]:
            diagnoses.append("the training loss did not decrease")
        rec = ae["student_test_recon"]
        if np.isfinite(rec).all() and (rec.min() < -1e-6 or rec.max() > 1 + 1e-6):
            diagnoses.append(f"reconstructions range from {rec.min():.3g} to {rec.max():.3g}: the decoder should end "
                             "with a sigmoid so that pixels lie in (0, 1)")
    note_epoch_matched(ctx, run.epoch_matched)
    epochs = run.epoch_matched or run.settings.ae_epochs
    _grade(ctx, run, f"test reconstruction MSE after {epochs} epochs", "autoencoder", "autoencoder_test_mse",
           run.errors.get("ae"), diagnoses)


# ---- figures ------------------------------------------------------------------------------------------

def _rows_figure(rows: dict, path) -> Path:
    """One labelled row of 8×8 images per entry (centres as images, pixel values 0..1)."""
    from matplotlib.figure import Figure

    from grader.figures import _mosaic, _save, _show

    n = max(len(np.asarray(v).reshape(-1, 64)) for v in rows.values())
    fig = Figure(figsize=(0.6 * n + 1.2, 0.8 * len(rows)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(rows), 1))
    for ax, (label, imgs) in zip(axes, rows.items()):
        imgs = np.asarray(imgs, dtype=float).reshape(-1, 8, 8)
        _show(ax, _mosaic(imgs, 1, n, (8, 8)), 1.0)
        ax.set_ylabel(label, fontsize=7)
    return _save(fig, path)


def _confusion_figure(m: np.ndarray, path) -> Path:
    from matplotlib.figure import Figure

    from grader.figures import _save

    fig = Figure(figsize=(4.6, 4.0), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=6,
                    color="white" if v > m.max() / 2 else "black")
    ax.set_xlabel("cluster")
    ax.set_ylabel("true digit")
    ax.set_xticks(range(m.shape[1]))
    ax.set_yticks(range(m.shape[0]))
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def _curves_figure(curves: dict, ylabel: str, path, start: int = 0) -> Path:
    from matplotlib.figure import Figure

    from grader.figures import _save, draw_losses

    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    kinds = sorted({label.split(" ", 1)[1] for label in curves})
    series = []
    for label, values in curves.items():
        ours = label.startswith("yours")
        v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
        series.append({"label": label, "values": v,
                       "epochs": list(range(start, start + len(v))), "ls": "-" if ours else "--",
                       "marker": "." if ours else "", "color": f"C{kinds.index(label.split(' ', 1)[1])}",
                       "reference": not ours})
    draw_losses(ax, series, ylabel)
    return _save(fig, path)
