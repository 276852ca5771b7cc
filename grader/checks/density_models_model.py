"""The `density-models` assignment's model level: the student's PPCA, EM and conv VAE fitted on digits.

Three small subclasses of `grader.checks.model_level.ModelLevel` that share one Settings (the rubric's [model]
table) and one data set (train and validation digits together, scaled to [0, 1]); the framework does the
settings, the cached reference, the timed training call and epoch matching. Each model is its own run:

    PPCA      the student's `fit_ppca` called in the sandbox on the training digits; the reference's fit is
              computed here (closed form, cheap: not cached)
    GMM       the student's `gmm_em_step` iterated by the course's loop (grader/harnesses/density_models.py
              `run_em`) from the grader's start; a slow EM stopped by its time budget is compared with the
              reference after as many steps
    conv VAE  the student's `ConvVAE` trained by the course's loop (`train_conv_vae`); its weights are loaded
              into the reference's ConvVAE and evaluated here

Only arrays come back from the sandbox; every metric is computed with reference code. The report shows one
comparison table (test log-likelihood and reconstruction MSE of each model, the student's and the reference's)
and figures (the comparison, latent spaces, a latent grid, reconstructions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from grader import glossary
from grader.history import bounded
from grader.checks import CheckContext, UNBOUNDED_S, note_epoch_matched, relative_score, sequence, tensor, timed_call
from grader.checks.model_level import ModelGradingError, ModelLevel, ModelRun, Reference
from grader.metrics import Metric


@dataclass(frozen=True)
class Settings:
    data: str = "digits"
    latent_dim: int = 2
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    time_budget_s: float = 20.0
    seed: int = 0
    elbo_samples: int = 8
    ppca_q: int = 2
    gmm_components: int = 8
    gmm_iterations: int = 15
    gmm_reg: float = 1e-2
    gmm_time_budget_s: float = 30.0
    # relative to the reference: full marks up to `*_full` worse, nothing from `*_zero` worse, linear between
    elbo_full: float = 0.05
    elbo_zero: float = 0.25
    reconstruction_full: float = 0.25
    reconstruction_zero: float = 1.0
    ppca_full: float = 0.01
    ppca_zero: float = 0.10
    gmm_full: float = 0.02
    gmm_zero: float = 0.20


TRAIN_KEYS = ("latent_dim", "epochs", "batch_size", "lr", "time_budget_s", "seed")  # the conv VAE's loop


@dataclass
class Data:
    x_train: np.ndarray  # N×D float64 in [0, 1] (the data set's training and validation images)
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple
    text: str  # the exact record (cache keys)
    words: str = ""  # the same for a student (the report's "Data set" line)

    def summary(self) -> str:
        return self.text


_DATA: dict = {}


def load_data(s: Settings) -> Data:
    """The data set named by `s.data`, scaled to [0, 1]; ValueError unless its images are square with a side
    divisible by 4 (the conv VAE halves it twice)."""
    if s.data not in _DATA:
        from grader.data import load_dataset

        ds = load_dataset(s.data)
        h, w = ds.image_shape
        if h != w or h % 4:
            raise ValueError(f"data set {s.data!r}: images must be square with a side divisible by 4, got {ds.image_shape}")
        scale = float(ds.num_vals - 1)
        x_train = np.concatenate([ds.x_train.numpy(), ds.x_val.numpy()]).astype(np.float64) / scale
        _DATA[s.data] = Data(x_train, ds.x_test.numpy().astype(np.float64) / scale, ds.y_test.numpy(),
                             tuple(ds.image_shape), ds.summary() + f", scaled to [0, 1] (÷{scale:g})",
                             # no likelihood named: grey values in [0, 1] (the conv VAE reads them as Bernoulli
                             # means, PPCA and the GMM as Gaussian data), not the digits' categorical pixels
                             glossary.data_description(ds.name, len(x_train), 0, len(ds.x_test), ds.image_shape,
                                                       ds.num_vals) + ", scaled to [0, 1]")
    return _DATA[s.data]


def _as_error(e: Exception) -> ModelGradingError:
    """A student crash, timeout or unusable reply: graded 0 with the reason (never a crashed check)."""
    return e if isinstance(e, ModelGradingError) else ModelGradingError(f"{type(e).__name__}: {getattr(e, 'message', e)}")


class _DensityModel(ModelLevel):
    """What the three models share: settings, data, the comparison table and figure."""

    Settings = Settings
    code_files = ("reference/density_models.py", "grader/harnesses/density_models.py",
                  "grader/checks/density_models_model.py")
    part: str  # the comparison table's key: "conv_vae", "ppca" or "gmm"

    def load_data(self, s: Settings) -> Data:
        return load_data(s)

    def labels(self, s: Settings) -> dict:
        """How the table names this model's log-likelihood column."""
        return {"log_likelihood": "exact test log-likelihood per example"}

    def record(self, ctx: CheckContext, run: ModelRun) -> None:
        """This model's rows of the comparison table (student and reference) in the metrics, and the figure."""
        comp = ctx.session.cache.setdefault("comparison", {})
        comp[self.part] = {"student": run.student_metrics, "reference": run.reference_metrics,
                           "error": run.error or None, **self.labels(run.settings)}
        ctx.session.metrics["data"] = run.data.words
        for metric in METRIC_NAMES:
            ctx.session.metrics[comparison_key(self.part, metric)] = {
                "student": (run.student_metrics or {}).get(metric), "reference": run.reference_metrics.get(metric)}
        _comparison_figure(ctx)


# ---- PPCA ----------------------------------------------------------------------------------------------

def _ppca_metrics(ref, X, W, mu, s2) -> dict:
    ll = ref.ppca_log_likelihood(X, W, mu, s2)
    rec = ref.ppca_reconstruct(X, W, mu, s2)
    return {"log_likelihood": float(ll.mean()), "reconstruction_mse": float(((rec - X) ** 2).mean()),
            "sigma2": float(s2)}


class PPCAModel(_DensityModel):
    name = "density_models.ppca"
    part = "ppca"
    student = "your PPCA"

    def reference(self, ctx: CheckContext, s: Settings, data: Data) -> Reference:
        """Closed form and cheap: fitted now, not cached; its "model" is the test images' posterior means."""
        ref = ctx.ref
        Xtr, Xte = (torch.from_numpy(a).to(ctx.device) for a in (data.x_train, data.x_test))
        with torch.no_grad():
            rw, rmu, rs2 = ref.fit_ppca(Xtr, s.ppca_q)
            return Reference(_ppca_metrics(ref, Xte, rw, rmu, rs2), {},
                             ref.ppca_posterior_mean(Xte, rw, rmu, rs2).cpu().numpy())

    def train_student(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun) -> dict:
        try:
            reply = ctx.call("fit_ppca", data.x_train, s.ppca_q)["result"]
            W, mu, s2 = (tensor(v, "fit_ppca") for v in sequence(reply, "fit_ppca", 3))
        except Exception as e:
            raise _as_error(e) from None
        D = data.x_train.shape[1]
        if W.shape != (D, s.ppca_q) or mu.shape != (D,) or s2.size != 1:
            raise ModelGradingError(f"fit_ppca returned W {W.shape}, mu {mu.shape}, sigma2 {s2.shape}")
        return {"W": W, "mu": mu, "sigma2": s2.reshape(())}

    def evaluate(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun, weights: dict) -> None:
        ref = ctx.ref
        W, mu, s2 = (torch.from_numpy(np.asarray(weights[k], dtype=np.float64)).to(ctx.device)
                     for k in ("W", "mu", "sigma2"))
        if not (torch.isfinite(W).all() and torch.isfinite(mu).all()):
            raise ModelGradingError("fit_ppca returned non-finite values in W or mu")
        if not float(s2) > 0:
            raise ModelGradingError(f"fit_ppca returned sigma2 = {float(s2):.3g}, not a positive variance, so the model "
                                    "covariance W Wᵀ + sigma2·I is singular (several digit pixels never vary: the "
                                    "smallest eigenvalues of S are 0)")
        Xte = torch.from_numpy(data.x_test).to(ctx.device)
        try:
            with torch.no_grad():
                run.student_metrics = _ppca_metrics(ref, Xte, W, mu, s2)
                run.extra["latents"] = ref.ppca_posterior_mean(Xte, W, mu, s2).cpu().numpy()
                run.extra["recon"] = ref.ppca_reconstruct(Xte[:16], W, mu, s2).cpu().numpy()
        except Exception as e:  # e.g. a covariance that is not positive definite
            raise _as_error(e) from None


# ---- GMM -----------------------------------------------------------------------------------------------

def _gmm_init(s: Settings, X: np.ndarray):
    """The EM's start (the student's and the reference's): K training points as means, the data's variances."""
    rng = np.random.default_rng(s.seed)
    K, D = s.gmm_components, X.shape[1]
    means = X[rng.choice(len(X), K, replace=False)]
    covs = np.stack([np.diag(X.var(axis=0)) + 0.05 * np.eye(D)] * K)
    return np.full(K, 1.0 / K), means, covs


def _gmm_metrics(ref, Xte, params: dict, device) -> dict:
    w, m, c = (torch.as_tensor(np.asarray(params[k], dtype=np.float64)).to(device) for k in ("weights", "means", "covs"))
    K, D = m.shape
    if w.shape != (K,) or c.shape != (K, D, D):
        raise ModelGradingError(f"EM returned weights {tuple(w.shape)}, means {tuple(m.shape)}, covs {tuple(c.shape)}")
    if not (torch.isfinite(w).all() and torch.isfinite(m).all() and torch.isfinite(c).all()):
        raise ModelGradingError("EM produced non-finite parameters")
    if abs(float(w.sum()) - 1.0) > 1e-6 or float(w.min()) < 0:
        raise ModelGradingError(f"EM produced mixing weights that do not sum to 1 (sum {float(w.sum()):.4g})")
    with torch.no_grad():
        ll = ref.gmm_log_likelihood(Xte, w, m, c)
        best = (torch.log(w) + ref._log_gaussians(Xte, m, c)).argmax(dim=1)
        mse = float(((m[best] - Xte) ** 2).mean())
    return {"log_likelihood": float(ll.mean()), "reconstruction_mse": mse}


class GMMModel(_DensityModel):
    name = "density_models.gmm"
    part = "gmm"
    epochs_field = "gmm_iterations"  # EM steps
    budget_field = "gmm_time_budget_s"
    reference_fields = ("gmm_components", "gmm_iterations", "gmm_reg", "seed")

    def labels(self, s: Settings) -> dict:
        return {"log_likelihood": f"exact test log-likelihood per example after {s.gmm_iterations} EM steps"}

    def train_reference(self, ctx: CheckContext, s: Settings, data: Data):
        from grader.harnesses import density_models as harness

        t = lambda a: torch.from_numpy(a).to(ctx.device)  # noqa: E731
        start = _gmm_init(s, data.x_train)
        out = harness.run_em(ctx.ref, ctx.device, X=t(data.x_train), weights=t(start[0]), means=t(start[1]),
                             covs=t(start[2]), iterations=s.gmm_iterations, reg=s.gmm_reg)
        params = {k: out[k] for k in ("weights", "means", "covs")}
        metrics = _gmm_metrics(ctx.ref, t(data.x_test), params, ctx.device)
        return params, {"metrics": metrics, "history": {"epochs": out["iterations"]}}, params

    def load_reference(self, ctx: CheckContext, s: Settings, data: Data, state: dict, meta: dict) -> Reference:
        return Reference(meta["metrics"], meta["history"], state)

    def train_student(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun) -> dict:
        start = run.extra["start"] = _gmm_init(s, data.x_train)
        budget = float(s.gmm_time_budget_s)
        try:
            out, seconds = timed_call(
                ctx.harness, "density_models.run_em", X=data.x_train, weights=start[0], means=start[1], covs=start[2],
                iterations=s.gmm_iterations, reg=s.gmm_reg, time_budget_s=budget,
                timeout=max(1.0, min(ctx.session.remaining_s(), budget * 2 + 30)))
            if out.get("error"):
                raise ModelGradingError(f"your EM failed at iteration {out.get('iteration')}: {out['error']}")
            steps = out.get("iterations", s.gmm_iterations)
        except Exception as e:
            raise _as_error(e) from None
        steps = steps if isinstance(steps, int) and not isinstance(steps, bool) else int(s.gmm_iterations)
        # fewer steps than asked is the loop's time-budget stop (run_em): believed only when measured here
        run.student_history = {"epochs": steps, "seconds": out.get("seconds", 0),
                               "stopped_because": "time_budget" if steps < s.gmm_iterations else "max_epochs"}
        run.claim = self.claim(s, run.student_history, seconds, what="your EM")
        return out

    def evaluate(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun, out: dict) -> None:
        ref, start = ctx.ref, run.extra["start"]
        try:
            run.student_metrics = _gmm_metrics(ref, torch.from_numpy(data.x_test).to(ctx.device), out, ctx.device)
            Xtr = torch.from_numpy(data.x_train).to(ctx.device)
            with torch.no_grad():
                before = float(ref.gmm_log_likelihood(Xtr, *(torch.from_numpy(a).to(ctx.device) for a in start)).mean())
                after = float(ref.gmm_log_likelihood(Xtr, *(torch.from_numpy(np.asarray(out[k])).to(ctx.device)
                                                               for k in ("weights", "means", "covs"))).mean())
        except Exception as e:
            raise _as_error(e) from None
        run.extra["train_log_likelihood"] = (before, after)


# ---- conv VAE ------------------------------------------------------------------------------------------

def _train_kwargs(s: Settings, data: Data, **changes) -> dict:
    return {**{k: getattr(s, k) for k in TRAIN_KEYS}, "image_size": data.image_shape[0], **changes}


def _load_vae(ctx: CheckContext, state: dict, s: Settings, data: Data):
    model = ctx.ref.ConvVAE(s.latent_dim, data.image_shape[0]).to(ctx.device)
    try:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in state.items()})
    except (RuntimeError, TypeError, ValueError) as e:
        raise ModelGradingError("the trained weights do not fit the specified architecture (layer names and shapes "
                                f"conv1, conv2, fc_mu, fc_log_var, fc_dec, deconv1, deconv2): {str(e)[:300]}") from None
    return model.eval()


@torch.no_grad()
def _vae_metrics(ctx: CheckContext, model, data: Data, s: Settings) -> dict:
    x = torch.from_numpy(data.x_test).float().to(ctx.device).view(-1, 1, *data.image_shape)
    g = torch.Generator(device="cpu").manual_seed(1234)
    mu, log_var = model.encode(x)
    elbos = []
    for _ in range(s.elbo_samples):
        eps = torch.randn(mu.shape, generator=g).to(ctx.device)
        elbos.append(model.elbo(x, eps))
    elbo = torch.stack(elbos).mean(0)
    rec = model.decode(mu)
    kl = 0.5 * (torch.exp(log_var) + mu ** 2 - 1.0 - log_var).sum(1)
    return {"elbo": float(elbo.mean()), "negative_elbo": float(-elbo.mean()),
            "log_likelihood": float(elbo.mean()),  # a lower bound: the comparison table's column
            "reconstruction_mse": float(((rec - x) ** 2).mean()), "kl": float(kl.mean())}


class ConvVAEModel(_DensityModel):
    name = "density_models.conv_vae"
    part = "conv_vae"
    student = "your ConvVAE"
    epochs_field = "epochs"
    reference_fields = tuple(k for k in TRAIN_KEYS if k != "time_budget_s") + ("elbo_samples",)

    def labels(self, s: Settings) -> dict:
        return {"log_likelihood": "test ELBO per example (a lower bound)"}

    def train_reference(self, ctx: CheckContext, s: Settings, data: Data):
        from grader.harnesses import density_models as harness

        # never cut by wall-clock time: how far the reference trains must not depend on the machine's load
        out = harness.train_conv_vae(ctx.ref, ctx.device, x_train=torch.from_numpy(data.x_train).float().to(ctx.device),
                                     **_train_kwargs(s, data, time_budget_s=UNBOUNDED_S))
        if out.get("error"):
            raise RuntimeError(f"the reference conv VAE failed to train: {out['error']}")
        model = _load_vae(ctx, out["state_dict"], s, data)
        return out["state_dict"], {"metrics": _vae_metrics(ctx, model, data, s), "history": out["history"]}, model

    def load_reference(self, ctx: CheckContext, s: Settings, data: Data, state: dict, meta: dict) -> Reference:
        return Reference(meta["metrics"], meta["history"], _load_vae(ctx, state, s, data))

    def train_student(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun) -> dict:
        try:
            budget = min(ctx.session.remaining_s(), s.time_budget_s * 2 + 30)
            out, seconds = timed_call(ctx.harness, "density_models.train_conv_vae", x_train=data.x_train.astype(np.float32),
                                      timeout=max(1.0, budget), **_train_kwargs(s, data))
            run.student_history = bounded(out.get("history"))
            if out.get("error") and not out.get("state_dict"):
                raise ModelGradingError(f"training your ConvVAE failed: {out['error']}")
            run.claim = self.claim(s, run.student_history, seconds)
            return out["state_dict"]
        except Exception as e:  # a student crash or timeout inside the harness
            raise _as_error(e) from None

    def evaluate(self, ctx: CheckContext, s: Settings, data: Data, run: ModelRun, weights: dict) -> None:
        model = _load_vae(ctx, weights, s, data)
        try:
            run.student_metrics = _vae_metrics(ctx, model, data, s)
        except Exception as e:
            raise _as_error(e) from None
        run.extra["model"] = model

    def figures(self, ctx: CheckContext, run: ModelRun) -> None:
        _vae_figures(ctx, run.extra["model"], run.data)


PPCA, GMM, CONV_VAE = PPCAModel(), GMMModel(), ConvVAEModel()


def settings(ctx_or_rubric, session=None) -> Settings:
    rubric = getattr(ctx_or_rubric, "rubric", ctx_or_rubric)
    session = session or getattr(ctx_or_rubric, "session", None)
    return CONV_VAE.settings(rubric, session)


def preflight(rubric, session, selected=None) -> None:
    """Fail early (before the sandbox starts) on bad [model] settings or data."""
    if selected is not None and not any(spec.kind == "model" for spec in selected):
        return
    load_data(settings(rubric, session))


# ---- the comparison table (results.json metrics) and how the report shows it ---------------------------

MODEL_NAMES = {"conv_vae": "conv VAE", "ppca": "PPCA", "gmm": "GMM"}
METRIC_NAMES = {"log_likelihood": "test log-likelihood per example", "reconstruction_mse": "test reconstruction MSE"}


def comparison_key(model: str, metric: str) -> str:
    """The results.json metrics row of the comparison table, e.g. "PPCA: test reconstruction MSE"."""
    what = "test ELBO per example (a lower bound)" if (model, metric) == ("conv_vae", "log_likelihood") else METRIC_NAMES[metric]
    return f"{MODEL_NAMES[model]}: {what}"


METRICS = {
    comparison_key(model, metric): Metric(comparison_key(model, metric), unit, better)
    for model in MODEL_NAMES
    for metric, unit, better in (("log_likelihood", "nats per image", "higher"),
                                 ("reconstruction_mse", "mean squared error per pixel", "lower"))
}


# ---- figures -------------------------------------------------------------------------------------------

def _add_figure(ctx: CheckContext, path: Path, caption: str, tag: str) -> None:
    rel = f"figures/{Path(path).name}"
    if not any(f["path"] == rel for f in ctx.session.figures):
        ctx.session.figures.append({"path": rel, "caption": caption, "tag": tag})


def _comparison_figure(ctx: CheckContext) -> None:
    folder = ctx.session.figures_dir
    if folder is None:
        return
    from matplotlib.figure import Figure
    from grader import figures

    comp = ctx.session.cache.get("comparison", {})
    names = [n for n in ("conv_vae", "ppca", "gmm") if n in comp]
    fig = Figure(figsize=(7.0, 2.4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "log_likelihood", "test log-lik. / ELBO per example (higher is better)"),
                           (axes[1], "reconstruction_mse", "test reconstruction MSE (lower is better)")):
        figures.draw_bars(ax, [MODEL_NAMES[n] for n in names],
                          [{"label": "yours" if who == "student" else "reference", "color": f"C{j}",
                            "reference": who == "reference",
                            "values": [(comp[n].get(who) or {}).get(key) for n in names]}
                           for j, who in enumerate(("student", "reference"))])
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    folder.mkdir(parents=True, exist_ok=True)
    path = figures._save(fig, folder / "model_comparison.png")
    _add_figure(ctx, path, "The three density models on the test digits: your fits and the reference's (the VAE's "
                           "value is an ELBO, a lower bound; PPCA and the GMM give exact log-densities).", "model")


def _vae_figures(ctx: CheckContext, model, data: Data) -> None:
    folder = ctx.session.figures_dir
    if folder is None:
        return
    from matplotlib.figure import Figure
    from grader import figures

    folder.mkdir(parents=True, exist_ok=True)
    shape = data.image_shape
    x = torch.from_numpy(data.x_test).float().to(ctx.device).view(-1, 1, *shape)
    with torch.no_grad():
        mu, _ = model.encode(x)
        rec = model.decode(mu[:16]).cpu().numpy()
        # latent grid: Gaussian quantiles over the first two latent dimensions
        n = 10
        q = torch.tensor([NormalQuantiles.at(p) for p in np.linspace(0.05, 0.95, n)], dtype=torch.float32)
        zz = torch.zeros(n * n, model.latent_dim)
        zz[:, 0] = q.repeat(n)
        zz[:, 1 if model.latent_dim > 1 else 0] = q.repeat_interleave(n).flip(0)
        grid = model.decode(zz.to(ctx.device)).cpu().numpy()
    mu = mu.cpu().numpy()
    labels = data.y_test
    fig = Figure(figsize=(7.6, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = [(axes[0], mu[:, :2], "conv VAE: posterior means (first 2 latent dims)")]
    ppca = ctx.session.cache.get(PPCA.name)
    lat = ppca.extra.get("latents") if ppca is not None else None
    panels.append((axes[1], lat[:, :2] if lat is not None and lat.shape[1] >= 2 else None, "PPCA: E[z | x] (q = 2)"))
    for ax, pts, title in panels:
        ax.set_title(title, fontsize=8)
        if pts is None or not np.isfinite(pts).all():
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
            continue
        for c in np.unique(labels):
            sel = labels == c
            ax.scatter(pts[sel, 0], pts[sel, 1], s=5, alpha=0.7, color=f"C{int(c) % 10}", label=str(int(c)))
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, markerscale=2, ncol=2, loc="best")
    made = [
        (figures._save(fig, folder / "latent_clusters.png"),
         "Test digits in latent space, coloured by label: your conv VAE's posterior means and your PPCA's posterior means.",
         "model.vae_elbo"),
        (figures.sample_grid(grid.reshape(n * n, *shape), folder / "latent_grid.png", shape),
         "Your conv VAE's decoder on a 10×10 grid of latents (Gaussian quantiles 5 % … 95 % in z₁, z₂).", "model.vae_elbo"),
        (figures.image_grid(data.x_test[:16].reshape(16, *shape), rec.reshape(-1, *shape), folder / "vae_reconstructions.png", shape),
         "16 test digits (top) and your conv VAE's reconstructions at z = mu (bottom).", "model.reconstruction"),
    ]
    for path, caption, tag in made:
        _add_figure(ctx, path, caption, tag)


class NormalQuantiles:
    @staticmethod
    def at(p: float) -> float:
        from statistics import NormalDist

        return NormalDist().inv_cdf(float(p))


# ---- the model-level checks ----------------------------------------------------------------------------

VAE_FAMILY = ("conv_vae.", "vae_elbo")


def _grade(ctx: CheckContext, run: ModelRun, key: str, metric: str, label: str, higher_is_better: bool,
           family: tuple[str, ...]) -> None:
    s = run.settings
    if run.error:
        ctx.expect(False, label, run.error)
        _causes(ctx, family)
        return
    st, rf = run.student_metrics[key], run.reference_metrics[key]
    sign = -1.0 if higher_is_better else 1.0
    full, zero = getattr(s, f"{metric}_full"), getattr(s, f"{metric}_zero")
    frac = relative_score(sign * st, sign * rf, full, zero)
    text = f"yours {st:.5g}, reference {rf:.5g} (full marks within {full:.0%}, none beyond {zero:.0%} worse)"
    ctx.partial(frac, label, text)
    if frac >= 1.0:
        ctx.notes.append(f"{label}: {text}")
    else:
        _causes(ctx, family)


def _causes(ctx: CheckContext, family: tuple[str, ...]) -> None:
    """The mistakes found by the unit checks in the components this model is built from."""
    found = [m for c, m in ctx.diagnosed.items() if c.startswith(family)]
    if found:
        causes = "; ".join(f"{m.message} ({m.component})" for m in found)
        ctx.notes.append(f"Likely cause, found by the unit checks: {causes}.")


def check_model_ppca(ctx: CheckContext) -> None:
    run = PPCA.run(ctx)
    _grade(ctx, run, "log_likelihood", "ppca", f"PPCA (q={run.settings.ppca_q}) fitted by your fit_ppca: "
           "test log-likelihood per example", higher_is_better=True, family=("ppca.",))


def check_model_gmm(ctx: CheckContext) -> None:
    run = GMM.run(ctx)
    s = run.settings
    if run.epoch_matched:
        # a slow but correct EM (Python loops over points and components) is judged against the reference after as
        # many steps, not charged for its speed
        ctx.notes.append(f"Your EM ran {run.epoch_matched} of {s.gmm_iterations} steps within the "
                         f"{s.gmm_time_budget_s:g} s budget ({run.student_history.get('seconds', 0):.0f} s); it is "
                         f"compared with the reference after {run.epoch_matched} steps.")
    steps = run.epoch_matched or s.gmm_iterations
    _grade(ctx, run, "log_likelihood", "gmm", f"GMM (K={s.gmm_components}) after {steps} of your EM steps: "
           "test log-likelihood per example", higher_is_better=True, family=("gmm.",))
    before, after = run.extra.get("train_log_likelihood", (None, None))
    if before is not None and not after >= before - 1e-6 * max(1.0, abs(before)):
        ctx.notes.append(f"Diagnosis: the training log-likelihood fell from {before:.4g} to {after:.4g} per example over "
                         "your EM steps: an exact EM step never decreases it.")


def check_model_vae_elbo(ctx: CheckContext) -> None:
    run = CONV_VAE.run(ctx)
    note_epoch_matched(ctx, run.epoch_matched)
    _grade(ctx, run, "elbo", "elbo", "trained conv VAE: test ELBO per example (evaluated by the reference)",
           higher_is_better=True, family=VAE_FAMILY)
    st, rf = run.student_metrics, run.reference_metrics
    if st and rf and st.get("kl", 1) < 0.05 * max(rf.get("kl", 0), 1e-6):
        ctx.notes.append(f"Diagnosis: posterior collapse: KL(q(z|x) ‖ p(z)) is {st['kl']:.3g} nats against the "
                         f"reference's {rf['kl']:.3g}: the decoder ignores z.")


def check_model_reconstruction(ctx: CheckContext) -> None:
    run = CONV_VAE.run(ctx)
    note_epoch_matched(ctx, run.epoch_matched)
    _grade(ctx, run, "reconstruction_mse", "reconstruction", "trained conv VAE: test reconstruction MSE at z = mu",
           higher_is_better=False, family=VAE_FAMILY)
