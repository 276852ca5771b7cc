"""Figures for model-level grading, drawn with matplotlib's object API (no pyplot, no global state).

Each function saves one PNG and returns its path; captions are the caller's.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _readable(x: float) -> str:
    """1.1e+27 -> '1.1×10²⁷' (a figure's note in the report's words), 2.5 -> '2.5'."""
    if not np.isfinite(x) or x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.2g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}".replace("-", "−", 1 if x < 0 else 0)

__all__ = ["draw_losses", "loss_curves", "image_grid", "sample_grid", "latent_projection"]

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
    return {k: getattr(h, k) for k in ("train_loss", "val_loss", "epochs", "best_epoch", "stopped_because")
            if hasattr(h, k)}


def _finite(values) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in np.asarray(values, dtype=object).reshape(-1)], dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def _y_window(reference: list[np.ndarray], others: list[np.ndarray]) -> tuple[float, float] | None:
    """The y range that keeps the reference readable: the reference's own range (its first epoch left out when
    there are more, it would squash the rest), widened to take in other values that lie within 3 spans of it."""
    def later(v):
        v = v[np.isfinite(v)]
        return v[1:] if len(v) > 2 else v

    base = np.concatenate([later(v) for v in reference] or [np.array([])])
    if not len(base):  # no reference: the others' bulk (a diverging tail must not set the scale)
        base = np.concatenate([later(v) for v in others] or [np.array([])])
        if not len(base):
            return None
        typical = float(np.percentile(np.abs(base), 25))
        base = base[np.abs(base) <= 100 * typical + 1.0]  # a diverging tail is orders of magnitude off
    lo, hi = float(base.min()), float(base.max())
    span = (hi - lo) or 0.1 * abs(hi) or 1.0
    every = np.concatenate([v[np.isfinite(v)] for v in reference + others] or [np.array([])])
    inside = every[(every >= lo - 3 * span) & (every <= hi + 3 * span)]
    if len(inside):
        lo, hi = min(lo, float(inside.min())), max(hi, float(inside.max()))
    pad = 0.05 * ((hi - lo) or span)
    return lo - pad, hi + 3 * pad


def draw_losses(ax, series: list[dict], ylabel: str = "") -> None:
    """Loss curves on `ax`, readable when a run diverges.

    Each series: {label, values (None/NaN/inf allowed), epochs (default 1..n), color, ls, marker, reference
    (bool), diverged (bool: training stopped because the loss broke down)}. The y axis is scaled to the
    reference's curves; values beyond it are drawn at the edge with a red triangle and counted in a note;
    where a student's run diverged a red dotted line marks the epoch."""
    ref = [_finite(s["values"]) for s in series if s.get("reference")]
    other = [_finite(s["values"]) for s in series if not s.get("reference")]
    window = _y_window(ref, other)
    off = 0
    extreme = 0.0
    diverged_at = set()
    for s in series:
        raw = _finite(s["values"])
        if not len(raw):
            continue
        epochs = list(s.get("epochs") or [])
        x = np.asarray(epochs if len(epochs) >= len(raw) else range(1, len(raw) + 1), dtype=float)[:len(raw)]
        y = raw if window is None else np.clip(raw, *window)
        ax.plot(x, y, color=s.get("color"), ls=s.get("ls", "-"), marker=s.get("marker", ""), ms=s.get("ms", 3),
                label=s["label"])
        if window is not None:
            for sel, mark in ((raw > window[1], "^"), (raw < window[0], "v")):
                if sel.any():
                    ax.plot(x[sel], y[sel], ls="none", marker=mark, color="tab:red", ms=6, clip_on=False)
                    off += int(sel.sum())
                    extreme = max(extreme, float(np.abs(raw[sel]).max()), key=abs)
        if not s.get("reference"):
            ok = np.isfinite(raw)
            bad = ~ok & (np.cumsum(ok) > 0)  # a value that broke down after finite ones
            if bad.any():
                diverged_at.add(float(x[int(np.argmax(bad))]))
            elif s.get("diverged"):
                diverged_at.add(float(x[-1]) + 1)
    for at in sorted(diverged_at)[:1]:
        ax.axvline(at, color="tab:red", ls=":", lw=1.2)
        ax.annotate("training diverged", (at, 0.5), xycoords=("data", "axes fraction"), xytext=(3, 0),
                    textcoords="offset points", ha="left", va="center", rotation=90, fontsize=7.5, color="tab:red")
    if window is not None:
        ax.set_ylim(*window)
        if off:
            # short, and clipped to its own panel: in a row of panels a long note ran into the next one
            ax.text(0.01, 0.01, f"{off} off the scale ▲▼\n(largest |value| {_readable(extreme)})",
                    transform=ax.transAxes, fontsize=6.5, color="tab:red", va="bottom", clip_on=True)
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no finite losses recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def draw_bars(ax, names: list[str], series: list[dict]) -> None:
    """Grouped bars readable whatever the student's values are.

    Each series: {label, values (one per name; None/NaN/inf allowed), color, reference (bool)}. The y axis
    is scaled to the reference's bars (`_y_window`, zero included); a bar beyond it is drawn to the edge with
    a red triangle and its value written on it, a missing or non-finite value is written where its bar would
    be ("not computed", "NaN"), so one exploded value never hides every other bar."""
    ref = [_finite(s["values"]) for s in series if s.get("reference")]
    other = [_finite(s["values"]) for s in series if not s.get("reference")]
    window = _y_window([np.append(v, 0.0) for v in ref], other)
    width = 0.8 / max(len(series), 1)
    xs = np.arange(len(names))
    lo, hi = window if window is not None else (None, None)
    for j, s in enumerate(series):
        raw = np.asarray([np.nan if v is None else float(v) for v in s["values"]], dtype=float)
        x = xs + (j - (len(series) - 1) / 2) * width
        shown = np.where(np.isfinite(raw), raw, 0.0)
        if window is not None:
            shown = np.clip(shown, lo, hi)
        ax.bar(x, shown, width, color=s.get("color"), label=s["label"])
        middle = ax.get_xaxis_transform()  # x in data, y in axes fraction: the words stay inside the panel
        for xi, given, v, h in zip(x, s["values"], raw, shown):
            if not np.isfinite(v):
                ax.text(xi, 0.5, "not computed" if given is None else "NaN" if np.isnan(v) else "infinite",
                        transform=middle, rotation=90, ha="center", va="center", fontsize=6.5, color="tab:red")
            elif window is not None and v != h:
                ax.plot([xi], [h], marker="^" if v > h else "v", color="tab:red", ms=6, clip_on=False)
                ax.text(xi, 0.5, f"{v:.2g}", transform=middle, ha="center", va="center", fontsize=6.5,
                        color="tab:red", rotation=90, bbox={"fc": "white", "ec": "none", "pad": 0.5})
    if window is not None:
        ax.set_ylim(lo, hi)
    ax.set_xticks(xs, names)
    ax.axhline(0, color="black", lw=0.5)


def loss_curves(student_hist, reference_hist, path) -> Path:
    """Training and validation loss per epoch of the student's model and (if given) the reference's."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    series = []
    # The reference first, so the student's curves are drawn on top (they coincide for a reference copy).
    for label, h, color in (("reference", _hist(reference_hist), "tab:gray"), ("your model", _hist(student_hist), "tab:blue")):
        diverged = label != "reference" and h.get("stopped_because") == "diverged"
        for key, ls, marker, what in (("train_loss", "--", ".", "training"), ("val_loss", "-", "o", "validation")):
            if len(h.get(key) or []):
                series.append({"label": f"{label}: {what}", "values": h[key], "epochs": h.get("epochs"), "color": color,
                               "ls": ls, "marker": marker, "reference": label == "reference", "diverged": diverged})
    _merge_hidden_curves(series)
    draw_losses(ax, series, "negative ELBO (nats per example)")
    for label, h, color in (("reference", _hist(reference_hist), "tab:gray"), ("your model", _hist(student_hist), "tab:blue")):
        val, best = _finite(h.get("val_loss") or []), h.get("best_epoch")
        epochs = list(h.get("epochs") or range(1, len(val) + 1))
        if best and len(val) and best in epochs[:len(val)] and np.isfinite(val[epochs.index(best)]):
            lo, hi = ax.get_ylim()
            ax.plot([best], [np.clip(val[epochs.index(best)], lo, hi)], marker="*", ms=12, color=color, ls="none")
    return _save(fig, path)


def _merge_hidden_curves(series: list[dict]) -> None:
    """A reference curve that the student's identical curve covers gets no legend entry of its own: the
    student's says 'your model = reference: …' (a legend never lists a curve the reader cannot see)."""
    for s in series:
        if not s.get("reference"):
            continue
        for t in series:
            if t.get("reference") or t.get("ls") != s.get("ls"):
                continue
            a, b = _finite(s["values"]), _finite(t["values"])
            if len(a) == len(b) and len(a) and np.allclose(a, b, rtol=1e-3, equal_nan=True):
                s["label"] = "_nolegend_"
                t["label"] = t["label"].replace("your model:", "your model = reference:")


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


_BROKEN_PIXEL = -1e30  # a non-finite pixel of an image (NaN itself marks the gaps between images)


def _broken_images(imgs: np.ndarray) -> tuple[np.ndarray, int]:
    """(images with non-finite pixels set to _BROKEN_PIXEL, how many images hold any)."""
    imgs = np.asarray(imgs, dtype=float)
    bad = ~np.isfinite(imgs)
    return np.where(bad, _BROKEN_PIXEL, imgs), int(bad.reshape(len(imgs), -1).any(axis=1).sum()) if len(imgs) else 0


def _note_broken(ax, n_broken: int, n: int) -> None:
    if n_broken:
        ax.set_title(f"{n_broken} of {n} images hold NaN or infinite values (drawn red)", fontsize=7, color="tab:red")


def show_images(ax, images, rows: int, cols: int, image_shape, vmax: float) -> int:
    """Images in a rows×cols mosaic on `ax`; an image holding NaN or infinite pixels has them drawn red and
    the panel says how many (a grey block with no word was all a student saw). Returns that count."""
    imgs, broken = _broken_images(np.asarray(images, dtype=float).reshape(-1, *image_shape)[: rows * cols])
    _show(ax, _mosaic(imgs, rows, cols, image_shape), vmax)
    _note_broken(ax, broken, len(imgs))
    return broken


def _show(ax, mosaic: np.ndarray, vmax: float):
    # NaN: the gaps between images; below the scale (_BROKEN_PIXEL): a non-finite pixel of the student's image
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="#9ab", under="tab:red")
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
        show_images(ax, imgs, 1, n, image_shape, vmax)
        ax.set_ylabel(label, fontsize=7)
    return _save(fig, path)


def sample_grid(samples, path, image_shape, vmax: float | None = None) -> Path:
    """Images in a near-square grid."""
    imgs = np.asarray(samples, dtype=float).reshape(-1, *image_shape)
    n = max(len(imgs), 1)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(max(0.5 * cols + 0.4, 3.0), 0.5 * rows + 0.6), layout="constrained")
    show_images(fig.add_subplot(), imgs, rows, cols, image_shape, vmax or _vmax(imgs))
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
