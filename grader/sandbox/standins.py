"""Child side of stand-ins: the student's calls to their *own upstream* components, answered by the grader.

While the grader checks one component (an ELBO, an importance sampler, an EM step), the functions
and methods of the other components (`stand_ins` in the `call` request, dotted names in the
submission's module) are replaced by proxies. A proxy sends its arguments to the grader as plain
data (an "upcall" on the request's socket), the grader computes the *reference's* value on its
side and sends arrays back, so the component under test runs on correct upstream values without
any reference code entering this process. Gradients flow both ways through `_Upcall`, a
torch.autograd.Function whose backward asks the grader for the vector-Jacobian product.

A constructor stands in through what it built: for a name "Class.__init__", every layer (a
submodule holding parameters) of the objects of exactly that class the grader built here answers
its calls by an upcall too; the grader runs the layer of the specified architecture (its twin's, by
role) on the input, so a method's own code is graded apart from the constructor's mistakes.

Objects cross by *handle*: every object the grader had built here (`__new__` with a "handle") and
its submodules ("<handle>/<path>", a key the grader looks up in its twin's own submodule table,
never an attribute path it follows) are known to the grader, which keeps a reference twin of
each; the object's current state travels with every upcall. Messages are encoded by
grader/sandbox/values.py (the one codec); the grader answers only within its bounds and deadline. An argument that cannot cross
(an object the grader does not know, a lambda) makes the proxy run the student's own code instead.
"""

from __future__ import annotations

import torch

from grader.signatures import read_signature
from grader.sandbox import protocol, values


def layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(path, submodule) for every submodule of `module` that holds parameters itself (a layer), in
    definition order: what a constructor built, and what stands in for it."""
    return [(path, m) for path, m in module.named_modules()
            if path and any(True for _ in m.parameters(recurse=False))]


class StandInError(RuntimeError):
    """The grader could not compute the stand-in on the arguments the student's code passed."""


class _Unsupported(Exception):
    pass


class StandIns:
    """Install proxies for `names` on `child.module` for the duration of a `with` block."""

    def __init__(self, child, names: list[str]):
        self.child = child
        self.names = [str(n) for n in names]
        self.saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> "StandIns":
        module = self.child.module
        for name in self.names:
            owner_name, _, leaf = name.rpartition(".")
            if leaf == "__init__":
                self._install_layers(name, module.__dict__.get(owner_name))
                continue
            if not owner_name:
                original = module.__dict__.get(leaf)
                if callable(original) and not isinstance(original, type):
                    self._install(module, leaf, self._function_proxy(name, original))
                continue
            owner = module.__dict__.get(owner_name)
            if not isinstance(owner, type) or leaf not in owner.__dict__:
                continue  # inherited or missing: not this class's own method
            original = owner.__dict__[leaf]
            if isinstance(original, staticmethod):
                self._install(owner, leaf, staticmethod(self._function_proxy(name, original.__func__)))
            elif callable(original) and not isinstance(original, (classmethod, property)):
                self._install(owner, leaf, self._method_proxy(name, owner, original))
        return self

    def __exit__(self, *exc) -> None:
        for owner, leaf, original in reversed(self.saved):
            if original is _ABSENT:
                owner.__dict__.pop(leaf, None)
            else:
                setattr(owner, leaf, original)
        self.saved.clear()

    def _install_layers(self, name: str, owner) -> None:
        """Proxy the `forward` of every layer of the grader-built instances of `owner` (an instance
        attribute, removed on exit: the student's class and other instances are untouched)."""
        if not isinstance(owner, type):
            return
        for handle, obj in list(self.child.handles.values()):
            if "/" in handle or type(obj) is not owner or not isinstance(obj, torch.nn.Module):
                continue
            found = layers(obj)
            inventory = [[path, type(m).__name__] for path, m in found]
            for path, layer in found:
                self.saved.append((layer, "forward", layer.__dict__.get("forward", _ABSENT)))
                layer.__dict__["forward"] = self._layer_proxy(name, layer, path, inventory,
                                                              layer.__dict__.get("forward") or layer.forward)

    def _layer_proxy(self, name: str, layer, path: str, inventory: list, original):
        def proxy(*args, **kwargs):
            extra = {"layer": {"path": path, "type": type(layer).__name__, "inventory": inventory}}
            return self.upcall(name, layer, args, kwargs, lambda a, kw: original(*a, **kw), extra=extra)
        return proxy

    def _install(self, owner, leaf: str, proxy) -> None:
        self.saved.append((owner, leaf, owner.__dict__[leaf]))
        setattr(owner, leaf, proxy)

    def _function_proxy(self, name: str, original):
        signature = _signature(original)

        def proxy(*args, **kwargs):
            return self.upcall(name, None, args, kwargs, lambda a, kw: original(*a, **kw), signature)
        proxy.__name__ = getattr(original, "__name__", name)
        proxy.__doc__ = getattr(original, "__doc__", None)
        return proxy

    def _method_proxy(self, name: str, owner: type, original):
        signature = _signature(original, owner, name.rpartition(".")[2])

        def proxy(obj, *args, **kwargs):
            if type(obj) is not owner:  # a subclass's inherited method belongs to the subclass's component
                return original(obj, *args, **kwargs)
            return self.upcall(name, obj, args, kwargs, lambda a, kw: original(obj, *a, **kw), signature)
        proxy.__name__ = getattr(original, "__name__", name)
        return proxy

    # ---- one upcall -----------------------------------------------------------------------
    def upcall(self, name: str, obj, args: tuple, kwargs: dict, run, signature: dict | None = None,
               extra: dict | None = None):
        """The grader's value of `name` on these arguments; `run(args, kwargs)` runs the student's own code (when
        the grader cannot answer, and to read the student's own layout on copies of the arguments)."""
        def fallback():
            return run(args, kwargs)

        if self.child.sock is None and getattr(self.child, "ask", None) is None:
            return fallback()
        leaves: list[torch.Tensor] = []
        try:
            msg = {**(extra or {}), "name": name, "self": None if obj is None else self._encode(obj, leaves, as_object=True),
                   "args": [self._encode(a, leaves) for a in args],
                   "kwargs": {str(k): self._encode(v, leaves) for k, v in kwargs.items()},
                   "signature": signature}  # the student's own parameters: the grader maps the call onto the reference's
        except _Unsupported:
            return fallback()
        want_grad = torch.is_grad_enabled() and any(t.requires_grad for t in leaves)
        msg["grad"] = bool(want_grad)
        reply = self._ask({"upcall": msg})
        if reply.get("fallback"):
            return fallback()
        layer = (extra or {}).get("layer")
        if not reply.get("ok"):
            what = f"the layer `{layer['path']}`" if layer else f"`{name}`"
            raise StandInError(f"calling {what} with these arguments fails for the correct implementation too: "
                               f"{reply.get('error', 'unknown error')}")
        own = None if layer else self._own_convention(name, reply, lambda: run(*_copies(args, kwargs)),
                                                      [*args, *kwargs.values()])
        if isinstance(own, torch.Tensor):
            return own
        device = next((t.device for t in leaves), self.child.device)
        outs = [torch.from_numpy(a.copy()).to(device) for a in reply["outputs"]]
        if want_grad and reply.get("tape") is not None:
            box = _Box(self, reply["tape"], leaves, outs)
            outs = list(_Upcall.apply(box, *leaves)) if outs else outs
        kind = reply.get("structure")
        if kind == "tensor" and isinstance(own, torch.Size):
            return _spread(outs[0], own)
        if kind == "tensor":
            return outs[0]
        if kind == "value":
            return reply.get("value")
        return tuple(outs) if kind == "tuple" else list(outs)

    def _own_convention(self, name: str, reply: dict, fallback, inputs: list):
        """The student's own layout of an upstream value when the assignment allows it: extra
        trailing dimensions whose sum is the reference's value (e.g. log q(z|x) per dimension
        (B, L) where the reference sums to (B,); the student's composite then reduces it itself).

        Returns the student's own tensor when it holds the reference's values in that layout. When
        the layout is there but the values are wrong (an upstream mistake, charged on its own
        component), the grader is told (an upcall with `note: own_layout`) and, if it asked for the student's layouts
        (`layout == "own"` in the reply: a composite written against its own per-dimension
        upstream), the layout's shape is returned: the caller then spreads the reference's value
        over the extra dimensions. When the student's own upstream fails or returns a layout that is
        neither the reference's nor per-dimension (a layout mistake of its own), the per-dimension
        layout is the input's: a value the reference sums over the last axis of an input `z` (B, L)
        -> (B,) is then spread over z's shape, the course notebooks' convention (so a composite
        written against it is judged on its own code, whatever its upstream returns). None otherwise:
        the reference's layout. The student's code runs on copies of the arguments (`_copies`: an in-place
        edit of its inputs must not reach the code under test) with the RNG state saved and restored, so its
        draws do not shift the noise of the code under test either."""
        if reply.get("structure") != "tensor":
            return None
        ref = torch.from_numpy(reply["outputs"][0].copy())
        devices = [self.child.device.index or 0] if self.child.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                own = fallback()
        except Exception:
            own = None
        try:
            if (isinstance(own, torch.Tensor) and own.is_floating_point() and own.dim() > ref.dim()
                    and tuple(own.shape[:ref.dim()]) == tuple(ref.shape)):
                with torch.no_grad():
                    reduced = own.detach().sum(dim=tuple(range(ref.dim(), own.dim()))).cpu().to(ref.dtype)
                if torch.allclose(reduced, ref, rtol=1e-4, atol=1e-3):
                    return own
                layout = own.shape
            elif isinstance(own, torch.Tensor) and tuple(own.shape) == tuple(ref.shape):
                return None  # the reference's layout
            else:  # fails, or a layout of its own: per dimension of the input it reduces, where there is one
                layout = next((t.shape for t in inputs if isinstance(t, torch.Tensor) and t.is_floating_point()
                               and t.dim() == ref.dim() + 1 and tuple(t.shape[:-1]) == tuple(ref.shape)), None)
                if layout is None:
                    return None
        except Exception:
            return None
        self._ask({"upcall": {"note": "own_layout", "name": name}})
        return layout if reply.get("layout") == "own" else None

    def backward(self, tape: int, cotangents, leaves: list[torch.Tensor]) -> list:
        reply = self._ask({"upcall_backward": {"tape": tape, "cotangents": list(cotangents)}})
        if not reply.get("ok"):
            raise StandInError(f"the gradient of a stand-in failed: {reply.get('error', 'unknown error')}")
        grads = []
        for t, g in zip(leaves, reply["grads"]):
            grads.append(None if g is None else torch.from_numpy(g.copy()).to(t.device, t.dtype))
        return grads

    def _ask(self, msg: dict) -> dict:
        if getattr(self.child, "ask", None) is not None:  # in-process stand-in of the sandbox (self-check bundles)
            return self.child.ask(msg)
        protocol.send(self.child.sock, msg)
        return protocol.recv(self.child.sock)

    def _encode(self, v, leaves: list, as_object: bool = False):
        """An upcall argument (grader/sandbox/values.py); _Unsupported for what cannot cross."""
        if isinstance(v, torch.Tensor) and not as_object:
            return values.tensor_arg(v, leaves)
        if not as_object and (v is None or type(v) in (bool, int, float, str)):
            return v
        if not as_object and type(v) in (list, tuple):
            return values.seq_arg([self._encode(x, leaves) for x in v], type(v).__name__)
        handle = self.child.handle_of(v)
        if handle is None:
            raise _Unsupported
        entry = values.handle_arg(handle)
        if isinstance(v, torch.nn.Module):
            for key, t in v.state_dict(keep_vars=True).items():
                entry["state"][key] = _array(t)
            # every name of a parameter, aliases included (a network kept as both `self.net` and
            # `self.decoder_net`): the twin knows it by one of them, and its gradient must come back
            index: dict[int, int] = {}
            for key, p in v.named_parameters(remove_duplicate=False):
                if p.requires_grad and p.is_floating_point():
                    if id(p) not in index:
                        index[id(p)] = len(leaves)
                        leaves.append(p)
                    entry["leaves"][key] = index[id(p)]
        return entry


def _copies(args: tuple, kwargs: dict) -> tuple[list, dict]:
    """The arguments with every tensor cloned (in the graph: gradients still reach the originals). The student's
    upstream runs on them only to read its layout: an in-place edit of its inputs (`mu.add_(...)`) must not
    change the caller's tensors, which the code under test goes on using."""
    def copy(v):
        if isinstance(v, torch.Tensor):
            return v.clone()
        return type(v)(copy(x) for x in v) if type(v) in (list, tuple) else v
    return [copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}


def _spread(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The reference's `value` (shape S) laid out as the student's `shape` (S + extra dims), spread
    evenly so that summing the extra dimensions gives it back (values and gradients)."""
    extra = tuple(shape[value.dim():])
    n = 1
    for d in extra:
        n *= int(d)
    return (value / n).reshape(tuple(value.shape) + (1,) * len(extra)).expand(*shape)


_ABSENT = object()  # `saved` marker: the attribute was not in the instance's __dict__


class _Box:
    """What the backward pass needs: the grader's tape id and the leaves, in upcall order."""

    def __init__(self, owner: StandIns, tape: int, leaves: list, outputs: list):
        self.owner, self.tape, self.leaves, self.outputs = owner, tape, leaves, outputs


class _Upcall(torch.autograd.Function):
    @staticmethod
    def forward(fctx, box, *leaves):
        fctx.box = box
        outs = box.outputs
        discrete = [o for o in outs if not o.is_floating_point()]
        if discrete:
            fctx.mark_non_differentiable(*discrete)
        return tuple(outs)

    @staticmethod
    def backward(fctx, *cots):
        box = fctx.box
        grads = box.owner.backward(box.tape, [None if c is None else _array(c) for c in cots], box.leaves)
        return (None, *grads)


def _array(t: torch.Tensor):
    return values.to_numpy(t)


def _signature(fn, owner=None, name: str = "") -> dict | None:
    """The student's signature of a function that stands in (plain data; None if unreadable)."""
    try:
        return read_signature(fn, owner, name)
    except (TypeError, ValueError):
        return None
