"""The one codec of what crosses the sandbox's boundary: how values are tagged, and what the grader accepts.

`grader.sandbox.protocol` moves a tree of dicts, lists, str, int, float, bool, None and numpy
arrays (allow-listed dtypes) as bytes. This module says what those trees *mean*:

- a student's return value, as the child exports it (`export`) and as the checks read it:
    {"__tensor__": array, "dtype": str, "device": str, "requires_grad": bool, "subclass": str | None}
    {"__numpy__": array}           a numpy array (the contract asks for tensors)
    {"__seq__": [value, ...], "kind": "list" | "tuple", "len": int}   (at most MAX_SEQ items kept)
    {"__object__": str}            anything else, by type name
    bool, int, float               plain Python numbers
- an argument of an upcall (a stand-in call, grader/sandbox/standins.py), as the child encodes it
  (`arg`) and as the grader reads it (grader/checks/standins.py):
    {"__tensor__": array, "leaf": int}     (leaf: its index among the call's gradient leaves)
    {"__seq__": [arg, ...], "kind": "list" | "tuple"}
    {"__handle__": str, "state": {str: array}, "leaves": {str: int}}   an object the grader built
    None, bool, int, float, str
- the grader's own values in requests (`__net__`, `__new__`, `__ref__`, `__tuple__`: read by the child).

Everything the child sends is untrusted: `reply` and `upcall` check a message's whole shape before
the grader reads it, and raise `Malformed` (a sentence for the student's report) for anything else
— missing keys, wrong types, arrays where numbers belong, trees too deep or too wide — so a
tampered child costs its own check, never an internal grader error.
"""

from __future__ import annotations

import numpy as np

TENSOR, NUMPY, SEQ, OBJECT, HANDLE = "__tensor__", "__numpy__", "__seq__", "__object__", "__handle__"
NET, NEW, REF, TUPLE = "__net__", "__new__", "__ref__", "__tuple__"

MAX_DEPTH = 8  # nesting of a student's value (export stops at 4) or of an upcall argument
MAX_SEQ = 64  # items of a sequence kept by `export`
MAX_NODES = 10_000  # dicts, lists and leaves in one message's values
MAX_TEXT = 4000  # characters of a string the grader keeps from the child
MAX_TEXT_TOTAL = 1 << 20  # characters of all the strings of one message (the child truncates its own to MAX_TEXT)
MAX_NAMES = 100_000  # names in a `load` reply (a module's public names)


class Malformed(ValueError):
    """The child sent something that is not a well-formed message (it says what)."""


# ---- the child's side: producing values ------------------------------------------------------

def export(o, depth: int = 0):
    """A student's return value as plain data (the tags above), with what the checks need to judge its type.

    Runs in the child on objects the student made: reads them only through torch's and numpy's own
    functions (a tensor subclass's overrides are switched off), never through their methods."""
    import torch

    if depth > 4:
        return {OBJECT: "nested too deep"}
    if isinstance(o, torch.Tensor):
        with torch._C.DisableTorchFunctionSubclass():
            return {
                TENSOR: to_numpy(o),
                "dtype": str(o.dtype).replace("torch.", ""),
                "device": str(o.device),
                "requires_grad": bool(torch.Tensor.requires_grad.__get__(o)),
                "subclass": None if type(o) in (torch.Tensor, torch.nn.Parameter) else type(o).__name__,
            }
    if isinstance(o, np.ndarray):
        from grader.sandbox.protocol import ALLOWED_DTYPES

        if o.dtype.name in ALLOWED_DTYPES:
            return {NUMPY: np.array(o, copy=True)}
        return {OBJECT: f"numpy array of dtype {o.dtype}"}
    if isinstance(o, (bool, int, float)) and type(o) in (bool, int, float):
        return o
    if isinstance(o, (list, tuple)) and type(o) in (list, tuple):
        return {SEQ: [export(x, depth + 1) for x in o[:MAX_SEQ]], "kind": type(o).__name__, "len": len(o)}
    return {OBJECT: type(o).__module__ + "." + type(o).__qualname__}


def to_numpy(t) -> np.ndarray:
    """A tensor's values as a fresh numpy array on the CPU (bfloat16 widened to float32)."""
    import torch

    with torch._C.DisableTorchFunctionSubclass():
        t = torch.Tensor.detach(t)
        if t.dtype == torch.bfloat16:
            t = t.float()
        return torch.Tensor.numpy(torch.Tensor.contiguous(torch.Tensor.cpu(t))).copy()


def tensor_arg(t, leaves: list) -> dict:
    """An upcall argument for tensor `t`; a floating tensor becomes gradient leaf number len(leaves)."""
    entry = {TENSOR: to_numpy(t)}
    if t.is_floating_point():
        entry["leaf"] = len(leaves)
        leaves.append(t)
    return entry


def seq_arg(items: list, kind: str) -> dict:
    return {SEQ: items, "kind": kind}


def handle_arg(handle: str) -> dict:
    """An upcall argument naming an object the grader built (its state and leaves are filled in by the caller)."""
    return {HANDLE: handle, "state": {}, "leaves": {}}


# ---- the grader's side: accepting what the child sent --------------------------------------------

class _Budget:
    def __init__(self, nodes: int = MAX_NODES):
        self.nodes, self.max_nodes, self.chars = 0, nodes, 0

    def tick(self) -> None:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise Malformed(f"a value with more than {self.max_nodes:,} parts")

    def text(self, s, what: str) -> None:
        """`s` is a short text (`_text`) and the message's texts stay within MAX_TEXT_TOTAL characters."""
        _text(s, what)
        self.chars += len(s)
        if self.chars > MAX_TEXT_TOTAL:
            raise Malformed(f"more than {MAX_TEXT_TOTAL:,} characters of text in one message")


def value(v, depth: int = 0, budget: _Budget | None = None):
    """`v` if it is a well-formed student value (see the module's docstring), else Malformed."""
    budget = budget or _Budget()
    budget.tick()
    if depth > MAX_DEPTH:
        raise Malformed("a value nested too deep")
    if v is None or type(v) in (bool, int, float):
        return v
    if not isinstance(v, dict):
        raise Malformed(f"a return value of an unexpected kind ({type(v).__name__})")
    if TENSOR in v:
        _keys(v, {TENSOR, "dtype", "device", "requires_grad", "subclass"}, "a tensor")
        _array(v[TENSOR], "a tensor's values")
        _text(v["dtype"], "a tensor's dtype")
        _text(v["device"], "a tensor's device")
        if v["dtype"] != v[TENSOR].dtype.name and not (v["dtype"] == "bfloat16" and v[TENSOR].dtype.name == "float32"):
            # the checks read the dtype from the text (bfloat16 travels widened): it must say what the array is
            raise Malformed(f"a tensor said to be {v['dtype'][:20]} whose values are {v[TENSOR].dtype.name}")
        if type(v["requires_grad"]) is not bool or not (v["subclass"] is None or isinstance(v["subclass"], str)):
            raise Malformed("a tensor's description")
        return v
    if NUMPY in v:
        _keys(v, {NUMPY}, "a numpy array")
        _array(v[NUMPY], "a numpy array")
        return v
    if SEQ in v:
        _keys(v, {SEQ, "kind", "len"}, "a sequence")
        if (not isinstance(v[SEQ], list) or len(v[SEQ]) > MAX_SEQ or v["kind"] not in ("list", "tuple")
                or type(v["len"]) is not int or not 0 <= v["len"] < 2 ** 62 or len(v[SEQ]) != min(v["len"], MAX_SEQ)):
            raise Malformed("a sequence's description")
        for x in v[SEQ]:
            value(x, depth + 1, budget)
        return v
    if OBJECT in v:
        _keys(v, {OBJECT}, "an object")
        _text(v[OBJECT], "an object's type")
        return v
    raise Malformed("a return value of an unexpected kind (a dict without a known tag)")


def reply(op, message: dict) -> dict:
    """The child's final reply to a request `op`, checked: `message` itself, or Malformed."""
    if not isinstance(message.get("ok"), bool):
        raise Malformed("a reply without its `ok`")
    if message.get("seconds") is not None and type(message["seconds"]) not in (int, float):
        raise Malformed("a reply's `seconds`")
    if not message["ok"]:
        err = message.get("error")
        if not isinstance(err, dict):
            raise Malformed("an error reply without its message")
        for k in ("type", "message", "where", "traceback", "constructor"):  # each quoted in results.json and the report
            if err.get(k) is not None:
                _text(err[k], f"an error's {k}")
        return message
    check = _REPLIES.get(str(op))
    if check is not None:
        check(message)
    return message


def _call_reply(m: dict) -> None:
    if "result" not in m:
        raise Malformed("a reply without the call's result")
    value(m["result"])
    after = m.get("inputs_after")  # the tensor arguments after the call (the property check `pure`)
    if after is not None:
        if not isinstance(after, dict) or len(after) > MAX_SEQ or not all(isinstance(k, str) and len(k) <= 200 for k in after):
            raise Malformed("the inputs after a call")
        for v in after.values():
            value(v)
    grads = m.get("grads")
    if grads is not None:
        if not isinstance(grads, dict) or len(grads) > MAX_SEQ * 16 or not all(isinstance(k, str) and len(k) <= MAX_TEXT for k in grads):
            raise Malformed("the gradients of a call")
        for k, g in grads.items():
            if g is not None:
                _array(g, f"the gradient {k[:40]!r}")


def _new_reply(m: dict) -> None:
    _pairs(m.get("unassigned", []), "the state entries that did not fit")
    if m.get("constructor_error") is not None:
        _text(m["constructor_error"], "a constructor's error")


def _params_reply(m: dict) -> None:
    budget = _Budget()
    for k, a in m.items():
        if k not in ("ok", "seconds"):
            budget.tick()
            budget.text(k, "a parameter's name")
            _array(a, "a parameter")


def _layers_reply(m: dict) -> None:
    layers = m.get("layers")
    if not isinstance(layers, list):
        raise Malformed("the list of layers")
    budget = _Budget()
    for item in layers:
        budget.tick()
        if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str) or not isinstance(item[1], str)
                or not isinstance(item[2], dict) or len(item[2]) > MAX_SEQ
                or not all(isinstance(s, list) and len(s) <= 32 and all(type(d) is int for d in s) for s in item[2].values())):
            raise Malformed("a layer's description")
        for text in (item[0], item[1], *item[2]):
            budget.text(text, "a layer's name")


def _load_reply(m: dict) -> None:
    names = m.get("names")
    if not isinstance(names, list) or len(names) > MAX_NAMES:
        raise Malformed("the module's names")
    budget = _Budget(MAX_NAMES)
    for n in names:
        budget.text(n, "the module's names")


MAX_HARNESS_NODES = 200_000  # dicts, lists and leaves in a harness's result (its arrays travel as arrays)


def _harness_reply(m: dict) -> None:
    """A harness's result (a training loop's history, weights, centres) may hold any plain data, but its text is
    cut to MAX_TEXT characters a string (what an honest loop's long error message keeps) and its tree to
    MAX_HARNESS_NODES parts: a forged 50 MB `message` or 10 M-item loss list cost the report minutes."""
    if "result" not in m:
        raise Malformed("a reply without the harness's result")
    budget = _Budget(MAX_HARNESS_NODES)

    def cut(v, depth: int = 0):
        budget.tick()
        if depth > MAX_DEPTH * 2:
            raise Malformed("a harness result nested too deep")
        if isinstance(v, str):
            return v if len(v) <= MAX_TEXT else v[:MAX_TEXT] + " [cut]"
        if isinstance(v, dict):
            return {(k[:MAX_TEXT] if isinstance(k, str) else k): cut(x, depth + 1) for k, x in v.items()}
        if isinstance(v, list):
            return [cut(x, depth + 1) for x in v]
        return v

    m["result"] = cut(m["result"])


_REPLIES = {"call": _call_reply, "new": _new_reply, "assign": lambda m: _pairs(m.get("unassigned", []), "entries"),
            "params": _params_reply, "layers": _layers_reply, "load": _load_reply,
            "harness": _harness_reply}


def upcall(message: dict) -> dict:
    """An upcall ({"upcall": {...}} or {"upcall_backward": {...}}) checked: the inner message, or Malformed."""
    if "upcall" in message:
        m = message["upcall"]
        if not isinstance(m, dict):
            raise Malformed("a stand-in request")
        if m.get("note") is not None:
            _text(m["note"], "a note")
            _text(m.get("name", ""), "a name")
            return m
        _text(m.get("name"), "the name of a stand-in")
        budget = _Budget()
        args, kwargs = m.get("args", []), m.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise Malformed("a stand-in's arguments")
        for a in [*args, *kwargs.values()]:
            arg(a, 0, budget)
        if m.get("self") is not None:
            if not isinstance(m["self"], dict) or HANDLE not in m["self"]:
                raise Malformed("a stand-in's object")
            arg(m["self"], 0, budget)
        if m.get("layer") is not None:
            layer = m["layer"]
            if (not isinstance(layer, dict) or not isinstance(layer.get("path"), str) or not isinstance(layer.get("type"), str)
                    or not isinstance(layer.get("inventory"), list)):
                raise Malformed("a layer's stand-in request")
            for item in layer["inventory"]:
                if not isinstance(item, list) or len(item) != 2 or not all(isinstance(x, str) for x in item):
                    raise Malformed("a layer's inventory")
        if not isinstance(m.get("grad", False), bool):
            raise Malformed("a stand-in's gradient flag")
        sig = m.get("signature")
        if sig is not None and not isinstance(sig, dict):
            raise Malformed("a stand-in's signature")
        return m
    if "upcall_backward" in message:
        m = message["upcall_backward"]
        if not isinstance(m, dict) or type(m.get("tape")) is not int or not isinstance(m.get("cotangents", []), list):
            raise Malformed("a gradient request")
        for c in m.get("cotangents", []):
            if c is not None:
                _array(c, "a cotangent")
        return m
    raise Malformed("a message that is neither a reply nor a stand-in request")


def arg(v, depth: int = 0, budget: _Budget | None = None):
    """`v` if it is a well-formed upcall argument (see the module's docstring), else Malformed."""
    budget = budget or _Budget()
    budget.tick()
    if depth > MAX_DEPTH:
        raise Malformed("an argument nested too deep")
    if v is None or type(v) in (bool, int, float):
        return v
    if isinstance(v, str):
        _text(v, "a text argument")
        return v
    if not isinstance(v, dict):
        raise Malformed("an argument of an unexpected kind")
    if TENSOR in v:
        _array(v[TENSOR], "a tensor argument")
        if "leaf" in v and (type(v["leaf"]) is not int or not 0 <= v["leaf"] < MAX_NODES):
            raise Malformed("a tensor argument's leaf")
        return v
    if SEQ in v:
        if not isinstance(v[SEQ], list) or v.get("kind") not in ("list", "tuple"):
            raise Malformed("a sequence argument")
        for x in v[SEQ]:
            arg(x, depth + 1, budget)
        return v
    if HANDLE in v:
        _text(v[HANDLE], "an object's handle")
        state, leaves = v.get("state", {}), v.get("leaves", {})
        if not isinstance(state, dict) or not isinstance(leaves, dict):
            raise Malformed("an object's state")
        for a in state.values():
            budget.tick()
            _array(a, "an object's state")
        for i in leaves.values():
            if type(i) is not int or not 0 <= i < MAX_NODES:
                raise Malformed("an object's gradient leaves")
        return v
    raise Malformed("an argument of an unexpected kind (a dict without a known tag)")


def _keys(v: dict, keys: set, what: str) -> None:
    if set(v) != keys:
        raise Malformed(f"{what} described with other fields")


def _array(a, what: str) -> None:
    if not isinstance(a, np.ndarray):
        raise Malformed(f"{what}: not an array")


def _text(s, what: str) -> None:
    if not isinstance(s, str) or len(s) > MAX_TEXT:
        raise Malformed(f"{what}: not a short text")


def _pairs(items, what: str) -> None:
    if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                                              for p in items):
        raise Malformed(what)
    budget = _Budget()
    for p in items:
        budget.tick()
        for x in p:
            budget.text(x, what)
