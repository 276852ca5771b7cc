"""Model-level checks: does the student's VAE *work* when trained on real data?

The student's `VAE`, built from their `Encoder`/`Decoder`/`MoGPrior` around the course's standard
networks, is trained in the sandbox with the reference training loop (`grader.training`). Only its
loss history and best weights come back; the grader loads the weights into the *reference* VAE and
evaluates them with reference code (test negative ELBO, importance-sampled NLL, reconstruction
error, samples), so a student's wrong density cannot flatter its own score. The reference model is
trained the same way once and cached (`grader.model_cache`). Scores are relative to the reference,
with thresholds from the rubric's [model] table.

One training run serves all `model.*` checks of a submission (`ctx.session.cache`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from grader.checks import (
    CheckContext, UNBOUNDED_S, likely_causes, model_settings, note_epoch_matched, reference_at_students_epochs,
    relative_score,
)
from grader.metrics import Metric
from grader.sandbox.errors import StudentCodeError

DEFAULTS = {
    "data": "digits",
    "K": 100,  # importance samples per test image
    "max_epochs": 50, "time_budget_s": 30.0, "patience": 5, "L": 16, "M": 256, "num_components": 16,
    "lr": 1e-3, "batch_size": 64, "seed": 0,
    # relative to the reference: full marks up to `*_full` worse, nothing from `*_zero` worse, linear between
    "nll_full": 0.05, "nll_zero": 0.25,
    "elbo_full": 0.05, "elbo_zero": 0.25,
    "reconstruction_full": 0.25, "reconstruction_zero": 1.0,
    "samples_full": 0.15, "samples_zero": 1.0,
    "allow_checkpoint": False,
}
MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024  # a VAE for these data sets is a few MB


def _bounded_checkpoint(path: Path) -> None:
    """Refuse a checkpoint whose loading could allocate more than MAX_CHECKPOINT_BYTES in the
    grader: too large a file, or a torch zip archive with compressed (or lying) entries, or the
    legacy non-zip format (its tensor sizes are declared, not stored). Raises ModelGradingError."""
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ModelGradingError(f"the checkpoint {path.name} could not be loaded safely: it is {size / 2**20:.0f} MiB, "
                                f"over the {MAX_CHECKPOINT_BYTES >> 20} MiB limit")
    if path.suffix != ".pt":
        return  # safetensors checks its header's offsets against the file's length before reading
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ModelGradingError(f"the checkpoint {path.name} could not be loaded safely: it is not a torch.save() "
                                "zip archive (the legacy format is refused)") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > size:
        raise ModelGradingError(f"the checkpoint {path.name} could not be loaded safely: it holds compressed "
                                "entries (torch.save() never writes those, and their unpacked size is unbounded)")


TRAIN_KEYS = {"max_epochs", "time_budget_s", "patience", "L", "M", "num_components", "lr", "batch_size", "seed"}


class ModelGradingError(Exception):
    """The student's model could not be trained or evaluated; the message says why."""


@dataclass
class ModelRun:
    settings: dict
    data: object
    reference_metrics: dict
    reference_history: dict
    student_metrics: dict | None = None
    student_history: dict = field(default_factory=dict)
    error: str = ""
    source: str = "trained"  # or "checkpoint"
    samples_score: dict = field(default_factory=dict)
    student_error: "StudentCodeError | None" = None  # the student's code raised while building or training
    epoch_matched: int = 0  # >0: the reference was trained for this many epochs, as the student's run reached


def settings(ctx_or_rubric, session=None) -> dict:
    rubric = getattr(ctx_or_rubric, "rubric", ctx_or_rubric)
    session = session or getattr(ctx_or_rubric, "session", None)
    return model_settings(rubric, session, DEFAULTS)


def preflight(rubric, session) -> None:
    """Called by the engine before grading when model checks are selected: fail early on bad data."""
    from grader.data import load_dataset

    load_dataset(settings(rubric, session)["data"])


def _train_config(s: dict):
    from grader.training import TrainConfig

    return TrainConfig(**{k: s[k] for k in TRAIN_KEYS})


def _reference(ctx: CheckContext, s: dict, data) -> tuple[dict, dict, object]:
    """(metrics, history, model) of the reference, from the cache or trained now."""
    from grader import evaluation, model_cache, training

    # the reference is never cut by wall-clock time: how far it trains must not depend on the load of
    # the machine that first filled the cache (a student's run cut by the budget is matched to epochs)
    cfg = _train_config(dict(s, time_budget_s=UNBOUNDED_S))
    key = model_cache.cache_key({"assignment": ctx.rubric.id, "data": data.summary(), "config": dataclasses.asdict(cfg),
                                 "K": s["K"], "device": ctx.device.type})
    hit = model_cache.load(key)
    dims = dict(D=data.D, L=cfg.L, M=cfg.M, num_vals=data.num_vals, likelihood=data.likelihood, num_components=cfg.num_components)
    if hit is None:
        model = training.build_vae(ctx.ref, data.D, data.num_vals, data.likelihood, cfg).to(ctx.device)
        hist = training.train_vae(model, data.x_train, data.x_val, cfg, ctx.device)
        if hist.stopped_because in ("error", "diverged"):
            raise RuntimeError(f"the reference model failed to train: {hist.message}")
        ref_model = evaluation.load_reference_model(hist.state_dict, device=ctx.device, **dims)
        metrics = evaluation.evaluate(ref_model, data.x_test, data.y_test, K=s["K"])
        history = {k: v for k, v in hist.to_dict().items() if k != "state_dict"}
        model_cache.store(key, hist.state_dict, {"metrics": metrics, "history": history})
        ctx.session.metrics["reference_cache"] = "trained now"
        return metrics, history, ref_model
    ctx.session.metrics["reference_cache"] = "reused"
    ref_model = evaluation.load_reference_model(hit["state_dict"], device=ctx.device, **dims)
    return hit["meta"]["metrics"], hit["meta"]["history"], ref_model


def _checkpoint_weights(ctx: CheckContext, s: dict) -> dict | None:
    """The student's submitted weights, if the rubric allows a checkpoint and one is there."""
    if not s["allow_checkpoint"]:
        return None
    folder = ctx.sandbox.scratch  # the sandbox's copy: regular files only, no links
    st = folder / "model.safetensors"
    pt = folder / "model.pt"
    try:
        if st.is_file():
            _bounded_checkpoint(st)
            from safetensors.numpy import load_file

            return dict(load_file(str(st)))
        if pt.is_file():
            _bounded_checkpoint(pt)
            obj = torch.load(pt, map_location="cpu", weights_only=True)  # never unpickles code
            if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
                obj = obj["state_dict"]
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise ModelGradingError(f"{pt.name} must hold a state_dict (a dict of tensors), found {type(obj).__name__}")
            return {k: v.detach().float().cpu().numpy() for k, v in obj.items()}
    except ModelGradingError:
        raise
    except Exception as e:
        name = st.name if st.is_file() else pt.name
        raise ModelGradingError(f"the checkpoint {name} could not be loaded safely ({type(e).__name__}: {e}). "
                                "Save it with torch.save(model.state_dict(), 'model.pt') or safetensors; "
                                "pickled objects other than tensors are refused.") from None
    return None


def model_run(ctx: CheckContext) -> ModelRun:
    if "model" in ctx.session.cache:
        run = ctx.session.cache["model"]
        if run.student_error is not None:  # the student's code failed: every model check says so, not just the first
            raise run.student_error
        return run
    from grader import evaluation
    from grader.data import load_dataset

    s = settings(ctx)
    data = load_dataset(s["data"])
    ref_metrics, ref_history, ref_model = _reference(ctx, s, data)
    run = ModelRun(settings=s, data=data, reference_metrics=ref_metrics, reference_history=ref_history)
    ctx.session.cache["model"] = run
    cfg = _train_config(s)
    dims = dict(D=data.D, L=cfg.L, M=cfg.M, num_vals=data.num_vals, likelihood=data.likelihood, num_components=cfg.num_components)
    try:
        weights = _checkpoint_weights(ctx, s)
        if weights is not None:
            run.source = "checkpoint"
        else:
            budget = min(ctx.session.remaining_s(), cfg.time_budget_s * 2 + 60)
            reply = ctx.sandbox.request({
                "op": "train", "config": dataclasses.asdict(cfg), "D": data.D, "num_vals": data.num_vals,
                "likelihood": data.likelihood, "x_train": data.x_train.numpy(), "x_val": data.x_val.numpy(),
            }, timeout=budget)
            hist = reply["history"]
            weights = hist.pop("state_dict", {})
            run.student_history = hist
            if hist.get("stopped_because") == "error" and not hist.get("epochs"):
                raise ModelGradingError(f"training your VAE failed: {hist.get('message')}")
        ref_model = _reference_at_students_epochs(ctx, run, s, data) or ref_model
        try:
            model = evaluation.load_reference_model(weights, device=ctx.device, **dims)
        except ValueError as e:
            raise ModelGradingError(str(e)) from None
        run.student_metrics = evaluation.evaluate(model, data.x_test, data.y_test, K=s["K"])
        run.samples_score = _samples_plausibility(ref_model, model, data)
        _figures(ctx, run, model, data)
    except ModelGradingError as e:
        run.error = str(e)
    except StudentCodeError as e:
        run.student_error = e
        _record_metrics(ctx, run)
        raise
    _record_metrics(ctx, run)
    return run


def _reference_at_students_epochs(ctx: CheckContext, run: ModelRun, s: dict, data):
    """When the student's training stopped at the time budget after fewer epochs than the reference
    trained, the reference trained for that many epochs instead (cached like the other; no time budget):
    how far training gets in the budget depends on the machine's load and the code's speed, neither of
    which is a mistake in the maths, so a correct model must not lose points for it. Returns that
    reference model (and updates `run`'s reference metrics and history), or None when not needed."""
    hist = run.student_history or {}
    done = len(hist.get("epochs") or [])
    if hist.get("stopped_because") != "time_budget" or not done:
        return None
    if done >= len((run.reference_history or {}).get("epochs") or []):
        return None
    run.reference_metrics, run.reference_history, ref_model = reference_at_students_epochs(
        ctx, lambda: _reference(ctx, dict(s, max_epochs=done), data))
    run.epoch_matched = done
    return ref_model


@torch.no_grad()
def _samples_plausibility(ref_model, model, data, n: int = 256) -> dict:
    """Negative ELBO, under the trained reference model, of n draws from each model: samples that
    look like data score close to the reference's own samples."""
    from grader import evaluation

    def score(m):
        x = evaluation.samples(m, n=n, seed=1, kind="sample")
        x = torch.as_tensor(np.asarray(x, dtype=np.float32).reshape(n, -1))
        return evaluation.negative_elbo(ref_model, x, seed=2)

    return {"student": score(model), "reference": score(ref_model)}


def _figures(ctx: CheckContext, run: ModelRun, model, data) -> None:
    folder = ctx.session.figures_dir
    if folder is None:
        return
    from grader import evaluation, figures

    folder.mkdir(parents=True, exist_ok=True)
    x16, y16 = data.x_test[:16], data.y_test[:16]
    made = [
        (figures.loss_curves(run.student_history, run.reference_history, folder / "loss_curves.png"),
         "Training (dashed) and validation (solid) negative ELBO per epoch: your model and the reference.", "model.elbo"),
        (figures.image_grid(x16.numpy().reshape((16,) + data.image_shape), evaluation.reconstructions(model, x16, data.image_shape),
                            folder / "reconstructions.png", data.image_shape),
         "16 test images (top) and their reconstructions by your model (bottom).", "model.reconstruction"),
        (figures.sample_grid(evaluation.samples(model, n=16, seed=0, image_shape=data.image_shape), folder / "samples.png",
                             data.image_shape),
         "16 samples from your model's prior, decoded (mean of p(x|z)).", "model.samples"),
        (figures.latent_projection(evaluation.encode_means(model, data.x_test), data.y_test.numpy(), folder / "latents.png"),
         "Posterior means of the test images, projected to 2-D (PCA), coloured by digit.", "model"),
    ]
    for path, caption, tag in made:
        ctx.session.figures.append({"path": f"figures/{Path(path).name}", "caption": caption, "tag": tag})


# How the numbers recorded below are shown in the report (grader/metrics.py).
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


def _record_metrics(ctx: CheckContext, run: ModelRun) -> None:
    m, r = run.student_metrics or {}, run.reference_metrics
    ctx.session.metrics.update({
        "data": run.data.describe(), "source": run.source, "K": run.settings["K"],
        "nll": {"student": m.get("nll"), "reference": r.get("nll")},
        "negative_elbo": {"student": m.get("negative_elbo"), "reference": r.get("negative_elbo")},
        "reconstruction_mse": {"student": m.get("reconstruction_mse"), "reference": r.get("reconstruction_mse")},
        "samples_negative_elbo": run.samples_score or {},
        "per_class_loglik": {"student": m.get("per_class_loglik"), "reference": r.get("per_class_loglik")},
        "posterior_collapse": {"student": m.get("posterior_collapse"), "reference": r.get("posterior_collapse")},
        "training": {k: run.student_history.get(k) for k in ("stopped_because", "best_epoch", "seconds", "message")},
    })


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
        student, reference = run.samples_score.get("student"), run.samples_score.get("reference")
    else:
        student, reference = run.student_metrics.get(key), run.reference_metrics.get(key)
    frac = relative_score(student, reference, s[f"{metric}_full"], s[f"{metric}_zero"])
    text = (f"yours {student:.4g}{unit}, reference {reference:.4g}{unit} "
            f"(full marks within {s[f'{metric}_full']:.0%}, none beyond {s[f'{metric}_zero']:.0%} worse)")
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
    _grade_metric(ctx, "nll", f"test NLL (importance sampling, K={settings(ctx)['K']})", " nats")


def check_model_elbo(ctx: CheckContext) -> None:
    _grade_metric(ctx, "elbo", "test negative ELBO", " nats")


def check_model_reconstruction(ctx: CheckContext) -> None:
    _grade_metric(ctx, "reconstruction", "test reconstruction error (MSE at z = mu)", "")


def check_model_samples(ctx: CheckContext) -> None:
    _grade_metric(ctx, "samples", "negative ELBO of 256 samples under the trained reference model", " nats")
