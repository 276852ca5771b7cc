"""Messages between grader and child: JSON headers plus raw numpy buffers.

A message is a tree of dicts, lists, str, int, float, bool, None and numpy arrays. Arrays
travel as raw bytes with a dtype from a short allow-list; nothing is ever unpickled, so the
grader can only receive plain data, whatever the child sends. Frames are length-prefixed.
"""

from __future__ import annotations

import json
import math
import socket
import struct
import time

import numpy as np

ALLOWED_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # a single reply larger than this is refused
MAX_DEPTH = 64  # nesting of a message's tree (values.py bounds what each kind may hold)
_LEN = struct.Struct("!Q")


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed message."""


class TooLarge(ProtocolError):
    """The peer announced a message larger than the receiver takes (nothing of it was read)."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"message of {size} bytes exceeds the limit of {limit}")
        self.size, self.limit = size, limit


def encode(obj) -> bytes:
    arrays: list[np.ndarray] = []

    def walk(o):
        if isinstance(o, np.ndarray):
            arrays.append(np.array(o, order="C", copy=True))  # (ascontiguousarray turns 0-d into 1-d)
            return {"__nd__": len(arrays) - 1}
        if isinstance(o, dict):
            return {str(k): walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        if isinstance(o, np.generic):
            return o.item()
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot send {type(o).__name__}")

    tree = walk(obj)
    meta = [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays]
    header = json.dumps({"tree": tree, "arrays": meta}, allow_nan=True).encode()
    parts = [_LEN.pack(len(header)), header]
    for a in arrays:
        if a.dtype.name not in ALLOWED_DTYPES:
            raise TypeError(f"cannot send arrays of dtype {a.dtype}")
        parts.append(a.tobytes())
    return b"".join(parts)


def decode(data: bytes):
    try:
        (hlen,) = _LEN.unpack_from(data, 0)
        header = json.loads(bytes(data[_LEN.size : _LEN.size + hlen]))
        offset = _LEN.size + hlen
        arrays = []
        for m in header["arrays"]:
            dtype = str(m["dtype"])
            if dtype not in ALLOWED_DTYPES:
                raise ProtocolError(f"dtype {dtype!r} not allowed")
            shape = tuple(int(s) for s in m["shape"])
            if any(s < 0 for s in shape) or len(shape) > 32:
                raise ProtocolError("bad array shape")
            n = math.prod(shape) * np.dtype(dtype).itemsize  # (Python ints: no overflow)
            if offset + n > len(data):
                raise ProtocolError("truncated array data")
            arrays.append(np.frombuffer(data, dtype=dtype, count=n // np.dtype(dtype).itemsize, offset=offset).reshape(shape).copy())
            offset += n
        return _arrays_into(header["tree"], arrays)
    except ProtocolError:
        raise
    except (Exception, RecursionError) as e:  # malformed JSON, bad lengths, ...
        raise ProtocolError(f"malformed message: {type(e).__name__}") from None


def _arrays_into(tree, arrays: list, depth: int = 0):
    """`tree` with each {"__nd__": i} replaced by arrays[i] (i a valid index; at most MAX_DEPTH levels)."""
    if depth > MAX_DEPTH:
        raise ProtocolError("message nested too deep")
    if isinstance(tree, dict):
        if set(tree) == {"__nd__"}:
            i = tree["__nd__"]
            if type(i) is not int or not 0 <= i < len(arrays):
                raise ProtocolError("bad array reference")
            return arrays[i]
        return {k: _arrays_into(v, arrays, depth + 1) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_arrays_into(v, arrays, depth + 1) for v in tree]
    return tree


def send(sock: socket.socket, obj, deadline: float | None = None) -> None:
    """Send one message; TimeoutError when `deadline` passes first (a peer that stopped reading)."""
    payload = encode(obj)
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the peer did not take the message in time")
        sock.settimeout(left)
    try:
        sock.sendall(_LEN.pack(len(payload)) + payload)
    finally:
        if deadline is not None:
            sock.settimeout(None)


def recv(sock: socket.socket, max_bytes: int = MAX_MESSAGE_BYTES, deadline: float | None = None):
    """Receive one message (blocking). EOFError when the peer closed the connection; TimeoutError
    when `deadline` (time.monotonic()) passes first, however the bytes trickle in."""
    return recv_sized(sock, max_bytes, deadline)[0]


def recv_sized(sock: socket.socket, max_bytes: int = MAX_MESSAGE_BYTES, deadline: float | None = None):
    """(message, its size in bytes): see `recv`."""
    (n,) = _LEN.unpack(_recv_exact(sock, _LEN.size, deadline))
    if n > max_bytes:
        raise TooLarge(n, max_bytes)
    return decode(_recv_exact(sock, n, deadline)), n


def _recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytearray:
    """Exactly `n` bytes, read into one buffer (no second copy of a large message). The buffer grows as the bytes
    arrive (doubling): a header that announces 512 MiB and sends nothing costs the receiver nothing (allocating
    `n` at once cost the grader 512 MiB for a 4-byte header)."""
    buf = bytearray(min(n, 1 << 20))
    got = 0
    while got < n:
        if got == len(buf):
            buf += bytes(min(n, 2 * len(buf)) - len(buf))
        if deadline is not None:  # one deadline for the whole message: a reply trickled byte by byte cannot extend it
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the peer did not send its message in time")
            sock.settimeout(left)
        with memoryview(buf) as view, view[got:] as tail:  # released before the buffer grows again
            k = sock.recv_into(tail, min(len(buf) - got, 1 << 20))
        if not k:
            raise EOFError("peer closed the connection")
        got += k
    return buf
