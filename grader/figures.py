"""Figures for model-level grading, drawn with matplotlib's object API (no pyplot, no global state).

Each function saves one PNG and returns its path; captions are the caller's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["loss_curves", "image_grid", "sample_grid", "latent_projection"]

DPI = 120


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _hist(h) -> dict:
    if h is None:
        return {}
    if isinstance(h, dict):
        return h
    return {k: getattr(h, k) for k in ("train_loss", "val_loss", "epochs", "best_epoch") if hasattr(h, k)}


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float).reshape(-1)
    return np.where(np.isfinite(a), a, np.nan)


def loss_curves(student_hist, reference_hist, path) -> Path:
    """Training and validation loss per epoch of the student's model and (if given) the reference's."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    plotted = []
    # The reference first, so the student's curves are drawn on top (they coincide for a reference copy).
    for label, h, color in (("reference", _hist(reference_hist), "tab:gray"), ("student", _hist(student_hist), "tab:blue")):
        train, val = _finite(h.get("train_loss", [])), _finite(h.get("val_loss", []))
        epochs = np.asarray(h.get("epochs") or range(1, len(train) + 1), dtype=float)
        if len(train):
            ax.plot(epochs[:len(train)], train, color=color, ls="--", marker=".", label=f"{label}: training")
            plotted.append(train)
        if len(val):
            ax.plot(epochs[:len(val)], val, color=color, ls="-", marker="o", ms=3, label=f"{label}: validation")
            plotted.append(val)
        best = h.get("best_epoch")
        if best and len(val) and best in list(epochs[:len(val)]):
            ax.plot([best], [val[list(epochs).index(best)]], marker="*", ms=12, color=color, ls="none")
    values = np.concatenate(plotted) if plotted else np.array([])
    values = values[np.isfinite(values)]
    if len(values):
        lo, hi = np.percentile(values, [0, 95])  # the first epochs' losses would squash the rest
        pad = 0.05 * (hi - lo or abs(hi) or 1.0)
        ax.set_ylim(lo - pad, max(hi, lo) + pad * 3)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finite losses recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats per example)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _mosaic(images: np.ndarray, rows: int, cols: int, image_shape, gap: int = 1) -> np.ndarray:
    h, w = image_shape
    imgs = np.asarray(images, dtype=float).reshape(-1, h, w)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i, im in enumerate(imgs[: rows * cols]):
        r, c = divmod(i, cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = im
    return out


def _vmax(*arrays) -> float:
    m = max((np.nanmax(np.where(np.isfinite(a), a, np.nan)) for a in arrays if np.size(a) and np.isfinite(a).any()),
            default=1.0)
    return float(max(m, 1.0))


def _show(ax, mosaic: np.ndarray, vmax: float):
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="#9ab")  # NaN: the gaps between images
    ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(real, recon, path, image_shape, vmax: float | None = None) -> Path:
    """Up to 16 real images in the top row, their reconstructions below (pixel units)."""
    real = np.asarray(real, dtype=float).reshape(-1, *image_shape)[:16]
    recon = np.asarray(recon, dtype=float).reshape(-1, *image_shape)[:16]
    n = max(len(real), len(recon), 1)
    vmax = vmax or _vmax(real, recon)
    fig = Figure(figsize=(0.6 * n + 1.2, 1.6), layout="constrained")
    axes = fig.subplots(2, 1)
    for ax, imgs, label in ((axes[0], real, "data"), (axes[1], recon, "reconstruction")):
        _show(ax, _mosaic(imgs, 1, n, image_shape), vmax)
        ax.set_ylabel(label, fontsize=7)
    return _save(fig, path)


def sample_grid(samples, path, image_shape, vmax: float | None = None) -> Path:
    """Images in a near-square grid."""
    imgs = np.asarray(samples, dtype=float).reshape(-1, *image_shape)
    n = max(len(imgs), 1)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(0.5 * cols + 0.4, 0.5 * rows + 0.4), layout="constrained")
    _show(fig.add_subplot(), _mosaic(imgs, rows, cols, image_shape), vmax or _vmax(imgs))
    return _save(fig, path)


def latent_projection(mu, labels, path) -> Path:
    """Posterior means projected on their first two principal components (numpy SVD), coloured by label."""
    mu = np.asarray(mu, dtype=float)
    mu = mu.reshape(len(mu), -1)
    labels = np.asarray(labels).reshape(-1)
    fig = Figure(figsize=(5.0, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ok = np.isfinite(mu).all(axis=1)
    mu, labels_ok = mu[ok], labels[ok] if len(labels) == len(ok) else labels
    if len(mu) >= 2:
        centred = mu - mu.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[:2].T
        if proj.shape[1] < 2:
            proj = np.hstack([proj, np.zeros((len(proj), 2 - proj.shape[1]))])
        var = s ** 2 / max((s ** 2).sum(), 1e-300)
        classes = np.unique(labels_ok) if len(labels_ok) == len(proj) else np.array([])
        if len(classes):
            colors = [f"C{i % 10}" for i in range(len(classes))]
            for c, color in zip(classes, colors):
                sel = labels_ok == c
                ax.scatter(proj[sel, 0], proj[sel, 1], s=6, alpha=0.7, color=color, label=str(c))
            ax.legend(fontsize=7, markerscale=2, ncol=2 if len(classes) > 5 else 1, loc="best")
        else:
            ax.scatter(proj[:, 0], proj[:, 1], s=6, alpha=0.7)
        ax.set_xlabel(f"PC 1 ({100 * var[0]:.0f} % of variance)")
        ax.set_ylabel(f"PC 2 ({100 * (var[1] if len(var) > 1 else 0):.0f} % of variance)")
    else:
        ax.text(0.5, 0.5, "not enough finite latent means", ha="center", va="center", transform=ax.transAxes)
    if (~ok).any():
        ax.set_title(f"{int((~ok).sum())} non-finite rows left out", fontsize=8)
    return _save(fig, path)
