"""Nothing the sandboxed child says is trusted (issue 19, the protocol side; docs/sandbox.md, "What the
child may ask of the grader").

The child is the student's: their code runs there and can reach its socket, its stand-in proxies
and the codec. Each attack below is written as such a student would: leaking the reference through
stand-in handles and error messages, harvesting reference answers through the stand-ins, flooding
the grader with upcalls, growing its memory with gradient tapes, trickling a reply, and sending
malformed messages. Each must fail, cost the grader nothing it cannot bound, and leave a fair score.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grader.checks import describe, sequence, tensor, StudentValueError
from grader.checks import standins as server_side
from grader.checks.inputs import check_secret, check_seed, new_secret
from grader.sandbox import protocol, values
from grader.sandbox.client import MAX_UPCALLS_PER_REQUEST, Sandbox, SandboxConfig
from grader.sandbox.errors import StudentCodeError, StudentCrash, StudentTimeout

REPO = Path(__file__).resolve().parents[1]


# ---- the codec: malformed, oversized and adversarial messages (hypothesis) ---------------------------

ARRAYS = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.bool_]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
KEYS = st.sampled_from(["ok", "result", "grads", "error", "message", "where", "traceback", "type", "__tensor__",
                        "dtype", "device", "requires_grad", "subclass", "__seq__", "kind", "len", "__numpy__",
                        "__object__", "__handle__", "state", "leaves", "leaf", "upcall", "upcall_backward", "name",
                        "args", "kwargs", "self", "grad", "tape", "cotangents", "layer", "path", "inventory",
                        "unassigned", "constructor_error", "layers", "names", "history", "seconds", "note", "x"])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                   st.text(max_size=8), st.sampled_from(["list", "tuple", "float32", "cpu"]), ARRAYS)
TREES = st.recursive(LEAVES, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                    st.dictionaries(KEYS, kids, max_size=5)), max_leaves=25)
MESSAGES = st.dictionaries(KEYS, TREES, max_size=6)
OPS = st.sampled_from(["call", "new", "assign", "params", "layers", "load", "train", "harness", "unknown"])


@settings(deadline=None, max_examples=300, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_message_or_a_protocol_error(data):
    try:
        protocol.decode(data)
    except protocol.ProtocolError:
        pass


@settings(deadline=None, max_examples=300, suppress_health_check=list(HealthCheck))
@given(st.recursive(st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=4)),
                    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(
                        st.sampled_from(["__nd__", "a", "tree"]), kids, max_size=2)), max_leaves=12),
       st.lists(st.fixed_dictionaries({"dtype": st.sampled_from(["float32", "int64", "object", "<f8", 3]),
                                       "shape": st.lists(st.integers(-2, 2 ** 40), max_size=3)}), max_size=3),
       st.binary(max_size=64))
def test_forged_headers_decode_to_a_message_or_a_protocol_error(tree, arrays, payload):
    """Array references out of range or negative, bad dtypes, shapes that overflow int64, short payloads."""
    header = json.dumps({"tree": tree, "arrays": arrays}).encode()
    try:
        protocol.decode(struct.pack("!Q", len(header)) + header + payload)
    except protocol.ProtocolError:
        pass


def test_deep_and_oversized_messages_are_refused():
    deep = "[" * 100_000 + "]" * 100_000
    header = json.dumps({"tree": 0, "arrays": []}).replace("0", deep, 1).encode()
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(struct.pack("!Q", len(header)) + header)
    import socket

    a, b = socket.socketpair()
    try:
        a.sendall(struct.pack("!Q", protocol.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(protocol.ProtocolError, match="exceeds"):
            protocol.recv(b)
    finally:
        a.close(), b.close()


@settings(deadline=None, max_examples=400, suppress_health_check=list(HealthCheck))
@given(OPS, MESSAGES)
def test_a_reply_is_accepted_whole_or_refused_as_malformed(op, message):
    """What the checks then read of an accepted reply never raises anything but the student's own error."""
    try:
        values.reply(op, message)
    except values.Malformed as e:
        assert str(e)
        return
    if op == "call" and message["ok"]:
        result = message["result"]
        for read in (lambda: tensor(result, "f"), lambda: sequence(result, "f", 2), lambda: describe(result)):
            try:
                read()
            except StudentValueError:
                pass


@settings(deadline=None, max_examples=400, suppress_health_check=list(HealthCheck))
@given(st.one_of(MESSAGES, st.fixed_dictionaries({"upcall": MESSAGES}), st.fixed_dictionaries({"upcall_backward": MESSAGES})))
def test_a_malformed_upcall_gets_a_fixed_answer_never_an_exception(message):
    server = _server()
    answer = server(message)
    assert isinstance(answer, dict) and answer.get("ok") in (True, False)
    if not answer["ok"] and "error" in answer:
        assert _fixed(answer["error"]), answer


@settings(deadline=None, max_examples=60)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3), ARRAYS),
                    lambda kids: st.one_of(st.lists(kids, max_size=70), st.tuples(kids, kids)), max_leaves=80))
def test_whatever_a_student_returns_exports_to_a_well_formed_value(obj):
    values.value(protocol.decode(protocol.encode({"v": values.export(obj)}))["v"])


# ---- stand-ins: handles name only what the grader handed out, errors are fixed sentences -------------

FIXED = {server_side.BAD_UPCALL, server_side.TOO_MUCH_GRADIENT, "no stand-ins in this request"}


def _fixed(sentence: str) -> bool:
    return (sentence in FIXED or re.fullmatch(re.escape(server_side.REFERENCE_FAILED) + r" \((\w+)\)", sentence) is not None
            or sentence.startswith(("the arguments are too large", "an integer argument is larger")))


def _server(names=("kl_standard_normal", "log_px_importance", "BernoulliDecoder.log_prob", "BernoulliDecoder.forward")):
    import reference.amortized_vs_lo as ref

    specs: dict = {}
    handle = server_side.new_handle()
    from grader.sandbox import nets

    spec = {"class": "BernoulliDecoder", "args": [], "kwargs": {"net": {"__net__": nets.mlp_spec([2, 3], seed=0)}},
            "state": {}, "handle": handle}
    specs[handle] = spec
    server = server_side.StandInServer(ref, specs, "cpu", list(names))
    server.handle = handle
    return server


LEAKY_PATHS = ["__class__", "__class__.forward.__code__.co_names", "forward.__globals__", "__dict__", "net.__class__",
               "__init__.__globals__.__builtins__", "_modules", "net.0.weight", "..", "/"]


def test_a_handle_path_never_reaches_an_attribute_of_a_reference_object():
    """The attack of issue 19: `<handle>/__class__.forward.__code__.co_names` was resolved with getattr
    on the reference twin and its repr came back in an error. Now a handle is an id the grader handed
    out, its submodule part a key of the twin's own submodule table: anything else runs the student's code."""
    server = _server()
    z = {"__tensor__": np.zeros((1, 2), np.float32), "leaf": 0}
    x = {"__tensor__": np.zeros((1, 3), np.float32)}
    for path in LEAKY_PATHS:
        answer = server({"upcall": {"name": "BernoulliDecoder.log_prob", "grad": False, "args": [x, z],
                                    "self": {"__handle__": f"{server.handle}/{path}", "state": {}, "leaves": {}}}})
        assert answer == {"ok": False, "fallback": True}, (path, answer)
    for forged in ("h1", "h0000000000000000", "BernoulliDecoder", "reference", ""):
        answer = server({"upcall": {"name": "BernoulliDecoder.log_prob", "args": [x, z],
                                    "self": {"__handle__": forged, "state": {}, "leaves": {}}}})
        assert answer == {"ok": False, "fallback": True}, (forged, answer)
    # the honest use still works: the object the grader handed out, with the student's state
    state = {k: t.detach().numpy() for k, t in server.twin(server.handle).state_dict().items()}
    ok = server({"upcall": {"name": "BernoulliDecoder.log_prob", "grad": False, "args": [x, z],
                            "self": {"__handle__": server.handle, "state": state, "leaves": {}}}})
    assert ok["ok"] and ok["outputs"][0].shape == (1,)
    assert len(server.handle) == 17 and server.handle != _server().handle  # opaque and unguessable


def test_errors_sent_to_the_child_are_fixed_sentences_without_reference_text():
    server = _server()
    bad = server({"upcall": {"name": "kl_standard_normal", "grad": False,
                             "args": [{"__tensor__": np.zeros((2, 3), np.float32)}, {"__tensor__": np.zeros((4, 5), np.float32)}]}})
    assert not bad["ok"] and _fixed(bad["error"]) and "size" not in bad["error"] and "tensor" not in bad["error"], bad
    text = json.dumps({k: v for k, v in bad.items()})
    assert "kl_standard_normal" not in text and "reference" not in text


def test_only_components_upstream_of_the_one_under_test_stand_in():
    import importlib

    from grader.rubric import available_rubrics

    rubric = available_rubrics()["amortized-vs-lo"]
    ref = importlib.import_module(rubric.reference)
    # the classifier's reference uses none of the density functions: the three that the issue's
    # harvesting attack asked for during the classifier's check are not answered there any more
    first = server_side.upstream_targets(rubric, ref, "classifier")
    assert not {"log_normal_diag", "kl_standard_normal", "reparameterize", "elbo"} & set(first), first
    assert {"BernoulliDecoder.log_prob", "kl_standard_normal", "reparameterize"} <= set(
        server_side.upstream_targets(rubric, ref, "elbo"))
    # a component never gets the value of one built on top of it (which would give its own answer away)
    assert "elbo" not in server_side.upstream_targets(rubric, ref, "kl")
    vae = available_rubrics()["vae"]
    vref = importlib.import_module(vae.reference)
    assert "VAE.forward" not in server_side.upstream_targets(vae, vref, "log_normal_diag")
    assert server_side.upstream_targets(vae, vref, "mog_prior.log_prob") == ["log_normal_diag"]


def test_gradient_tapes_kept_for_upcalls_are_bounded_per_call():
    """Ten large upcalls with gradients used to keep +2.6 GB in the grader: now at most MAX_TAPE_BYTES
    of taped inputs and outputs per call, then a fixed refusal; `reset_call` frees them."""
    server = _server()
    n = server_side.MAX_UPCALL_ELEMENTS // 2
    big = {"__tensor__": np.zeros(n, np.float32), "leaf": 0}
    answers = [server({"upcall": {"name": "kl_standard_normal", "grad": True,
                                  "args": [big, {"__tensor__": np.zeros(n, np.float32), "leaf": 1}]}}) for _ in range(10)]
    refused = [a for a in answers if not a["ok"]]
    assert refused and all(a["error"] == server_side.TOO_MUCH_GRADIENT for a in refused)
    assert server.tape_bytes <= server_side.MAX_TAPE_BYTES + 4 * n * 4 + 1024
    server.reset_call()
    assert not server.tapes and server.tape_bytes == 0
    huge = server({"upcall": {"name": "kl_standard_normal", "args": [
        {"__tensor__": np.zeros(server_side.MAX_UPCALL_ELEMENTS + 1, np.float32)}, {"__tensor__": np.zeros(1, np.float32)}]}})
    assert not huge["ok"] and huge["error"].startswith("the arguments are too large")


# ---- unpredictable inputs -------------------------------------------------------------------------

def test_check_inputs_derive_from_a_secret_and_the_same_secret_gives_the_same_inputs():
    a, b = new_secret(), new_secret()
    assert a != b and check_secret(a) == a and check_secret(a.upper()) == a
    assert check_seed(a, "kl") == check_seed(a, "kl") != check_seed(b, "kl")
    assert check_seed(a, "kl") != check_seed(a, "elbo.value")
    assert check_seed("", "kl") == int.from_bytes(__import__("hashlib").sha256(b"kl").digest()[:4], "little")
    for bad in ("12", "xyz" * 11, "0" * 31, "g" * 32):
        with pytest.raises(ValueError, match="inputs_secret"):
            check_secret(bad)


def test_the_secret_is_in_no_environment_argv_or_file_the_child_gets():
    """A zygote forked off a `grade run --seed S` would hold S in its memory (sys.argv): it is spawned afresh."""
    import sys

    from grader.sandbox import client

    saved = list(sys.argv)
    try:
        sys.argv[:] = ["grade", "run", "x", "--seed", "0" * 32]
        assert not client._fork_here_is_safe()
        sys.argv[:] = ["grade", "run", "x", "--seed=" + "0" * 32]
        assert not client._fork_here_is_safe()
    finally:
        sys.argv[:] = saved


# ---- the request loop: one deadline, bounded upcalls, malformed messages, with a real child ----------

def _module(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "m.py").write_text(textwrap.dedent('''
        import gc, sys, time
        protocol = sys.modules["grader.sandbox.protocol"]

        def _sock():  # what a student who read grader/sandbox/child.py reaches: the child's socket
            return next(o for o in gc.get_objects() if type(o).__name__ == "Child").sock
        ''') + textwrap.dedent(body))
    return folder


@pytest.fixture()
def sandbox_for(tmp_path):
    made = []

    def make(body: str) -> Sandbox:
        sb = Sandbox(_module(tmp_path, body), SandboxConfig(module_file="m.py", namespaces=False))
        sb.start()
        assert sb.load_error is None, sb.load_error
        made.append(sb)
        return sb

    yield make
    for sb in made:
        sb.close()


def test_a_reply_trickled_one_byte_at_a_time_cannot_extend_the_deadline(sandbox_for):
    sb = sandbox_for('''
        def f():
            s = _sock()
            s.sendall(protocol._LEN.pack(1000))
            while True:
                s.sendall(b" ")
                time.sleep(0.2)
        ''')
    t0 = time.monotonic()
    with pytest.raises(StudentTimeout):
        sb.request({"op": "call", "target": "f"}, timeout=2.0)
    assert time.monotonic() - t0 < 4.0


def test_an_always_queued_upcall_cannot_keep_the_grader_busy_past_the_deadline(sandbox_for):
    """The child keeps upcalls queued and never reads the answers: the grader used to answer forever."""
    sb = sandbox_for('''
        def f():
            s = _sock()
            while True:
                protocol.send(s, {"upcall": {"name": "kl_standard_normal", "args": [], "grad": False}})
                time.sleep(0.002)
        ''')
    t0 = time.monotonic()
    with pytest.raises((StudentTimeout, StudentCrash)) as e:
        sb.request({"op": "call", "target": "f"}, timeout=2.0, upcall=lambda m: {"ok": False, "error": "x" * 5000})
    assert time.monotonic() - t0 < 4.0, e.value


def test_an_upcall_flood_is_cut_at_the_bound(sandbox_for):
    sb = sandbox_for('''
        def f():
            s = _sock()
            for _ in range(100_000):
                protocol.send(s, {"upcall": {"name": "kl_standard_normal", "args": [], "grad": False}})
                protocol.recv(s)
        ''')
    served = []
    with pytest.raises(StudentCrash, match="too often"):
        sb.request({"op": "call", "target": "f"}, timeout=60.0, upcall=lambda m: served.append(1) or {"ok": False, "error": "no"})
    assert len(served) == MAX_UPCALLS_PER_REQUEST


MALFORMED = {
    "ok without a result": {"ok": True},
    "an error that is not a dict": {"ok": False, "error": "boom"},
    "a tensor without its array": {"ok": True, "result": {"__tensor__": 5, "dtype": "float32", "device": "cpu",
                                                          "requires_grad": False, "subclass": None}},
    "a sequence longer than its items": {"ok": True, "result": {"__seq__": [], "kind": "tuple", "len": 2}},
    "gradients that are not arrays": {"ok": True, "result": 1.0, "grads": {"args.0": "nope"}},
    "not a dict at all": [1, 2, 3],
}


@pytest.mark.parametrize("label", sorted(MALFORMED))
def test_a_malformed_reply_is_the_students_failure_never_an_internal_error(sandbox_for, label):
    sb = sandbox_for(f'''
        def f():
            protocol.send(_sock(), {MALFORMED[label]!r})
            time.sleep(30)
        ''')
    with pytest.raises(StudentCodeError) as e:
        sb.request({"op": "call", "target": "f"}, timeout=10.0)
    assert "malformed" in e.value.message or "garbage" in e.value.message, e.value.message
    assert sb.request({"op": "call", "target": "time.time"}, timeout=20.0)["ok"]  # a fresh child serves the next check


def test_an_error_reply_of_any_size_is_refused_not_kept(sandbox_for):
    """The child's error report is the student's to write (they replace `describe_exception`): a 150 MB message
    used to be kept in every failed check's feedback (a 1.6 GB results.json, 4.3 GB of grader memory, 6 minutes)."""
    sb = sandbox_for('''
        import grader.sandbox.child as _child
        _child.describe_exception = lambda e, scratch: {"type": "X", "message": "A" * 20_000_000, "where": "",
                                                        "traceback": "", "constructor": ""}

        def f():
            raise ValueError("boom")
        ''')
    with pytest.raises(StudentCrash, match="malformed message .*error's message") as e:
        sb.request({"op": "call", "target": "f"}, timeout=20.0)
    assert len(e.value.message) < 1000


def test_a_reply_far_larger_than_a_call_asks_for_is_refused_unread(sandbox_for):
    """A zero-stride tensor (4 bytes in the child) expands to 200 MB on the wire: the grader used to read and decode
    every such reply whole (a 500 MB one: 2.4 GB of grader memory, ~10 s per call). A call's reply is refused
    from its announced size, before it is read."""
    sb = sandbox_for('''
        import torch

        def f():
            return torch.zeros(1).expand(50_000_000)
        ''')
    with pytest.raises(StudentCrash, match="reply was too large") as e:
        sb.request({"op": "call", "target": "f"}, timeout=60.0)
    assert "200,000," in e.value.message, e.value.message
    assert sb.request({"op": "call", "target": "time.time"}, timeout=20.0)["ok"]


@pytest.mark.parametrize("body", [
    "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no message for you')\n",
    "class _Meta(type):\n    __name__ = property(lambda cls: 12345)\n\nclass E(Exception, metaclass=_Meta):\n    pass\n",
    "class E(Exception):\n    def __str__(self):\n        return 'x' * 50_000_000\n",
])
def test_an_exception_that_cannot_describe_itself_fails_only_its_call(sandbox_for, body):
    """`__str__` that raises or returns 50 MB, a class whose `__name__` is not text: the student's own failure
    (a crash or a short message), never the grader's."""
    sb = sandbox_for(body + "\ndef f():\n    raise E()\n")
    with pytest.raises(StudentCodeError) as e:
        sb.request({"op": "call", "target": "f"}, timeout=20.0)
    assert len(e.value.message) <= 5000 and len(e.value.traceback) <= 5000
    assert sb.request({"op": "call", "target": "time.time"}, timeout=20.0)["ok"]


EXOTIC = {  # what a student's function may return; each must reach the grader as plain data or fail that call alone
    "complex": "torch.ones(3, dtype=torch.complex64)",
    "float8": "torch.ones(3).to(torch.float8_e4m3fn)",
    "uint16": "torch.ones(3, dtype=torch.uint16)",
    "bfloat16": "torch.ones(3, dtype=torch.bfloat16)",
    "sparse": "torch.eye(3).to_sparse()",
    "quantized": "torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8)",
    "meta": "torch.empty(3, device='meta')",
    "nested": "torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])",
    "negative stride": "torch.arange(6.0).flip(0)[::2]",
    "numpy object array": "__import__('numpy').array([object()], dtype=object)",
    "generator": "(i for i in range(3))",
    "float subclass nan": "type('F', (float,), {})(float('nan'))",
    "deep list": "__import__('functools').reduce(lambda a, _: [a], range(10_000), [])",
}


@pytest.mark.parametrize("label", sorted(EXOTIC))
def test_exotic_return_values_cross_as_plain_data_or_fail_their_call(sandbox_for, label):
    sb = sandbox_for(f"import torch\n\ndef f():\n    return {EXOTIC[label]}\n")
    try:
        reply = sb.request({"op": "call", "target": "f"}, timeout=20.0)
    except StudentCodeError as e:
        assert len(e.message) <= 5000
    else:
        result = values.value(reply["result"])
        try:
            describe(result)
        except StudentValueError:
            pass
    assert sb.request({"op": "call", "target": "time.time"}, timeout=20.0)["ok"]


def test_a_tensors_dtype_is_what_its_values_are(sandbox_for):
    """The checks read a result's dtype from the child's description: a student who rewrote `export` to describe a
    float32 result of float64 inputs as float64 passed every dtype requirement. The description must match the array
    (bfloat16 alone travels widened to float32)."""
    sb = sandbox_for('''
        import torch
        import grader.sandbox.values as _values
        _export = _values.export

        def _lying_export(o, depth=0):
            out = _export(o, depth)
            if isinstance(out, dict) and "dtype" in out:
                out["dtype"] = "float64"
            return out
        sys.modules["grader.sandbox.child"].export = _lying_export

        def f():
            return torch.ones(3, dtype=torch.float32)
        ''')
    with pytest.raises(StudentCrash, match="said to be float64 whose values are float32"):
        sb.request({"op": "call", "target": "f"}, timeout=20.0)
    honest = {"__tensor__": np.zeros(2, np.float32), "dtype": "bfloat16", "device": "cpu", "requires_grad": False,
              "subclass": None}
    assert values.value(honest) is honest


@pytest.mark.parametrize("reply", [
    {"ok": False, "error": {"type": "X" * 5000, "message": "m"}},
    {"ok": False, "error": {"message": "m", "traceback": "t" * 5000}},
    {"ok": False, "error": {"message": "m", "constructor": ["not text"]}},
    {"ok": True, "names": ["n" * 3000] * 1000},
    {"ok": True, "layers": [["p" * 5000, "Linear", {}]]},
    {"ok": True, "unassigned": [["w", "why" * 2000]]},
    {"ok": True, "constructor_error": "c" * 5000},
])
def test_every_text_of_a_reply_is_short(reply):
    op = {"names": "load", "layers": "layers", "unassigned": "new", "constructor_error": "new"}.get(
        next(iter(set(reply) - {"ok"})), "call")
    with pytest.raises(values.Malformed):
        values.reply(op, reply)
    honest = {"ok": False, "error": {"type": "ValueError", "message": "ValueError: boom", "where": "m.py, line 3, in f",
                                     "traceback": "  File ...", "constructor": ""}}
    assert values.reply("call", honest) is honest


# ---- end to end: the attacks graded, as root (in-process) ------------------------------------------

HARVEST = '''

# --- the attack: answers asked of the stand-ins during the first checks, replayed later -------------
import base64 as _b64, hashlib as _hl, io as _io
import numpy as _np

_PREDICTED = {predicted!r}  # inputs of later checks, as recorded on the published derivation
_ANSWERS = {{}}
_log_normal_diag_ok, _kl_ok = log_normal_diag, kl_standard_normal


def _key(*tensors):
    return _hl.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest()


def _load(text):
    return torch.from_numpy(_np.load(_io.BytesIO(_b64.b64decode(text))))


def log_normal_diag(z, mu, log_var):  # returns zeros unless the answer was harvested
    return _ANSWERS.get(_key(z, mu, log_var), torch.zeros(torch.broadcast_shapes(z.shape, mu.shape)[:-1]))


def kl_standard_normal(mu, log_var):
    return _ANSWERS.get(_key(mu, log_var), torch.zeros(mu.shape[:-1]))


_forward_ok = CNNClassifier.forward


def _harvesting_forward(self, x):
    for name, args in _PREDICTED:
        args = [_load(a) for a in args]
        fn = globals()[name]  # a stand-in proxy while another component is checked
        _ANSWERS[_key(*args)] = fn(*args).detach()
    return _forward_ok(self, x)


CNNClassifier.forward = _harvesting_forward
'''

RECORD = '''

import base64 as _b64, io as _io
import numpy as _np
_log_normal_diag_ok, _kl_ok = log_normal_diag, kl_standard_normal


def _dump(t):
    buf = _io.BytesIO()
    _np.save(buf, t.detach().cpu().numpy())
    return _b64.b64encode(buf.getvalue()).decode()


def log_normal_diag(z, mu, log_var):
    print("[inputs]", "log_normal_diag", *[_dump(t) for t in (z, mu, log_var)])
    return _log_normal_diag_ok(z, mu, log_var)


def kl_standard_normal(mu, log_var):
    print("[inputs]", "kl_standard_normal", *[_dump(t) for t in (mu, log_var)])
    return _kl_ok(mu, log_var)
'''

ONLY = ["classifier", "log_normal_diag", "kl"]


def _grade(folder: Path, secret):
    from grader.engine import GradeOptions, grade_submission
    from grader.rubric import available_rubrics

    return grade_submission(folder, available_rubrics()["amortized-vs-lo"],
                            GradeOptions(device="cpu", only=ONLY, write_figures=False, secret=secret))


def _plant(tmp_path: Path, name: str, extra: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "amortized_vs_lo.py").write_text((REPO / "reference" / "amortized_vs_lo.py").read_text() + extra)
    return folder


def _points(result) -> dict[str, float]:
    """Share of each component's value-check points (its declared-property checks left out: zeros are pure
    and of the right dtype, which is what those checks judge)."""
    got: dict[str, list[float]] = {}
    for t in result.tests:
        if ".property." not in t.check:
            s, m = got.setdefault(t.component, [0.0, 0.0])
            got[t.component] = [s + t.score, m + t.max_score]
    return {c: s / m for c, (s, m) in got.items()}


@pytest.mark.slow
def test_answers_harvested_through_stand_ins_are_worthless(tmp_path, monkeypatch):
    """Issue 19: two functions returning zeros, with the classifier's check asking the stand-ins for
    their answers on the later checks' inputs (known in advance), went from 0 to full marks. The
    attacker records those inputs on the published derivation, as anyone who reads the code can."""
    recorded = _grade(_plant(tmp_path, "recorder", RECORD), secret="")
    predicted = [(line.split()[1], line.split()[2:]) for line in recorded.student_output.splitlines()
                 if line.startswith("[inputs]")]
    assert predicted, recorded.student_output[:500]
    attack = _plant(tmp_path, "harvester", HARVEST.format(predicted=predicted))

    # the attack is real: with every component standing in (as before) and predictable inputs, it earns the points
    everything = lambda rubric, ref, component: sorted(  # noqa: E731
        t for c, t in rubric.code_targets.items() if c != component and not t[:1].isupper())
    monkeypatch.setattr("grader.checks.upstream_targets", everything)
    assert _points(_grade(attack, secret="")) == {"classifier": 1.0, "log_normal_diag": 1.0, "kl": 1.0}
    # the inputs of a run are derived from its own secret: the harvested answers match nothing (the zeros
    # keep only what zeros earn: KL(N(0, I) ‖ N(0, I)) = 0)
    secret = _points(_grade(attack, secret=None))
    assert secret["classifier"] == 1.0 and secret["log_normal_diag"] == 0.0 and secret["kl"] <= 1 / 3, secret
    monkeypatch.undo()
    # and only upstream components stand in: nothing to harvest during the classifier's check
    graded = _grade(attack, secret="")
    upstream = _points(graded)
    assert upstream["classifier"] == 1.0 and upstream["log_normal_diag"] == 0.0 and upstream["kl"] <= 1 / 3, \
        [t.output for t in graded.tests]


@pytest.mark.slow
def test_the_same_secret_gives_the_same_grade_and_a_new_one_new_inputs(tmp_path):
    folder = _plant(tmp_path, "honest", RECORD)
    first = _grade(folder, secret=None)
    again = _grade(folder, secret=first.inputs_secret)
    other = _grade(folder, secret=None)
    assert first.inputs_secret and first.inputs_secret != other.inputs_secret
    inputs = lambda r: [l for l in r.student_output.splitlines() if l.startswith("[inputs]")]  # noqa: E731
    assert inputs(first) == inputs(again) != inputs(other)
    assert [t.score for t in first.tests] == [t.score for t in again.tests] == [t.max_score for t in first.tests]
    assert _points(other) == {"classifier": 1.0, "log_normal_diag": 1.0, "kl": 1.0}


LEAK = '''

import json as _json
_elbo_ok = elbo


def elbo(decoder, x, mu, log_var):
    si = next(c.cell_contents for c in reparameterize.__closure__ if type(c.cell_contents).__name__ == "StandIns")
    known = next(iter(si.child.handles.values()))[0] if si.child.handles else "h"
    for handle in [known + "/__class__.forward.__code__.co_names", known + "/forward.__globals__", "h1", "reference"]:
        reply = si._ask({"upcall": {"name": "BernoulliDecoder.log_prob", "args": [], "grad": False,
                                    "self": {"__handle__": handle, "state": {}, "leaves": {}}}})
        print("[reply]", _json.dumps(reply, default=str))
    for name in ("log_px_importance", "elbo", "VAE.elbo"):  # downstream or unrelated: not answered here
        print("[reply]", _json.dumps(si._ask({"upcall": {"name": name, "args": [], "grad": False}}), default=str))
    bad = si._ask({"upcall": {"name": "kl_standard_normal", "grad": False, "args": [
        {"__tensor__": __import__("numpy").zeros((2, 3), "float32")}, {"__tensor__": __import__("numpy").zeros((4, 5), "float32")}]}})
    print("[reply]", _json.dumps(bad, default=str))
    return _elbo_ok(decoder, x, mu, log_var)
'''


@pytest.mark.slow
def test_a_student_reaching_the_stand_in_channel_reads_nothing_of_the_reference(tmp_path):
    from grader.engine import GradeOptions, grade_submission
    from grader.rubric import available_rubrics

    folder = _plant(tmp_path, "leaker", LEAK)
    result = grade_submission(folder, available_rubrics()["amortized-vs-lo"],
                              GradeOptions(device="cpu", only=["elbo"], write_figures=False))
    replies = [json.loads(l.split(" ", 1)[1]) for l in result.student_output.splitlines() if l.startswith("[reply]")]
    assert replies and len(replies) % 8 == 0, result.student_output[-2000:]  # 8 per call of elbo
    for r in replies:
        assert r == {"ok": False, "fallback": True} or (r["ok"] is False and _fixed(r["error"])), r
    for word in ("co_names", "clamp", "EPS", "sigmoid", "torch", "BernoulliDecoder", "Tensor", "size"):
        assert word not in "\n".join(l for l in result.student_output.splitlines() if l.startswith("[reply]")), word
    assert all(t.score == t.max_score for t in result.tests), [t.output for t in result.tests]  # honest maths: full marks


# ---- end to end, the whole grader unprivileged (`nobody` via setpriv, or an id in a user namespace) -------

@pytest.mark.slow
@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="namespaces are Linux only")
def test_the_stand_in_channel_leaks_nothing_and_the_secret_replays_when_the_grader_runs_unprivileged():
    import os
    import shutil
    import subprocess
    import tempfile

    from tests.test_sandbox_escape import _unprivileged_prefix

    found = _unprivileged_prefix()
    if found is None:
        pytest.skip("no way to run this interpreter unprivileged here (setpriv/unshare)")
    prefix, _ = found
    base = Path(tempfile.mkdtemp(prefix="gradekit-nobody-"))
    try:
        os.chmod(base, 0o777)
        sub, out = _plant(base, "leaker", LEAK), base / "out"
        out.mkdir(mode=0o777)
        for p in [sub, *sub.rglob("*"), out]:
            os.chmod(p, 0o777 if p.is_dir() else 0o644)
        grade = str(REPO / ".venv" / "bin" / "grade") if (REPO / ".venv" / "bin" / "grade").exists() else "grade"
        env = {**os.environ, "HOME": str(base), "GRADEKIT_CACHE": str(base / "cache")}

        def run(*extra):
            return subprocess.run(prefix + [grade, "run", str(sub), "--out", str(out), "--only", "elbo", "--device", "cpu",
                                            "--no-report", *extra], capture_output=True, text=True, timeout=600, env=env)

        r = run()
        if "cannot isolate" in r.stdout + r.stderr:
            pytest.skip("this kernel does not give unprivileged users a user namespace")
        assert r.returncode == 0, r.stdout + r.stderr
        first = json.loads((out / "leaker" / "results.json").read_text())
        g = first["extra_data"]["gradekit"]
        replies = [json.loads(l.split(" ", 1)[1]) for l in g["student_output"].splitlines() if l.startswith("[reply]")]
        assert replies and all(r == {"ok": False, "fallback": True} or _fixed(r["error"]) for r in replies), replies
        assert all(t["score"] == t["max_score"] for t in first["tests"])
        secret = g["inputs_secret"]
        assert re.fullmatch(r"[0-9a-f]{32}", secret)
        again = run("--seed", secret)
        assert again.returncode == 0, again.stdout + again.stderr
        replay = json.loads((out / "leaker" / "results.json").read_text())
        assert replay["extra_data"]["gradekit"]["inputs_secret"] == secret
        assert [t["score"] for t in replay["tests"]] == [t["score"] for t in first["tests"]]
    finally:
        shutil.rmtree(base, ignore_errors=True)


SCAN = '''

import hashlib as _hl

_MARK = _hl.md5(b"gradekit-" + b"marker").hexdigest()  # the probe's positive control: 32 hex digits in memory


def _find(halves):
    """Whether the text halves[0] + halves[1] lies anywhere in this process's writable memory (the
    probe holds only the two halves apart, never the whole text)."""
    a, b = (h.encode() for h in halves)
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", buffering=0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if not perms.startswith("rw") or end - start > 64 << 20:
                continue
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            i = data.find(a)
            while i >= 0:
                if data[i + len(a):i + len(a) + len(b)] == b:
                    return True
                i = data.find(a, i + 1)
    return False


_SECRET = ("HALF1"[::-1], "HALF2"[::-1])
print("[memory] marker", "found" if _find((_MARK[:16], _MARK[16:])) else "missing")
print("[memory] secret", "found" if _find(_SECRET) else "missing")
for _where in ("/proc/self/cmdline", "/proc/self/environ", "/proc/1/cmdline", "/proc/1/environ"):
    try:
        _text = open(_where, "rb").read()
        print("[file]", _where, "secret found" if (_SECRET[0] + _SECRET[1]).encode() in _text else "clean")
    except OSError:
        pass
'''


@pytest.mark.slow
@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="/proc is Linux only")
def test_the_childs_memory_argv_and_environment_do_not_hold_the_secret(tmp_path):
    """`grade run --seed S` forks its zygote off itself when that is safe: with S on its command line
    that would leave S in every child's memory (sys.argv). The child scans its own writable memory,
    argv and environment for S and, as a control, for a string of its own."""
    import os
    import subprocess

    secret = new_secret()
    sub = _plant(tmp_path, "scanner", SCAN.replace("HALF1", secret[:16][::-1]).replace("HALF2", secret[16:][::-1]))
    out = tmp_path / "out"
    grade = str(REPO / ".venv" / "bin" / "grade") if (REPO / ".venv" / "bin" / "grade").exists() else "grade"
    r = subprocess.run([grade, "run", str(sub), "--out", str(out), "--only", "kl", "--device", "cpu", "--no-report",
                        "--seed", secret], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "GRADEKIT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout + r.stderr
    g = json.loads((out / "scanner" / "results.json").read_text())["extra_data"]["gradekit"]
    assert g["inputs_secret"] == secret
    output = g["student_output"]
    assert "[memory] marker found" in output, output[-2000:]  # the probe works
    assert "[memory] secret missing" in output, output[-2000:]
    assert "[file]" in output and "secret found" not in output, output[-2000:]


def test_a_harness_result_keeps_short_texts_and_a_bounded_tree():
    """A training loop's result is the student's to forge (they replace `grader.harnesses.vae.train` in their
    child): a 50 MB `message` in its history was kept in results.json (50 MB), the report's HTML (50 MB) and the
    PDF (not done after 10 minutes). Texts are cut to MAX_TEXT characters; a tree of countless parts is refused."""
    m = {"ok": True, "result": {"history": {"message": "M" * 5_000_000, "train_loss": [1.0, 2.0],
                                            "state_dict": {"w": np.zeros(3)}}}}
    h = values.reply("harness", m)["result"]["history"]
    assert len(h["message"]) <= values.MAX_TEXT + 10 and h["train_loss"] == [1.0, 2.0]
    assert isinstance(h["state_dict"]["w"], np.ndarray)
    with pytest.raises(values.Malformed, match="parts"):
        values.reply("harness", {"ok": True, "result": {"history": {"epochs": list(range(values.MAX_HARNESS_NODES))}}})


def test_a_header_announcing_a_huge_message_costs_only_the_bytes_that_arrive():
    """The child sends a length header of 400 MiB, 10 bytes, and hangs up: the receiver allocated the whole
    400 MiB up front (512 MiB allowed for a reply) before any of it came."""
    import socket
    import tracemalloc

    child, grader_end = socket.socketpair()
    try:
        child.sendall(protocol._LEN.pack(400 << 20) + b"x" * 10)
        child.close()
        tracemalloc.start()
        try:
            with pytest.raises(EOFError):
                protocol.recv(grader_end)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB held for a message that never came"
    finally:
        grader_end.close()


def test_a_large_message_arrives_whole_through_the_growing_buffer():
    import socket
    import threading

    a, b = socket.socketpair()
    big = {"x": np.arange(3_000_000, dtype=np.float64)}  # 24 MB: the buffer doubles several times
    sender = threading.Thread(target=protocol.send, args=(a, big))
    sender.start()
    try:
        got = protocol.recv(b)
    finally:
        sender.join()
        a.close()
        b.close()
    assert np.array_equal(got["x"], big["x"])
