"""The wire format lets only plain data through."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grader.sandbox import protocol


@settings(deadline=None, max_examples=40)
@given(hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.int64, np.bool_]), shape=hnp.array_shapes(min_dims=0, max_dims=3)))
def test_arrays_round_trip_exactly(a):
    out = protocol.decode(protocol.encode({"x": [a, {"y": a}], "n": 3, "s": "t", "none": None}))
    np.testing.assert_array_equal(out["x"][0], a)
    assert out["x"][0].dtype == a.dtype
    assert out["x"][1]["y"].shape == a.shape
    assert out["n"] == 3 and out["s"] == "t" and out["none"] is None


def test_objects_cannot_be_sent():
    class Sneaky:
        pass

    with pytest.raises(TypeError):
        protocol.encode({"x": Sneaky()})
    with pytest.raises(TypeError):
        protocol.encode({"x": np.array([object()], dtype=object)})


def _frame(header: dict, payload: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("!Q", len(h)) + h + payload


def test_decoder_rejects_disallowed_dtypes_and_truncated_data():
    with pytest.raises(protocol.ProtocolError, match="not allowed"):
        protocol.decode(_frame({"tree": {"__nd__": 0}, "arrays": [{"dtype": "object", "shape": [1]}]}, b"\0" * 8))
    with pytest.raises(protocol.ProtocolError, match="truncated"):
        protocol.decode(_frame({"tree": {"__nd__": 0}, "arrays": [{"dtype": "float64", "shape": [4]}]}, b"\0" * 8))
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(b"\x00\x00\x00\x00\x00\x00\x00\x05{bad")


def test_pickle_payloads_are_never_unpickled():
    import pickle

    evil = pickle.dumps({"a": 1})
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(evil)
