"""Record what the reference answers at release time; replay it in the students' self-check bundle.

A public check computes what the reference gives on its own deterministic inputs through `ctx.ref`.
At release time `ctx.ref` is a `RecordingRef` around the reference module: every interaction
(attribute read, call, indexing, a torch function applied to a reference object) is keyed by a
digest of *what* was asked (the path from the module, the arguments' bytes, and for objects the
history of calls made on them) and its answer is stored as plain data (arrays, numbers, strings).
Objects the reference returns (a model built by `ctx.ref.MoGPrior(3, 4)`) stay proxies: calls on
them are recorded too, and every call on an object extends its history, so `prior.means.copy_(w)`
then `prior.log_prob(z)` is keyed by both.

In the bundle `ctx.ref` is a `ReplayRef` over those recordings: the same check code asks the same
questions and gets the recorded answers. A question the release never saw (its inputs depend on
the student's output, or the check took another branch) raises `NotRecorded`, a BaseException so
no `except Exception` in a check can swallow it; the bundle reports that check as "only the
course's grader can check this", never as passed. A key recorded twice with different answers
(e.g. results that depend on the random state) is stored as ambiguous and replays as NotRecorded.

Gradients: when a call's tensor arguments require grad, the Jacobian of each output with respect
to them is recorded (small outputs only) and the replayed output is `value + J·(t - t.detach())`:
exactly the recorded value, with exactly the recorded gradient for any cotangent.

This file holds no reference code and is shipped in the bundle (it imports only numpy and torch).
"""

from __future__ import annotations

import hashlib
import operator
import types
from collections import OrderedDict

import numpy as np
import torch

MAX_JACOBIAN_ELEMENTS = 2_000_000
MAX_JACOBIAN_ROWS = 512


class NotRecorded(BaseException):
    """The check asked the reference something the release did not record."""


class Unrecordable(Exception):
    """An argument or answer that cannot be turned into plain data."""


# ---- digests ------------------------------------------------------------------------------------

def _h(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:40]


def _array_bytes(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return np.ascontiguousarray(t.cpu().numpy())


def digest(v) -> str:
    """A device-independent fingerprint of an argument."""
    if isinstance(v, _Proxy):
        return _h("P", v._identity())
    if isinstance(v, torch.Tensor):
        a = _array_bytes(v)
        return _h("T", str(v.dtype), tuple(v.shape), a.tobytes(), bool(v.requires_grad))
    if isinstance(v, np.ndarray):
        return _h("A", v.dtype.str, v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, np.generic):
        return _h("N", v.dtype.str, repr(v.item()))
    if isinstance(v, torch.nn.Module):
        return _h("M", type(v).__qualname__, repr(v), *[_h(k, digest(t)) for k, t in v.state_dict().items()])
    if isinstance(v, (list, tuple)):
        return _h(type(v).__name__, *[digest(x) for x in v])
    if isinstance(v, dict):
        return _h("D", *[_h(digest(k), digest(x)) for k, x in v.items()])
    if v is None or isinstance(v, (bool, int, float, complex, str, bytes)):
        return _h(type(v).__name__, repr(v))
    if isinstance(v, torch.dtype):
        return _h("dtype", str(v))
    if isinstance(v, torch.device):
        return _h("device")  # the grading device: cpu at release, whatever the student has later
    if isinstance(v, slice):
        return _h("slice", digest(v.start), digest(v.stop), digest(v.step))
    if v is Ellipsis:
        return _h("...")
    if isinstance(v, (types.FunctionType, types.BuiltinFunctionType, type)):
        return _h("fn", getattr(v, "__module__", ""), getattr(v, "__qualname__", repr(v)))
    raise Unrecordable(f"cannot fingerprint an argument of type {type(v).__qualname__}")


# ---- proxies ------------------------------------------------------------------------------------

class _Owner:
    """The root of an object graph: the module (immutable) or an object the reference returned."""

    def __init__(self, key: str, mutable: bool, real=None):
        self.key, self.mutable, self.real = key, mutable, real
        self.history = ""
        self.leaves: dict[str, torch.Tensor] = {}  # replay: the model's parameters handed to the check
        self.versions: dict[str, int] = {}

    def params(self) -> dict:
        """Record side: the object's trainable parameters by name (a torch module's), else none."""
        if isinstance(self.real, torch.nn.Module):
            return {n: p for n, p in self.real.named_parameters() if p.requires_grad}
        return {}


class _Proxy:
    __slots__ = ("_session", "_owner", "_path", "_real")

    def __init__(self, session, owner: _Owner, path: tuple, real=None):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_real", real)

    def _identity(self) -> str:
        return _h(self._owner.key, self._owner.history, *self._path)

    def _label(self) -> str:
        return ".".join(self._path) or "<reference object>"

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__") and name in ("__deepcopy__", "__getstate__", "__setstate__"):
            raise AttributeError(name)
        return self._session.getattr(self, name)

    def __setattr__(self, name, value):
        self._session.call(self, "__setattr__", (name, value), {})

    def __call__(self, *args, **kwargs):
        return self._session.call(self, "__call__", args, kwargs)

    def __iter__(self):
        return iter(self._session.call(self, "__iter__", (), {}))

    def __len__(self):
        return self._session.call(self, "__len__", (), {})

    def __repr__(self):
        return f"<reference proxy {self._label()}>"

    @classmethod
    def __torch_function__(cls, func, types_, args=(), kwargs=None):
        proxy = next(a for a in _walk((args, kwargs or {})) if isinstance(a, _Proxy))
        return proxy._session.torch_function(func, args, kwargs or {})


def _dunder(name):
    def method(self, *args):
        return self._session.call(self, name, args, {})
    method.__name__ = name
    return method


_DUNDERS = ["__getitem__", "__setitem__", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
            "__truediv__", "__rtruediv__", "__matmul__", "__rmatmul__", "__pow__", "__rpow__", "__neg__",
            "__lt__", "__le__", "__gt__", "__ge__", "__array__"]
for _name in _DUNDERS:
    setattr(_Proxy, _name, _dunder(_name))


def _walk(v):
    """Every leaf of nested lists/tuples/dicts (dict values only)."""
    if isinstance(v, (list, tuple)):
        for x in v:
            yield from _walk(x)
    elif isinstance(v, dict):
        for x in v.values():
            yield from _walk(x)
    else:
        yield v


def _grad_inputs(args, kwargs) -> list[torch.Tensor]:
    return [t for t in _walk((args, kwargs)) if isinstance(t, torch.Tensor) and t.requires_grad]


def _is_value(v) -> bool:
    if isinstance(v, (torch.Tensor, np.ndarray, np.generic, torch.dtype, torch.device, torch.Size)):
        return True
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)) and type(v) in (list, tuple):
        return all(_is_value(x) for x in v)
    if isinstance(v, dict) and type(v) in (dict, OrderedDict):  # state_dict() is an OrderedDict
        return all(isinstance(k, str) for k in v) and all(_is_value(x) for x in v.values())
    return False


def _dunder_fn(real, name):
    ops = {"__getitem__": operator.getitem, "__setitem__": operator.setitem, "__add__": operator.add,
           "__radd__": lambda a, b: b + a, "__sub__": operator.sub, "__rsub__": lambda a, b: b - a,
           "__mul__": operator.mul, "__rmul__": lambda a, b: b * a, "__truediv__": operator.truediv,
           "__rtruediv__": lambda a, b: b / a, "__matmul__": operator.matmul, "__rmatmul__": lambda a, b: b @ a,
           "__pow__": operator.pow, "__rpow__": lambda a, b: b ** a, "__neg__": operator.neg,
           "__lt__": operator.lt, "__le__": operator.le, "__gt__": operator.gt, "__ge__": operator.ge,
           "__len__": len, "__iter__": list, "__array__": np.asarray,
           "__setattr__": setattr}
    if name == "__call__":
        return real
    return lambda *a, **k: ops[name](real, *a, **k)


class _Session:
    """Shared by recording and replaying: how keys are formed."""

    def __init__(self):
        self.root = _Owner("module", mutable=False)

    def _key(self, kind: str, proxy: _Proxy | None, *parts) -> str:
        return _h(kind, proxy._identity() if proxy is not None else "", *parts)

    @staticmethod
    def _touch(proxies, key: str) -> None:
        """A call on an object may change it: later questions about it are keyed by this one too."""
        for p in proxies:
            if p._owner.mutable:
                p._owner.history = _h(p._owner.history, key)

    def getattr(self, proxy, name):
        return self._answer(self._key("get", proxy, name), proxy, f"{proxy._label()}.{name}",
                            lambda: getattr(proxy._real, name), extend=(name,))

    @staticmethod
    def _sync(proxies, absorb: bool = False) -> None:
        """Parameters handed to the check (`model.parameters()`) and changed in place by it since the last
        call: their values become part of the model's history (the same on both sides). With `absorb`,
        changes made by the reference's own call are taken as they are (recording side, after a call)."""
        for owner in {id(p._owner): p._owner for p in proxies if p._owner.mutable}.values():
            changed = sorted(n for n, t in owner.leaves.items() if t._version != owner.versions[n])
            if changed and not absorb:
                owner.history = _h(owner.history, "changed", *[_h(n, digest(owner.leaves[n])) for n in changed])
            for n in changed:
                owner.versions[n] = owner.leaves[n]._version

    def call(self, proxy, method, args, kwargs):
        proxies = [proxy] + [a for a in _walk((args, kwargs)) if isinstance(a, _Proxy)]
        self._sync(proxies)
        key = self._key("call", proxy, method, digest(args), digest(kwargs))
        label = f"{proxy._label()}{'' if method == '__call__' else '.' + method}(...)"
        out = self._answer(key, proxy, label, lambda: _dunder_fn(proxy._real, method)(*_unwrap(args), **_unwrap(kwargs)),
                           args=(args, kwargs), new_owner=True)
        self._sync(proxies, absorb=True)
        self._touch(proxies, key)
        return out

    def torch_function(self, func, args, kwargs):
        name = getattr(func, "__module__", "") + "." + getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        proxies = [a for a in _walk((args, kwargs)) if isinstance(a, _Proxy)]
        self._sync(proxies)
        key = self._key("torch", None, name, digest(args), digest(kwargs))
        out = self._answer(key, proxies[0], f"{name}(<reference object>, ...)",
                           lambda: func(*_unwrap(args), **_unwrap(kwargs)), args=(args, kwargs), new_owner=True)
        self._sync(proxies, absorb=True)
        self._touch(proxies, key)
        return out


def _copy(v, keep=frozenset()):
    """A value the check may change freely (tensors keep their autograd graph; those in `keep` stay)."""
    if isinstance(v, torch.Tensor):
        return v if id(v) in keep else v.clone()
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, list):
        return [_copy(x, keep) for x in v]
    if isinstance(v, tuple) and not isinstance(v, torch.Size):
        return tuple(_copy(x, keep) for x in v)
    if isinstance(v, dict):
        return {k: _copy(x, keep) for k, x in v.items()}
    return v


def _unwrap(v):
    if isinstance(v, _Proxy):
        return v._real
    if isinstance(v, list):
        return [_unwrap(x) for x in v]
    if isinstance(v, tuple):
        return tuple(_unwrap(x) for x in v)
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    return v


# ---- recording -----------------------------------------------------------------------------------

class Recorder(_Session):
    """Records one check's questions to the reference. `records`: key -> encoded answer."""

    def __init__(self, module):
        super().__init__()
        self.root.real = module
        self.records: dict[str, dict] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.keep: list = []  # keeps the reference's objects alive (ids stay unique)
        self.ambiguous: set[str] = set()

    def ref(self) -> _Proxy:
        return _Proxy(self, self.root, (), self.root.real)

    def _answer(self, key, proxy, label, compute, extend=(), args=None, new_owner=False):
        try:
            real = compute()
        except Exception as e:
            self._store(key, {"raise": _exc_name(e), "message": str(e)[:500]})
            raise
        if isinstance(real, (types.GeneratorType, map, filter, zip)):
            real = list(real)
        if self._is_object(real, proxy, attribute=not new_owner):
            self.keep.append(real)
            if new_owner:
                if real is proxy._owner.real and proxy._owner.real is not None:
                    self._store(key, {"root": True})
                    return _Proxy(self, proxy._owner, (), real)
                self._store(key, {"object": "new"})
                return _Proxy(self, _Owner(key, mutable=True, real=real), (), real)
            self._store(key, {"object": "path"})
            return _Proxy(self, proxy._owner, proxy._path + extend, real)
        grad_on = args is not None and torch.is_grad_enabled()
        grads = _grad_inputs(*args) if grad_on else []
        params = proxy._owner.params() if grad_on or new_owner else {}
        self._store(key, {"value": self._encode(real, grads, params, proxy._owner)})
        # As in the replay, the check gets copies: changing them in place cannot change the reference's
        # objects (the model's own parameters excepted: they are the same objects in the replay).
        return _copy(real, keep={id(t) for t in params.values()})

    @staticmethod
    def _is_object(real, proxy, attribute: bool) -> bool:
        if attribute and proxy._owner.mutable and isinstance(real, torch.Tensor):
            return True  # a model's parameter: in-place changes go through the proxy and are tracked
        return not _is_value(real)

    def _encode(self, v, grads, params, owner):
        if isinstance(v, torch.Tensor):
            enc = {"tensor": self._array(_array_bytes(v)), "dtype": str(v.dtype).replace("torch.", "")}
            name = next((n for n, p in params.items() if p is v), None)
            if name is not None:
                enc["param"] = name
                if name not in owner.leaves:  # handed to the check as it is: in-place changes are tracked
                    owner.leaves[name], owner.versions[name] = v, v._version
            elif v.requires_grad and torch.is_grad_enabled() and (grads or params):
                names = list(params)
                jac = self._jacobians(v, grads + [params[n] for n in names])
                if jac is None:
                    enc["gradient_not_recorded"] = True
                else:
                    enc["jacobians"] = jac[:len(grads)]
                    used = {n: j for n, j in zip(names, jac[len(grads):]) if j is not None}
                    if used:
                        enc["param_jacobians"] = used
                        enc["param_values"] = {n: self._array(_array_bytes(params[n])) for n in used}
            return enc
        if isinstance(v, torch.Size):
            return {"size": list(v)}
        if isinstance(v, (np.ndarray, np.generic)):
            return {"array": self._array(np.asarray(v)), "scalar": isinstance(v, np.generic)}
        if isinstance(v, torch.dtype):
            return {"torch_dtype": str(v).replace("torch.", "")}
        if isinstance(v, torch.device):
            return {"device": True}
        if isinstance(v, (list, tuple)):
            return {type(v).__name__: [self._encode(x, grads, params, owner) for x in v]}
        if isinstance(v, dict):
            return {"dict": [[k, self._encode(x, grads, params, owner)] for k, x in v.items()]}  # keeps the order
        if isinstance(v, float) and not np.isfinite(v):
            return {"float": repr(v)}
        return {"plain": v}

    def _array(self, a: np.ndarray) -> str:
        name = _h("array", a.dtype.str, a.shape, a.tobytes())
        self.arrays[name] = np.array(a, copy=True)
        return name

    def _jacobians(self, out: torch.Tensor, inputs: list[torch.Tensor]):
        n = out.numel()
        if n == 0 or n > MAX_JACOBIAN_ROWS or n * sum(t.numel() for t in inputs) > MAX_JACOBIAN_ELEMENTS:
            return None
        flat = out.reshape(-1)
        rows: list[list] = [[] for _ in inputs]
        used = [False] * len(inputs)
        for j in range(n):
            gs = torch.autograd.grad(flat[j], inputs, retain_graph=True, allow_unused=True)
            for i, g in enumerate(gs):
                used[i] |= g is not None
                rows[i].append(torch.zeros_like(inputs[i]) if g is None else g.detach())
        out_j = []
        for i, t in enumerate(inputs):
            if not used[i]:
                out_j.append(None)
                continue
            jac = torch.stack(rows[i]).reshape(tuple(out.shape) + tuple(t.shape))
            if not torch.isfinite(jac).all():
                return None
            out_j.append(self._array(_array_bytes(jac)))
        return out_j

    def _store(self, key: str, enc: dict) -> None:
        if key in self.records and self.records[key] != enc:
            self.ambiguous.add(key)
        self.records.setdefault(key, enc)

    def export(self) -> dict:
        return {k: ({"ambiguous": True} if k in self.ambiguous else v) for k, v in self.records.items()}


def merge(into: dict, records: dict) -> None:
    """Merge one run's records of a check into `into` (a key answered differently becomes ambiguous)."""
    for k, v in records.items():
        if k in into and into[k] != v:
            into[k] = {"ambiguous": True}
        else:
            into.setdefault(k, v)


def _exc_name(e: BaseException) -> str:
    return type(e).__name__ if type(e).__name__ in _EXCEPTIONS else "RuntimeError"


_EXCEPTIONS = {e.__name__: e for e in (AttributeError, TypeError, ValueError, RuntimeError, IndexError, KeyError,
                                       NotImplementedError, ZeroDivisionError)}


# ---- replaying -----------------------------------------------------------------------------------

class ReplayRef(_Session):
    """`ctx.ref` in the bundle: answers from `records` (key -> encoded answer), arrays by name."""

    def __init__(self, records: dict, arrays, device):
        super().__init__()
        self.records, self.arrays, self.device = records, arrays, torch.device(device)
        self.gradient_not_recorded = False  # a tensor whose gradient was not recorded was handed out

    def ref(self) -> _Proxy:
        return _Proxy(self, self.root, ())

    def _answer(self, key, proxy, label, compute, extend=(), args=None, new_owner=False):
        owner = proxy._owner
        enc = self.records.get(key)
        if enc is None or enc.get("ambiguous"):
            raise NotRecorded(f"the reference was asked for {label} on inputs this release did not record "
                              "(they depend on your code's output)")
        if "raise" in enc:
            raise _EXCEPTIONS.get(enc["raise"], RuntimeError)(enc.get("message", ""))
        if "root" in enc:
            return _Proxy(self, proxy._owner, ())
        if enc.get("object") == "new":
            return _Proxy(self, _Owner(key, mutable=True), ())
        if enc.get("object") == "path":
            return _Proxy(self, proxy._owner, proxy._path + extend)
        grads = _grad_inputs(*args) if args is not None else []
        return self._decode(enc["value"], grads, owner)

    def _leaf(self, owner: _Owner, name: str, array: str) -> torch.Tensor:
        if name not in owner.leaves:
            leaf = torch.from_numpy(np.array(self.arrays[array], copy=True)).to(self.device).requires_grad_(True)
            owner.leaves[name], owner.versions[name] = leaf, leaf._version
        return owner.leaves[name]

    def _linear(self, value, jac_name, t):
        """value + J·(t - t.detach()): the recorded value, with the recorded gradient w.r.t. t."""
        jac = torch.from_numpy(np.array(self.arrays[jac_name], copy=True)).to(self.device, t.dtype)
        return value + torch.tensordot(jac, t - t.detach(), dims=t.dim()).to(value.dtype)

    def _decode(self, enc, grads, owner):
        if "tensor" in enc:
            if "param" in enc:
                return self._leaf(owner, enc["param"], enc["tensor"])
            value = torch.from_numpy(np.array(self.arrays[enc["tensor"]], copy=True)).to(self.device)
            if torch.is_grad_enabled():
                for t, name in zip(grads, enc.get("jacobians") or []):
                    if name is not None:
                        value = self._linear(value, name, t)
                for pname, name in (enc.get("param_jacobians") or {}).items():
                    value = self._linear(value, name, self._leaf(owner, pname, enc["param_values"][pname]))
                if enc.get("gradient_not_recorded"):
                    self.gradient_not_recorded = True
            return value
        if "size" in enc:
            return torch.Size(enc["size"])
        if "array" in enc:
            a = np.array(self.arrays[enc["array"]], copy=True)
            return a[()] if enc.get("scalar") else a
        if "torch_dtype" in enc:
            return getattr(torch, enc["torch_dtype"])
        if "device" in enc:
            return self.device
        if "tuple" in enc:
            return tuple(self._decode(x, grads, owner) for x in enc["tuple"])
        if "list" in enc:
            return [self._decode(x, grads, owner) for x in enc["list"]]
        if "dict" in enc:
            return {k: self._decode(x, grads, owner) for k, x in enc["dict"]}
        if "float" in enc:
            return float(enc["float"])
        return enc["plain"]
