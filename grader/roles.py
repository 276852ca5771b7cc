"""Find a student's parameters by the role they play, not by the name the template gave them.

The course allows several ways to store the same mixture-of-Gaussians prior: log-variances,
log-standard-deviations or variances; one spread per component or per dimension; mixture logits of
shape (K,), (K, 1), (K, 1, 1) or (1, K). `mixture_layout` reads which tensor of a prior's
state_dict holds which role (shapes first, names only as hints, the template's `get_params()` order
when the names say nothing), and `MixtureLayout` converts between the grader's canonical
parameters — means (K, L), log-variances (K, L), logits (K,) — and the student's own tensors.

`reference_state` does the same for a whole trained VAE: it maps the student's state_dict onto the
reference VAE's keys (networks by shape, prior by role) and ignores extra buffers.

Pure numpy: used in the grader only (the child reports its state_dict, the grader decides).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SPREAD_KINDS = ("logvar", "logstd", "var", "std")


class InterfaceError(ValueError):
    """The student's object does not hold what the assignment requires (said in words)."""


def _words(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.rsplit(".", 1)[-1].lower())


def _is_mean_name(name: str) -> bool:
    w = _words(name)
    return any(h in w for h in ("mean", "mu", "loc", "cent")) and not _is_spread_name(name)


def _is_spread_name(name: str) -> bool:
    w = _words(name)
    return any(h in w for h in ("var", "std", "sigma", "scale", "prec"))


def _is_weight_name(name: str) -> bool:
    w = _words(name)
    return w in ("w", "pi", "alpha") or any(h in w for h in ("logit", "weight", "mix", "coef", "prob"))


def spread_kind(name: str) -> str:
    """How a spread tensor is parametrised, read from its name (the template's log-variance by default)."""
    w = _words(name)
    log = w.startswith("log") or "log" in w
    if "var" in w or "sigma2" in w or "sigmasq" in w:
        return "logvar" if log else "var"
    if "std" in w or "sigma" in w or "scale" in w:
        return "logstd" if log else "std"
    return "logvar"


@dataclass(frozen=True)
class MixtureLayout:
    """Where a MoG prior keeps its means, spreads and mixture logits (state_dict keys and shapes)."""

    K: int
    L: int
    means: str
    spread: str
    spread_shape: tuple
    kind: str  # one of SPREAD_KINDS
    logits: str | None  # None: no mixture weights at all (equal weights 1/K, `allow_missing_weights`)
    logits_shape: tuple
    means_shape: tuple = ()

    @property
    def per_component(self) -> bool:
        """One spread per component (isotropic components) rather than one per dimension."""
        return _squeeze(self.spread_shape) != _squeeze((self.K, self.L))

    def describe(self) -> str:
        spread = {"logvar": "log-variances", "logstd": "log-standard-deviations", "var": "variances", "std": "standard deviations"}[self.kind]
        per = "one per component" if self.per_component else "one per dimension"
        weights = (f"mixture logits `{self.logits}` {self.logits_shape}" if self.logits is not None
                   else "no mixture weights (equal weights 1/K)")
        return f"means `{self.means}` {self.means_shape}, {spread} `{self.spread}` {self.spread_shape} ({per}), {weights}"

    def canonical_logits(self, logits: np.ndarray) -> np.ndarray:
        """The mixture logits this layout can hold: equal ones (zeros) where it keeps no weights."""
        return np.zeros_like(np.asarray(logits)) if self.logits is None else np.asarray(logits)

    def canonical_logvars(self, logvars: np.ndarray) -> np.ndarray:
        """The log-variances this layout can hold that are closest to `logvars` (K, L): per-component
        layouts get each component's mean log-variance on every dimension."""
        logvars = np.asarray(logvars)
        if self.per_component:
            return np.repeat(logvars.mean(1, keepdims=True), logvars.shape[1], axis=1).astype(logvars.dtype)
        return logvars

    def to_student(self, means: np.ndarray, logvars: np.ndarray, logits: np.ndarray) -> dict:
        """The student's state entries for the mixture (means, log-variances (K, L), logits of any shape)."""
        lv = np.asarray(self.canonical_logvars(logvars), dtype=np.float64)
        if self.per_component:
            lv = lv[:, 0]
        spread = {"logvar": lv, "logstd": 0.5 * lv, "var": np.exp(lv), "std": np.exp(0.5 * lv)}[self.kind]
        w = np.asarray(logits, dtype=np.float64).reshape(-1)
        dtype = np.asarray(means).dtype
        out = {self.means: np.asarray(means).astype(dtype).reshape(self.means_shape),
               self.spread: spread.astype(dtype).reshape(self.spread_shape)}
        if self.logits is not None:
            out[self.logits] = w.astype(dtype).reshape(self.logits_shape)
        return out

    def from_student(self, state: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(means (K, L), log-variances (K, L), logits (K,)) from the student's state entries."""
        means = np.asarray(state[self.means], dtype=np.float64).reshape(self.K, self.L)
        s = np.asarray(state[self.spread], dtype=np.float64).reshape(self.K, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lv = {"logvar": s, "logstd": 2 * s, "var": np.log(s), "std": 2 * np.log(s)}[self.kind]
        lv = np.broadcast_to(lv, (self.K, self.L)).copy()
        if self.logits is None:
            return means, lv, np.zeros(self.K)
        return means, lv, np.asarray(state[self.logits], dtype=np.float64).reshape(-1)


def mixture_layout(shapes: dict, K: int, L: int, order: list | None = None,
                   allow_missing_weights: bool = False) -> MixtureLayout:
    """Which of a prior's tensors (`shapes`: state_dict key -> shape) are the means, the spreads and
    the mixture weights of a K-component mixture in L dimensions.

    Shapes decide; names break ties (mu/mean/loc/centre, var/std/sigma/scale, w/logits/weights/pi);
    `order` (e.g. the keys the template's `get_params()` returns, means first) and then the
    state_dict's order decide what names cannot. Raises InterfaceError saying what is missing;
    with `allow_missing_weights`, a prior without mixture weights has `logits=None` instead (the
    interface check charges the missing weights once; the maths checks use equal weights)."""
    shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    keys = list(shapes)
    full = [k for k in keys if _squeeze(shapes[k]) == _squeeze((K, L))]
    per_k = [k for k in keys if _squeeze(shapes[k]) == _squeeze((K,))]
    ranked = [k for k in (order or []) if k in shapes] + keys
    rank = {k: ranked.index(k) for k in keys}

    means_c = sorted(full, key=lambda k: (not _is_mean_name(k), _is_spread_name(k), rank[k]))
    if not means_c:
        raise InterfaceError(f"MoGPrior holds no ({K}, {L}) tensor of component means (found {_show(shapes)})")
    means = means_c[0]
    weight_c = sorted([k for k in per_k if k != means],
                      key=lambda k: (not _is_weight_name(k), _is_spread_name(k), -rank[k]))
    spread_c = sorted([k for k in full + per_k if k != means],
                      key=lambda k: (not _is_spread_name(k), _is_weight_name(k), _squeeze(shapes[k]) != (K, L), rank[k]))
    if not weight_c and not allow_missing_weights:
        raise InterfaceError(missing_weights_message(K, shapes))
    logits = weight_c[0] if weight_c else None
    spread_c = [k for k in spread_c if k != logits]
    if not spread_c:
        raise InterfaceError(f"MoGPrior holds no tensor of component (log-)variances of shape ({K}, {L}) or ({K},) "
                             f"(found {_show(shapes)})")
    spread = spread_c[0]
    return MixtureLayout(K, L, means, spread, shapes[spread], spread_kind(spread), logits,
                         shapes[logits] if logits is not None else (), shapes[means])


def missing_weights_message(K: int, shapes: dict) -> str:
    return (f"MoGPrior holds no tensor of {K} mixture weights (logits of shape ({K},), ({K}, 1) or ({K}, 1, 1); "
            f"found {_show(shapes)}): make the weights a learnable nn.Parameter, e.g. "
            f"self.w = nn.Parameter(torch.zeros(num_components, 1, 1)), and use softmax(w) as the mixture weights")


def _squeeze(shape: tuple) -> tuple:
    return tuple(d for d in shape if d != 1) or ((1,) if shape else ())


def _show(shapes: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in shapes.items()) or "no tensors"


# ---- a whole trained VAE --------------------------------------------------------------------------

def reference_state(student: dict, expected: dict, K: int, L: int, prior_prefix: str = "prior.") -> tuple[dict, list[str]]:
    """Map a student's trained state_dict (key -> array) onto the reference VAE's keys (`expected`:
    key -> shape): each network by its layers' shapes, the prior by role (`mixture_layout`).

    Returns (state for the reference, notes on what was ignored). Extra tensors (buffers, counters)
    are ignored; a missing network layer or prior role raises InterfaceError naming it."""
    student = {k: np.asarray(v) for k, v in student.items()}
    out: dict = {}
    used: set = set()
    # Networks: group the reference's non-prior keys by their module prefix ("encoder.encoder.").
    groups: dict[str, list[str]] = {}
    for k in expected:
        if k.startswith(prior_prefix):
            continue
        prefix, _, suffix = k.rpartition(".")
        prefix, _, layer = prefix.rpartition(".")
        groups.setdefault(prefix + ".", []).append(f"{layer}.{suffix}")
    sprefixes: dict[str, set] = {}
    for k in student:
        prefix, _, suffix = k.rpartition(".")
        prefix, _, layer = prefix.rpartition(".")
        sprefixes.setdefault(prefix + ".", set()).add(f"{layer}.{suffix}")
    for group, suffixes in groups.items():
        def fits(sp):
            return all(sp + s in student and student[sp + s].shape == tuple(expected[group + s]) for s in suffixes)
        cands = [sp for sp in sprefixes if fits(sp) and not any((sp + s) in used for s in suffixes)]
        if not cands:
            raise InterfaceError(f"the trained model holds no network with the layers of `{group.rstrip('.')}` "
                                 f"({', '.join(f'{s} {tuple(expected[group + s])}' for s in suffixes)})")
        sp = group if group in cands else cands[0]
        for s in suffixes:
            out[group + s] = student[sp + s]
            used.add(sp + s)
    rest = {k: v.shape for k, v in student.items() if k not in used and v.dtype.kind == "f"}
    prior_rest = {k: s for k, s in rest.items() if k.startswith(prior_prefix)} or rest
    layout = mixture_layout(prior_rest, K, L, allow_missing_weights=True)  # no weights: the model used equal ones
    means, lv, w = layout.from_student(student)
    out[prior_prefix + "means"] = means
    out[prior_prefix + "logvars"] = lv
    out[prior_prefix + "w"] = w.reshape(tuple(expected[prior_prefix + "w"]))
    used |= {layout.means, layout.spread, layout.logits} - {None}
    notes = []
    ignored = sorted(k for k in student if k not in used)
    if ignored:
        notes.append(f"ignored tensors that play no role in the reference VAE: {', '.join(ignored[:8])}"
                     + (" ..." if len(ignored) > 8 else ""))
    if layout.means != prior_prefix + "means" or layout.spread != prior_prefix + "logvars" or layout.logits != prior_prefix + "w":
        notes.append("prior read by role: " + layout.describe())
    return out, notes



def match_state(student: dict, expected: dict) -> tuple[dict, list[str]]:
    """Fill each of the `expected` keys (key -> shape, in the architecture's order) from the student's
    state_dict: the same key when its shape fits, else the next unused student tensor of that shape
    in the student's order (renamed submodules). Extra tensors (buffers, counters) are ignored and
    listed; a key nothing fits raises InterfaceError naming it."""
    student = {k: np.asarray(v) for k, v in student.items()}
    out, used = {}, set()
    for k, shape in expected.items():
        shape = tuple(shape)
        if k in student and student[k].shape == shape:
            out[k] = student[k]
            used.add(k)
    for k, shape in expected.items():
        if k in out:
            continue
        cand = next((s for s, v in student.items() if s not in used and v.shape == tuple(shape)), None)
        if cand is None:
            raise InterfaceError(f"no tensor of shape {tuple(shape)} for `{k}` "
                                 f"(found {_show({s: v.shape for s, v in student.items() if s not in used})})")
        out[k] = student[cand]
        used.add(cand)
    return out, sorted(k for k in student if k not in used)
