"""Winnowed k-gram fingerprints of a token stream (Schleimer, Wilkerson and Aiken, SIGMOD 2003).

Every k consecutive tokens are hashed; in each window of w consecutive hashes the smallest is kept
(the rightmost on ties), so any shared run of at least w + k - 1 tokens is guaranteed to share a
fingerprint, while noise shorter than k tokens shares none. Each fingerprint remembers the lines
of the source its k tokens span, for evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from grader.similarity.tokens import Token

#: tokens per k-gram: normalised statements are 4-10 tokens, so a k-gram spans one to three of them
K = 12
#: window: every shared run of W + K - 1 = 19 tokens yields at least one common fingerprint
W = 8


@dataclass(frozen=True)
class Fingerprint:
    """One selected k-gram: its hash, its position (index of its first token) and the lines it spans."""
    hash: int
    pos: int
    first_line: int
    last_line: int


def kgram_hashes(tokens: list[Token], k: int = K) -> list[int]:
    """A 64-bit hash of each k-gram of `tokens` (stable across processes: no Python `hash`)."""
    texts = [t.text for t in tokens]
    out = []
    for i in range(len(texts) - k + 1):
        digest = hashlib.blake2b("\x1f".join(texts[i:i + k]).encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "big") >> 1)  # 63 bits: fits SQLite/JSON integers
    return out


def winnow_segments(segments: list[list[Token]], k: int = K, w: int = W) -> list[Fingerprint]:
    """Fingerprints of each segment (no k-gram spans two), with positions counted across all of them."""
    out: list[Fingerprint] = []
    offset = 0
    for seg in segments:
        out += [Fingerprint(f.hash, f.pos + offset, f.first_line, f.last_line) for f in winnow(seg, k, w)]
        offset += len(seg) + k  # a gap: runs of fingerprints never join across segments
    return out


def winnow(tokens: list[Token], k: int = K, w: int = W) -> list[Fingerprint]:
    """The fingerprints of `tokens`: the minimum hash of each window of `w` k-gram hashes (robust
    winnowing: a minimum that stays the minimum of the next window is recorded once)."""
    hashes = kgram_hashes(tokens, k) if len(tokens) >= k else kgram_hashes(tokens, len(tokens))
    if not hashes:
        return []
    if len(hashes) < w:  # a short stream: its single window
        w = len(hashes)
    out: list[Fingerprint] = []
    last = -1
    for start in range(len(hashes) - w + 1):
        window = hashes[start:start + w]
        m = min(window)
        pos = start + (w - 1 - window[::-1].index(m))  # rightmost minimum
        if pos != last:
            lines = [t.line for t in tokens[pos:pos + k]]
            out.append(Fingerprint(hashes[pos], pos, min(lines), max(lines)))
            last = pos
    return out
