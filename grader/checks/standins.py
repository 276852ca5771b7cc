"""Grader side of stand-ins: correct values for the student's calls to their own upstream components.

A check of component C calls the student's code with every *other* component's functions and
methods replaced, in the child, by proxies (grader/sandbox/standins.py). Each proxy call arrives
here as an "upcall" (plain data); `StandInServer` evaluates the reference on it and answers with
arrays, and keeps the autograd graph ("tape") so the child can ask for gradients. So a
component's score depends on its own code only, whatever mistakes the others have and whatever
`--only` selects; the reference's code stays in this process. Rules: docs/grading.md.

Objects cross by handle. Every `{"__new__": ...}` a check sends gets a handle (`tag`: an opaque
random id, `new_handle`); this side keeps the spec and builds a *twin* from the reference's class
of the same name on first use (`twin`), then copies the object's current state (sent with each
upcall) into it by name. The child is untrusted (docs/sandbox.md, "What the child may ask of the
grader"): only upstream components are answered, a handle resolves only to what this grader handed
out, and what goes back when the reference fails is a fixed sentence.
"""

from __future__ import annotations

import math
import secrets
import weakref

import numpy as np
import torch

from grader import roles
from grader.signatures import bind, read_signature
from grader.sandbox import nets, values
from grader.sandbox.standins import layers

MAX_UPCALL_ELEMENTS = 4_000_000  # a proxy's arguments larger than this are refused (memory of the grader)
MAX_UPCALL_INT = 1_000_000  # larger integers (sizes, counts) are refused for the same reason
MAX_LAYERS = 500  # an object with more layers is not matched by role (its own layers run)
MAX_TAPE_BYTES = 64 * 1024 * 1024  # arrays kept for gradients (inputs + outputs of taped upcalls) per call
MAX_TAPES = 1000  # taped upcalls per call

# What the child hears when the reference cannot answer: fixed sentences, never text derived from a
# reference object (its repr, str or exception messages could carry its code, constants or values).
REFERENCE_FAILED = "the correct implementation cannot be evaluated on these arguments either"
TOO_MUCH_GRADIENT = "too many values with gradients in one call: the grader keeps at most 64 MiB of them"
BAD_UPCALL = "malformed stand-in request"


def new_handle() -> str:
    """An opaque id for an object the grader hands out: unguessable, and names nothing of the reference."""
    return "h" + secrets.token_hex(8)


def upstream_targets(rubric, ref, component: str) -> list[str]:
    """The dotted names (in the submission's module) that stand in while `component` is checked:
    the other components upstream of it, i.e. whose name the reference's code of `component` uses,
    directly or through the reference code it calls (`_reachable_names`); a component naming a
    class contributes the methods the reference class defines itself (constructors and the class's
    other components' methods excluded); a constructor component ("Class.__init__") contributes
    itself: the layers it built stand in. Model-level components (whole trained models) contribute
    nothing. Answering only upstream calls means the check of a component cannot ask for the
    reference's value of a component built on top of it (which would give its own answer away)."""
    key = (tuple(sorted(rubric.code_targets.items())), tuple(sorted(rubric.component_targets.items())), component)
    try:
        per_ref = _UPSTREAM.setdefault(ref, {})
    except TypeError:  # a reference that cannot be weakly referenced: not cached
        return _upstream_targets(rubric, ref, component)
    if key not in per_ref:  # the reference's code is read once per component, not once per check
        per_ref[key] = _upstream_targets(rubric, ref, component)
    return list(per_ref[key])


_UPSTREAM: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _upstream_targets(rubric, ref, component: str) -> list[str]:
    targets = rubric.code_targets
    own = targets.get(component, "")
    explicit = set(rubric.component_targets.values())
    out: list[str] = []
    for tag, target in targets.items():
        if tag == component or target == own or not target:
            continue
        obj = _resolve(ref, target)
        if isinstance(obj, type):
            for name, member in vars(obj).items():
                dotted = f"{target}.{name}"
                if name.startswith("_") or dotted in explicit or dotted == own:
                    continue
                if callable(member) or isinstance(member, staticmethod):
                    out.append(dotted)
        elif obj is not None:
            out.append(target)  # "Class.__init__": the layers it built stand in (grader/sandbox/standins.py)
    used = _reachable_names(ref, own) if own else None
    owner = _resolve(ref, own.rpartition(".")[0]) if "." in own else None
    if used is not None and isinstance(owner, type):
        # a method's check also calls the class's methods that are no component of their own (e.g. an
        # `elbo` built on the `posterior` under test); a constructor's check exercises its layers through all
        for name in vars(owner):
            dotted = f"{own.rpartition('.')[0]}.{name}"
            if own.endswith(".__init__") or (dotted not in explicit and not name.startswith("__")):
                used |= {name} | (_reachable_names(ref, dotted) or set())

    def upstream(t: str) -> bool:
        if used is None or t.endswith(".__init__") or t.rpartition(".")[2] in used:
            return True
        # calling a module (`self.encoder(x)`) runs its `forward`, named nowhere: a `forward` stands in
        # unless it is downstream, i.e. its own code reaches the component under test
        return t.endswith(".forward") and not (_reachable_names(ref, t) or set()) & _own_names(ref, own)

    # the own component's methods never stand in (a class component owns all its methods), except those that are
    # components of their own (the vae's `Encoder.reparameterization` inside the `encoder` class component)
    return sorted(t for t in set(out) if not (own and (t == own or t.startswith(own + ".") and t not in explicit))
                  and upstream(t))


def _own_names(ref, own: str) -> set[str]:
    """The names by which reference code reaches the component `own`: its function or method name, or
    a class's name and the names of its own methods (`forward` excepted: every module has one)."""
    obj = _resolve(ref, own)
    if isinstance(obj, type):
        return {own.rpartition(".")[2]} | {n for n in vars(obj) if not n.startswith("_") and n != "forward"}
    return {own.rpartition(".")[2]} - {"forward"} if not own.endswith(".forward") else {own.partition(".")[0], "forward"}


def _reachable_names(ref, target: str) -> "set[str] | None":
    """Every name (global or attribute) used by the reference's code of `target` and by the reference
    functions and methods it can reach by those names; None when `target` has no code to read (then
    every other component stands in, as before)."""
    start = _resolve(ref, target)
    if start is None:
        return None
    module = getattr(ref, "__name__", "")
    by_leaf: dict[str, list] = {}  # method name -> the reference classes' functions of that name
    for cls in vars(ref).values():
        if isinstance(cls, type) and cls.__module__ == module:
            for leaf, member in vars(cls).items():
                by_leaf.setdefault(leaf, []).append(member)
    seen: set[str] = set()
    todo, done = [start], set()
    while todo:
        obj = todo.pop()
        if id(obj) in done:
            continue
        done.add(id(obj))
        for name in _code_names(obj):
            if name in seen:
                continue
            seen.add(name)
            found = vars(ref).get(name)
            if found is not None and getattr(found, "__module__", None) == module:
                todo.append(found)
            todo += by_leaf.get(name, [])
    return seen


def _resolve(ref, dotted: str):
    obj = ref
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _code_names(obj) -> set[str]:
    """The names a function, method, property or class (all its own members) refers to in its code."""
    if isinstance(obj, type):
        out: set[str] = set()
        for member in vars(obj).values():
            out |= _code_names(member)
        return out
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        return set().union(*(_code_names(f) for f in (obj.fget, obj.fset) if f is not None))
    code = getattr(obj, "__code__", None)
    out = set()
    stack = [code] if code is not None else []
    while stack:
        c = stack.pop()
        out.update(c.co_names)
        stack += [k for k in c.co_consts if hasattr(k, "co_names")]
    return out


def map_layers(student: list, specified: list) -> dict[str, str]:
    """Which layer of the specified architecture each of the student's layers plays, by role.

    `student`, `specified`: [(path, class name), ...] in definition order (`layers`). A layer maps
    to the specified one of the same path and class (the assignment's names are the first hint);
    the remaining layers of each class pair up in definition order when both sides have equally
    many (e.g. `encoder.0`, `encoder.2` -> `conv1`, `conv2`). Returns {student path: specified path};
    a layer without a counterpart is absent."""
    kinds = {p: t for p, t in specified}
    out = {p: p for p, t in student if kinds.get(p) == t}
    taken = set(out.values())
    for kind in dict.fromkeys(t for _, t in student):
        mine = [p for p, t in student if t == kind and p not in out]
        theirs = [p for p, t in specified if t == kind and p not in taken]
        if mine and len(mine) == len(theirs):
            out.update(zip(mine, theirs))
    return out


def tag(value, specs: dict, handle: str | None = None):
    """Give every `__new__` spec in `value` a handle (recorded in `specs`); returns the tagged copy."""
    if isinstance(value, dict):
        if values.NEW in value:
            spec = dict(value[values.NEW])
            h = handle or new_handle()
            spec["args"] = [tag(a, specs) for a in spec.get("args", [])]
            spec["kwargs"] = {k: tag(v, specs) for k, v in (spec.get("kwargs") or {}).items()}
            spec["handle"] = h
            specs[h] = spec
            return {values.NEW: spec}
        return {k: tag(v, specs) for k, v in value.items()}
    if isinstance(value, list):
        return [tag(v, specs) for v in value]
    return value


class StandInServer:
    """Answers one check's upcalls. `names`: the dotted names allowed to stand in."""

    def __init__(self, ref, specs: dict, device, names: list[str], layout: str = "reference"):
        self.ref = ref
        # "reference": upstream values in the reference's shapes; "own": in the student's own layout
        # where the child reported one (`own_layouts`, see grader/sandbox/standins.py)
        self.layout = layout
        self.own_layouts: set[str] = set()
        self._grad_maps: dict = {}
        self.specs = specs
        self.device = torch.device(device)
        self.names = set(names)
        self.twins: dict[str, object] = {}
        self.tapes: dict[int, tuple[list, list]] = {}
        self.tape_bytes = 0  # inputs and outputs of the taped upcalls of the current call (MAX_TAPE_BYTES)
        self.used: set[str] = set()
        # per object handle: specified layers that answered for the student's, and the student's
        # layers without a specified counterpart (they ran as written)
        self.layers_used: dict[str, set[str]] = {}
        self.gaps: dict[str, set[str]] = {}

    def reset_call(self) -> None:
        self.tapes.clear()
        self.tape_bytes = 0

    def forget(self, handle: str) -> None:
        self.twins.pop(handle, None)

    # ---- twins ----------------------------------------------------------------------------
    def twin(self, handle: str):
        """The reference's counterpart of the student's object known as `handle`: an id this grader
        handed out (`new_handle`, or a `ctx.new` name), optionally "/<submodule>" for a submodule
        of the object the student built (e.g. "h3a…/encoder"). The submodule part is looked up in
        the twin's own table of submodules (`named_modules`), never by attribute access, so no
        handle reaches an attribute of a reference object (`__class__`, `__code__`, globals...)."""
        base, _, path = str(handle).partition("/")
        if base not in self.twins:
            spec = self.specs.get(base)
            if spec is None:
                raise LookupError("unknown object")
            cls = getattr(self.ref, str(spec["class"]), None)
            if not isinstance(cls, type):
                raise LookupError("no such class")
            # building must not move the RNG the stand-ins draw from (nn.Linear initialises randomly)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                obj = cls(*self._value(spec.get("args", [])), **self._value(spec.get("kwargs") or {}))
            if isinstance(obj, torch.nn.Module):
                obj = obj.to(self.device)
            for name, v in (spec.get("state") or {}).items():
                _copy_into(obj, name, v)
            self.twins[base] = obj
        obj = self.twins[base]
        if not path:
            return obj
        sub = dict(obj.named_modules()).get(path) if isinstance(obj, torch.nn.Module) and path else None
        if sub is None:
            raise LookupError("no such submodule")
        return sub

    def _value(self, v):
        if isinstance(v, np.ndarray):
            return torch.from_numpy(v.copy()).to(self.device)
        if isinstance(v, list):
            return [self._value(x) for x in v]
        if isinstance(v, dict):
            if values.NET in v:
                dtype = {"float32": torch.float32, "float64": torch.float64}[v.get("dtype", "float32")]
                return nets.build(v[values.NET], self.device, dtype)
            if values.NEW in v:
                return self.twin(v[values.NEW]["handle"])
            if values.REF in v:
                return self.twin(v[values.REF])
            if values.TUPLE in v:
                return tuple(self._value(x) for x in v[values.TUPLE])
            return {k: self._value(x) for k, x in v.items()}
        return v

    # ---- upcalls --------------------------------------------------------------------------
    def __call__(self, message: dict) -> dict:
        try:
            values.upcall(message)  # (the sandbox's client checked it already; the in-process self-check did not)
        except values.Malformed:
            return {"ok": False, "error": BAD_UPCALL}
        if (message.get("upcall") or {}).get("note") == "own_layout":
            # the child saw the student's own layout of an upstream value, with other values
            self.own_layouts.add(str(message["upcall"].get("name")))
            return {"ok": True}
        try:
            if "upcall" in message:
                reply = self._forward(message["upcall"])
                if reply.get("ok"):
                    reply["layout"] = self.layout
                return reply
            return self._backward(message["upcall_backward"])
        except _Fallback:
            return {"ok": False, "fallback": True}
        except Refused as e:  # the grader's own reason (sizes, counts): its words, nothing of the reference
            return {"ok": False, "error": e.sentence}
        except Exception as e:  # the reference fails on these arguments: the caller's mistake
            # Only a fixed sentence goes back: the exception's text comes from reference code and
            # could carry its constants, shapes or reprs. The builtin class name is kept: it helps and says nothing.
            kind = type(e).__name__ if type(e).__module__ == "builtins" else "error"
            return {"ok": False, "error": f"{REFERENCE_FAILED} ({kind})"}

    def _forward(self, msg: dict) -> dict:
        name = str(msg.get("name"))
        if name not in self.names:  # not upstream of this check's component: the student's own code runs
            raise _Fallback
        leaves: dict[int, torch.Tensor] = {}
        self._grad_maps = {}  # leaf -> the gradient in the student's parametrisation (roles)
        grad = bool(msg.get("grad"))
        size = [0]
        try:
            if msg.get("layer") is not None:
                obj = self._layer(msg["layer"], msg.get("self") or {}, leaves, grad)
            else:
                obj = None if msg.get("self") is None else self._decode(msg["self"], leaves, grad, size)
            args = [self._decode(a, leaves, grad, size) for a in msg.get("args", [])]
            kwargs = {str(k): v if str(k) == "seed" and type(v) is int else self._decode(v, leaves, grad, size)
                      for k, v in (msg.get("kwargs") or {}).items()}
        except LookupError:
            raise _Fallback from None
        args, kwargs = _as_reference_call(self.ref, name, msg.get("signature"), args, kwargs)
        owner, _, leaf = name.rpartition(".")
        if msg.get("layer") is not None:
            fn = obj  # the specified layer, called like the student's
        elif owner:
            cls = getattr(self.ref, owner)
            fn = getattr(cls, leaf)
            if obj is not None:
                if type(obj) is not cls:
                    raise _Fallback
                fn = getattr(obj, leaf)
        else:
            fn = getattr(self.ref, leaf)
        with torch.set_grad_enabled(grad):
            out = fn(*args, **kwargs)
        self.used.add(name)
        if isinstance(out, torch.Tensor):
            structure, outs = "tensor", [out]
        elif isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
            structure, outs = type(out).__name__, list(out)
        elif isinstance(out, (bool, int, float)) or out is None:
            return {"ok": True, "structure": "value", "value": out if not isinstance(out, float) or math.isfinite(out)
                    else None, "outputs": []}
        else:
            raise TypeError("the reference returned something that is not a tensor")
        reply = {"ok": True, "structure": structure, "outputs": [_numpy(o) for o in outs], "tape": None}
        if grad and any(o.requires_grad for o in outs):
            # the graph is kept until the call ends (for the child's backward): bounded per call
            need = sum(t.numel() * t.element_size() for t in [*outs, *leaves.values()])
            if len(self.tapes) >= MAX_TAPES or self.tape_bytes + need > MAX_TAPE_BYTES:
                raise Refused(TOO_MUCH_GRADIENT)
            self.tape_bytes += need
            tape = len(self.tapes) + 1
            order = [leaves.get(i) for i in range(max(leaves, default=-1) + 1)]
            self.tapes[tape] = (outs, order, dict(self._grad_maps))
            reply["tape"] = tape
        return reply

    def _backward(self, msg: dict) -> dict:
        outs, order, grad_maps = self.tapes[int(msg["tape"])]
        cots = msg.get("cotangents") or []
        pairs = [(o, torch.from_numpy(np.array(c, copy=True)).to(o.device, o.dtype))
                 for o, c in zip(outs, cots) if c is not None and o.requires_grad and tuple(np.shape(c)) == tuple(o.shape)]
        wrt = [(i, t) for i, t in enumerate(order) if t is not None and t.requires_grad]
        grads: list = [None] * len(order)
        if pairs and wrt:
            # The vector-Jacobian product as the gradient of one scalar: passing the cotangents as
            # grad_outputs makes torch import its symbolic-shapes machinery (~1.2 s on a cold grader).
            total = sum((o * c).sum() for o, c in pairs)
            got = torch.autograd.grad(total, [t for _, t in wrt], retain_graph=True, allow_unused=True)
            for (i, _), g in zip(wrt, got):
                grads[i] = None if g is None else grad_maps.get(i, _same)(_numpy(g))
        return {"ok": True, "grads": grads}

    def _layer(self, info: dict, entry: dict, leaves: dict, grad: bool):
        """The twin's layer playing the role of the student's layer `info["path"]` (map_layers), with
        the student's values where a parameter has the specified name and shape; the others keep the
        check's values (a constructor's mistake, charged on the constructor's own check)."""
        base, _, _ = str(entry.get(values.HANDLE, "")).partition("/")
        twin = self.twin(base)
        inventory = info.get("inventory") or []
        if not isinstance(inventory, list) or len(inventory) > MAX_LAYERS:
            raise LookupError("too many layers")  # the student's own layers run (no quadratic matching here)
        mine = [(str(p), str(t)) for p, t in inventory]
        path = map_layers(mine, [(p, type(m).__name__) for p, m in layers(twin)]).get(str(info.get("path")))
        if path is None:
            self.gaps.setdefault(base, set()).add(f"`{info.get('path')}` ({info.get('type')})")
            raise LookupError(info.get("path"))
        self.layers_used.setdefault(base, set()).add(path)
        layer = twin.get_submodule(path)
        self._mirror(layer, entry, leaves, grad, strict=False)
        return layer

    def _mirror(self, obj: torch.nn.Module, entry: dict, leaves: dict, grad: bool, strict: bool) -> None:
        """Copy the student's state sent with an upcall into the twin `obj` (by name, only what
        changed) and register its parameters as gradient leaves. `strict`: every floating tensor of
        the twin needs a student tensor of the same name and shape, else the student's code runs
        (another layout, grader.roles); not strict: only those that fit are copied (the object's
        constructor stands in, so the twin keeps the check's values for the rest)."""
        own = obj.state_dict(keep_vars=True)
        state = entry.get("state") or {}
        mapped: dict = {}
        fits = {key for key, t in own.items() if key in state and tuple(np.shape(state[key])) == tuple(t.shape)}
        if strict and any(t.is_floating_point() and key not in fits for key, t in own.items()):
            # a mixture prior under other names or in another parametrisation is mirrored by role
            # (grader.roles), its gradients mapped back; any other layout: _Fallback
            state, mapped = _by_role(own, state)
            fits = {key for key, t in own.items() if key in state and tuple(np.shape(state[key])) == tuple(t.shape)}
        for key in fits:
            a = state[key]
            # copy only what changed: an in-place copy would invalidate earlier tapes
            if not np.array_equal(_numpy(own[key]), a):
                with torch.no_grad():
                    own[key].copy_(torch.from_numpy(np.array(a, copy=True)).to(own[key].device, own[key].dtype))
        params = dict(obj.named_parameters())
        for key, i in (entry.get("leaves") or {}).items():
            if key in mapped and mapped[key][0] in params:  # a role: the gradient is mapped back
                leaves[int(i)] = params[mapped[key][0]]
                self._grad_maps[int(i)] = mapped[key][1]
            elif key in params and key in fits:
                leaves[int(i)] = params[key]

    def _decode(self, v, leaves: dict, grad: bool, size: list):
        if isinstance(v, dict):
            if values.TENSOR in v:
                a = np.asarray(v[values.TENSOR])
                size[0] += a.size
                if size[0] > MAX_UPCALL_ELEMENTS:
                    raise Refused(f"the arguments are too large (the grader allows {MAX_UPCALL_ELEMENTS:,} numbers)")
                t = torch.from_numpy(a.copy()).to(self.device)
                if "leaf" in v and t.is_floating_point():
                    if grad:
                        t.requires_grad_(True)
                    leaves[int(v["leaf"])] = t
                return t
            if values.SEQ in v:
                items = [self._decode(x, leaves, grad, size) for x in v[values.SEQ]]
                return tuple(items) if v.get("kind") == "tuple" else items
            if values.HANDLE in v:
                handle = str(v[values.HANDLE])
                obj = self.twin(handle)
                if isinstance(obj, torch.nn.Module):
                    # an object whose constructor stands in keeps the check's values where the
                    # student's constructor built something else
                    base = self.twin(handle.partition("/")[0])
                    self._mirror(obj, v, leaves, grad, strict=f"{type(base).__name__}.__init__" not in self.names)
                return obj
            raise Refused(BAD_UPCALL)
        if type(v) is int and abs(v) > MAX_UPCALL_INT:  # e.g. a sample count: the grader would allocate it
            raise Refused(f"an integer argument is larger than the grader allows ({MAX_UPCALL_INT:,})")
        if v is None or type(v) in (bool, int, float, str):
            return v
        raise Refused(BAD_UPCALL)


def _same(g: np.ndarray) -> np.ndarray:
    return g


def _by_role(own: dict, state: dict) -> tuple[dict, dict]:
    """The student's mixture-prior state in the twin's names and parametrisation (grader.roles).

    `own`: the twin's state_dict; `state`: the student's (key -> array). Returns (state for the
    twin, {student key: (twin key, gradient map)}), where the gradient map turns the gradient
    with respect to the twin's tensor into the gradient with respect to the student's (chain rule
    through log-std / variance spreads, one spread per component, other logit shapes).
    Raises _Fallback when either side is not a mixture the roles describe."""
    floats = {k: tuple(t.shape) for k, t in own.items() if t.is_floating_point()}
    student = {k: tuple(np.shape(a)) for k, a in state.items() if np.asarray(a).dtype.kind == "f"}
    for K, L in {s for s in floats.values() if len(s) == 2}:
        try:
            twin = roles.mixture_layout(floats, K, L)
            mine = roles.mixture_layout(student, K, L, allow_missing_weights=True)
        except roles.InterfaceError:
            continue
        if set(floats) != {twin.means, twin.spread, twin.logits} or twin.kind != "logvar" or twin.per_component:
            continue
        means, lv, w = mine.from_student(state)
        if not (np.isfinite(means).all() and np.isfinite(lv).all() and np.isfinite(w).all()):
            continue
        out = twin.to_student(means, lv, w)
        out = {k: np.asarray(a, dtype=np.asarray(state[mine.means]).dtype) for k, a in out.items()}

        def spread_grad(g, lv=lv, mine=mine):
            g = np.asarray(g, dtype=np.float64).reshape(lv.shape)  # d/d log-variance, (K, L)
            g = {"logvar": g, "logstd": 2 * g, "var": g * np.exp(-lv), "std": 2 * g * np.exp(-0.5 * lv)}[mine.kind]
            if mine.per_component:
                g = g.sum(axis=1)
            return g.reshape(mine.spread_shape)

        mapped = {mine.means: (twin.means, lambda g, m=mine: np.asarray(g).reshape(m.means_shape)),
                  mine.spread: (twin.spread, spread_grad)}
        if mine.logits is not None:  # without weights the twin keeps equal ones (its logits at 0)
            mapped[mine.logits] = (twin.logits, lambda g, m=mine: np.asarray(g).reshape(m.logits_shape))
        return out, mapped
    raise _Fallback


class Refused(Exception):
    """The grader will not serve this upcall; `sentence` (the grader's own words) is what the child hears."""

    def __init__(self, sentence: str):
        super().__init__(sentence)
        self.sentence = sentence


class _Fallback(Exception):
    """The stand-in cannot be computed here (an object the grader does not know): the child runs the student's code."""


def _as_reference_call(ref, name: str, student_sig, args: list, kwargs: dict) -> tuple[list, dict]:
    """The student's call of their own `name` (written against their signature: renamed keywords,
    an extra parameter left at its default) mapped onto the reference's parameters; as it is when
    it cannot be mapped (the reference then says what does not fit)."""
    if not student_sig or "params" not in student_sig:
        return args, kwargs
    owner, _, leaf = name.rpartition(".")
    try:
        fn = getattr(getattr(ref, owner), leaf) if owner else getattr(ref, leaf)
        reference_sig = read_signature(fn, getattr(ref, owner) if owner else None, leaf)
        new_args, new_kwargs, _ = bind(student_sig, reference_sig, args, kwargs)
    except Exception:  # (the signature is the child's word: anything malformed leaves the call as it is)
        return args, kwargs
    return new_args, new_kwargs


def _copy_into(obj, dotted: str, value) -> None:
    target = obj
    *path, leaf = dotted.split(".")
    for part in path:
        target = getattr(target, part)
    current = getattr(target, leaf, None)
    if isinstance(current, torch.Tensor) and tuple(current.shape) == tuple(np.shape(value)):
        with torch.no_grad():
            current.copy_(torch.from_numpy(np.array(value, copy=True)).to(current.device, current.dtype))


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()

