"""The vae assignment's model level: does the student's VAE *work* when trained on real data?

The student's `VAE`, built from their `Encoder`/`Decoder`/`MoGPrior` around the course's standard
networks, is trained in the sandbox with the course's loop (the `vae.train` harness,
grader/harnesses/vae.py). Only its loss history and best weights come back; the grader loads the
weights into the *reference* VAE and evaluates them with reference code (grader/checks/vae_evaluation.py:
test negative ELBO, importance-sampled NLL, reconstruction error, samples), so a student's wrong density
cannot flatter its own score. The reference is trained the same way once and cached. Scores are
relative to the reference, with thresholds from the rubric's [model] table. The steps common to every
assignment are grader/checks/model_level.py's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from grader import trace
from grader.history import bounded
from grader.checks import CheckContext, UNBOUNDED_S, likely_causes, note_epoch_matched, relative_score, torch_threads
from grader.checks.model_level import (InThread, ModelGradingError, ModelLevel, ModelRun, Reference, TrainingCall,
                                       checkpoint_weights, start_drawing)
from grader.metrics import Metric


@dataclass(frozen=True)
class Settings:
    data: str = "digits"
    K: int = 100  # importance samples per test image
    max_epochs: int = 50
    time_budget_s: float = 30.0
    patience: int = 5
    L: int = 16
    M: int = 256
    num_components: int = 16
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    # relative to the reference: full marks up to `*_full` worse, nothing from `*_zero` worse, linear between
    nll_full: float = 0.05
    nll_zero: float = 0.25
    elbo_full: float = 0.05
    elbo_zero: float = 0.25
    reconstruction_full: float = 0.25
    reconstruction_zero: float = 1.0
    samples_full: float = 0.15
    samples_zero: float = 1.0
    allow_checkpoint: bool = False

    def train_config(self, **changes):
        from grader.harnesses.vae import TrainConfig

        keys = ("max_epochs", "time_budget_s", "patience", "L", "M", "num_components", "lr", "batch_size", "seed")
        return TrainConfig(**{**{k: getattr(self, k) for k in keys}, **changes})


class VAEModelLevel(ModelLevel):
    name = "model"
    Settings = Settings
    reference_fields = ("max_epochs", "patience", "L", "M", "num_components", "lr", "batch_size", "seed", "K")
    code_files = ("reference/vae.py", "grader/harnesses/vae.py", "grader/checks/vae_evaluation.py",
                  "grader/checks/vae_model.py")
    student = "your VAE"

    def load_data(self, s: Settings):
        from grader.data import load_dataset

        return load_dataset(s.data)

    @staticmethod
    def _dims(s: Settings, data) -> dict:
        return dict(D=data.D, L=s.L, M=s.M, num_vals=data.num_vals, likelihood=data.likelihood,
                    num_components=s.num_components)

    def train_reference(self, ctx: CheckContext, s: Settings, data):
        from grader.checks import vae_evaluation as evaluation
        from grader.harnesses import vae as training

        cfg = s.train_config(time_budget_s=UNBOUNDED_S)
        model = training.build_vae(ctx.ref, data.D, data.num_vals, data.likelihood, cfg).to(ctx.device)
        hist = training.train_vae(model, data.x_train, data.x_val, cfg, ctx.device)
        if hist.stopped_because in ("error", "diverged"):
            raise RuntimeError(f"the reference model failed to train: {hist.message}")
        ref_model = evaluation.load_reference_model(hist.state_dict, device=ctx.device, **self._dims(s, data))
        metrics = evaluation.evaluate(ref_model, data.x_test, data.y_test, K=s.K)
        history = {k: v for k, v in hist.to_dict().items() if k != "state_dict"}
        return hist.state_dict, {"metrics": metrics, "history": history}, ref_model

    def load_reference(self, ctx: CheckContext, s: Settings, data, state: dict, meta: dict) -> Reference:
        from grader.checks import vae_evaluation as evaluation

        model = evaluation.load_reference_model(state, device=ctx.device, **self._dims(s, data))
        return Reference(meta["metrics"], meta["history"], model)

    def submitted_weights(self, ctx: CheckContext, s: Settings) -> dict | None:
        return checkpoint_weights(ctx.sandbox.scratch) if s.allow_checkpoint else None

    def training_call(self, ctx: CheckContext, s: Settings, data) -> TrainingCall:
        cfg = s.train_config()
        return TrainingCall("vae.train", dict(config=asdict(cfg), D=data.D, num_vals=data.num_vals,
                                              likelihood=data.likelihood, x_train=data.x_train.numpy(),
                                              x_val=data.x_val.numpy()),
                            timeout=min(ctx.session.remaining_s(), cfg.time_budget_s * 2 + 60))

    def train_student(self, ctx: CheckContext, s: Settings, data, run: ModelRun) -> dict:
        reply, seconds = self.run_training(ctx, self.training_call(ctx, s, data))
        hist = reply["history"] if isinstance(reply.get("history"), dict) else {}
        weights = hist.pop("state_dict", {})
        run.student_history = hist = bounded(hist)
        run.claim = self.claim(s, hist, seconds)
        if hist.get("stopped_because") == "error" and not hist.get("epochs"):
            raise ModelGradingError(f"training your VAE failed: {hist.get('message')}")
        return weights

    def evaluate(self, ctx: CheckContext, s: Settings, data, run: ModelRun, weights: dict) -> None:
        """The student's weights in the reference VAE, evaluated on one torch thread while `_draw_figures` draws
        on the other core (the numbers do not depend on the thread count: the same bits with 1 or 2; on a busy
        2-core machine one thread evaluates 2-3x faster, with half the CPU time)."""
        from grader.checks import vae_evaluation as evaluation

        try:
            model = evaluation.load_reference_model(weights, device=ctx.device, **self._dims(s, data))
        except ValueError as e:
            raise ModelGradingError(str(e)) from None
        run.extra["model"] = model
        run.extra["drawing"] = drawing = _draw_figures(ctx, run)
        try:
            with torch_threads(1):
                run.student_metrics = evaluation.evaluate(model, data.x_test, data.y_test, K=s.K)
                run.extra["samples_score"] = _samples_plausibility(run.reference.model, model, data)
            trace.mark("model level: evaluation computed (the figures may still be drawing)")
        finally:
            if drawing is not None:
                drawing.wait()  # (its failure is `figures`' to raise: a figure never costs marks)

    def figures(self, ctx: CheckContext, run: ModelRun) -> None:
        drawing = run.extra.get("drawing")
        if drawing is not None:
            ctx.session.figures.extend(drawing.result())

    def record(self, ctx: CheckContext, run: ModelRun) -> None:
        m, r = run.student_metrics or {}, run.reference_metrics
        ctx.session.metrics.update({
            "data": run.data.describe(), "source": run.source, "K": run.settings.K,
            "nll": {"student": m.get("nll"), "reference": r.get("nll")},
            "negative_elbo": {"student": m.get("negative_elbo"), "reference": r.get("negative_elbo")},
            "reconstruction_mse": {"student": m.get("reconstruction_mse"), "reference": r.get("reconstruction_mse")},
            "samples_negative_elbo": run.extra.get("samples_score") or {},
            "per_class_loglik": {"student": m.get("per_class_loglik"), "reference": r.get("per_class_loglik")},
            "posterior_collapse": {"student": m.get("posterior_collapse"), "reference": r.get("posterior_collapse")},
            "training": {k: run.student_history.get(k) for k in ("stopped_because", "best_epoch", "seconds", "message")},
        })


MODEL = VAEModelLevel()


def settings(ctx_or_rubric, session=None) -> Settings:
    rubric = getattr(ctx_or_rubric, "rubric", ctx_or_rubric)
    session = session or getattr(ctx_or_rubric, "session", None)
    return MODEL.settings(rubric, session)


def preflight(rubric, session, selected) -> None:
    MODEL.preflight(rubric, session, selected)


def model_run(ctx: CheckContext) -> ModelRun:
    return MODEL.run(ctx)


def train_ahead(ctx: CheckContext) -> bool:
    return MODEL.train_ahead(ctx)


def _draw_figures(ctx: CheckContext, run: ModelRun) -> InThread | None:
    """Start drawing the report's figures of the student's model (None: no figures folder). What they show is
    computed here, before the evaluation, with torch (seeded samples use torch's global generator, which must
    not be shared with a thread); the drawing (`start_drawing`: the report worker, or a thread) only draws:
    [{"path", "caption", "tag"}] in the report's order."""
    folder = ctx.session.figures_dir
    if folder is None:
        return None
    from grader.checks import vae_evaluation as evaluation

    model, data = run.extra["model"], run.data
    x16 = data.x_test[:16]
    try:
        real = x16.numpy().reshape((16,) + data.image_shape)
        recon = evaluation.reconstructions(model, x16, data.image_shape)
        drawn = evaluation.samples(model, n=16, seed=0, image_shape=data.image_shape)
        means, labels = evaluation.encode_means(model, data.x_test), data.y_test.numpy()
    except Exception as e:  # raised by `result()`, where the figures are collected
        return InThread(error=e)
    plan = [
        {"kind": "loss_curves", "file": "loss_curves.png",
         "kwargs": {"student_hist": run.student_history, "reference_hist": run.reference_history}},
        {"kind": "image_grid", "file": "reconstructions.png",
         "kwargs": {"real": real, "recon": recon, "image_shape": data.image_shape}},
        {"kind": "sample_grid", "file": "samples.png", "kwargs": {"samples": drawn, "image_shape": data.image_shape}},
        {"kind": "latent_projection", "file": "latents.png", "kwargs": {"mu": means, "labels": labels}},
    ]
    captions = [
        ("Training (dashed) and validation (solid) negative ELBO per epoch: your model and the reference.", "model.elbo"),
        ("16 test images (top) and their reconstructions by your model (bottom).", "model.reconstruction"),
        ("16 samples from your model's prior, decoded (mean of p(x|z)).", "model.samples"),
        ("Posterior means of the test images, projected to 2-D (PCA), coloured by digit.", "model"),
    ]

    def listed(paths) -> list[dict]:
        return [{"path": f"figures/{Path(path).name}", "caption": caption, "tag": tag}
                for path, (caption, tag) in zip(paths, captions)]

    return start_drawing(folder, plan, listed)


@torch.no_grad()
def _samples_plausibility(ref_model, model, data, n: int = 256) -> dict:
    """Negative ELBO, under the trained reference model, of n draws from each model: samples that
    look like data score close to the reference's own samples."""
    from grader.checks import vae_evaluation as evaluation

    def score(m):
        x = evaluation.samples(m, n=n, seed=1, kind="sample")
        x = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(n, -1))
        return evaluation.negative_elbo(ref_model, x, seed=2)

    return {"student": score(model), "reference": score(ref_model)}


# How the numbers recorded above are shown in the report (grader/metrics.py).
METRICS = {
    "nll": Metric("Test negative log-likelihood", "nats per image", "lower",
                  note="importance-sampled with K samples per image"),
    "negative_elbo": Metric("Test negative ELBO", "nats per image", "lower"),
    "reconstruction_mse": Metric("Test reconstruction error", "mean squared error per pixel", "lower",
                                 note="decoder mean at z = mu"),
    "samples_negative_elbo": Metric("Quality of 256 samples", "negative ELBO under the reference model, nats", "lower"),
    "per_class_loglik": Metric("Test log-likelihood per digit", "nats per image", "higher", kind="per_class",
                               class_label="digit"),
    "posterior_collapse": Metric("Information in the latent code", "KL(q(z|x) ‖ p(z)), nats per latent dimension",
                                 note="near 0: the decoder ignores z (posterior collapse)"),
    "K": Metric("Importance samples per test image (K)", kind="note"),
    "training": Metric("Training of your model", kind="note"),
}


# ---- scoring --------------------------------------------------------------------------------------

def _diagnoses(run: ModelRun) -> list[str]:
    out = []
    h, m, r = run.student_history, run.student_metrics or {}, run.reference_metrics
    if h.get("stopped_because") == "diverged":
        out.append(f"training diverged: {h.get('message') or 'the loss became NaN or infinite'} "
                   "(check log-densities for log(0) and exp overflow)")
    elif h.get("stopped_because") == "error":
        out.append(f"training stopped with an error: {h.get('message')}")
    val = [v for v in h.get("val_loss", []) if v is not None and math.isfinite(v)]
    if len(val) >= 3 and val[-1] > min(val) * 1.05 and val[0] > 0 and val[-1] > val[0]:
        out.append("the validation loss rose during training: the optimiser made the model worse "
                   "(check the sign of each term of the loss and that gradients reach mu and log_var)")
    kl, ref_kl = m.get("posterior_collapse", math.nan), r.get("posterior_collapse", math.nan)
    if m and math.isfinite(kl) and math.isfinite(ref_kl) and kl < max(0.01, 0.2 * ref_kl):
        out.append(f"posterior collapse: KL(q(z|x) ‖ p(z)) is {kl:.3g} nats per latent dimension against the "
                   f"reference's {ref_kl:.3g}: the decoder largely ignores z (reconstructions look alike)")
    return out


def depends_on(metric: str, run: ModelRun) -> tuple[str, ...]:
    """The student's components a metric depends on: those the course loop trains with (the data's
    likelihood only), plus the prior's sampler for the samples metric. Metrics are computed with
    the reference's code, so its other components are not causes."""
    likelihood = {"bernoulli": "log_bernoulli", "categorical": "log_categorical"}.get(
        str(getattr(run.data, "likelihood", "")), None)
    trained = ("log_normal_diag", "reparameterization", "encoder", "decoder", "mog_prior.log_prob", "elbo")
    likelihoods = (likelihood,) if likelihood else ("log_bernoulli", "log_categorical")
    return trained + likelihoods + (("mog_prior.sample",) if metric == "samples" else ())


def _grade_metric(ctx: CheckContext, metric: str, label: str, unit: str) -> None:
    run = model_run(ctx)
    if run.error:
        ctx.expect(False, label, run.error)
        # a crash in training often surfaces in the composite (VAE.forward) while its cause is upstream
        likely_causes(ctx, depends_on(metric, run))
        return
    s = run.settings
    key = {"nll": "nll", "elbo": "negative_elbo", "reconstruction": "reconstruction_mse"}.get(metric)
    if metric == "samples":
        student, reference = run.extra["samples_score"].get("student"), run.extra["samples_score"].get("reference")
    else:
        student, reference = run.student_metrics.get(key), run.reference_metrics.get(key)
    full, zero = getattr(s, f"{metric}_full"), getattr(s, f"{metric}_zero")
    frac = relative_score(student, reference, full, zero)
    text = (f"yours {student:.4g}{unit}, reference {reference:.4g}{unit} "
            f"(full marks within {full:.0%}, none beyond {zero:.0%} worse)")
    ctx.partial(frac, label, text)
    if run.source == "checkpoint":
        ctx.notes.append("Evaluated from your submitted checkpoint (not retrained).")
    note_epoch_matched(ctx, run.epoch_matched)
    if frac >= 1.0:
        ctx.notes.append(f"{label}: {text}")
        return
    for d in _diagnoses(run):
        ctx.notes.append(f"Diagnosis: {d}.")
    likely_causes(ctx, depends_on(metric, run))


def check_model_nll(ctx: CheckContext) -> None:
    """Test negative log-likelihood, importance-sampled with K samples per image."""
    _grade_metric(ctx, "nll", f"test NLL (importance sampling, K={settings(ctx).K})", " nats")


def check_model_elbo(ctx: CheckContext) -> None:
    _grade_metric(ctx, "elbo", "test negative ELBO", " nats")


def check_model_reconstruction(ctx: CheckContext) -> None:
    _grade_metric(ctx, "reconstruction", "test reconstruction error (MSE at z = mu)", "")


def check_model_samples(ctx: CheckContext) -> None:
    _grade_metric(ctx, "samples", "negative ELBO of 256 samples under the trained reference model", " nats")
