"""The reference model, trained once per (assignment, data, config, device, code) and cached.

A class pays for training the reference once: the cache key hashes everything the result depends
on, so a change of data, budget or reference code retrains and nothing stale is reused.
Location: $GRADEKIT_CACHE, else ~/.cache/gradekit. Weights are stored with safetensors (no pickle).

An entry is used only if its sha256 matches the digest recorded when it was stored, in a folder
outside the cache ($GRADEKIT_CACHE_INDEX, else `<cache>.digests` next to it): an entry changed or
planted by anyone who could write the cache (but not the digests) is ignored and retrained. Both
folders are hidden from student code (grader/engine.py `_hide_list`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from grader.fileio import write_atomic

REPO = Path(__file__).resolve().parents[1]
ALWAYS = ("grader/data.py", "grader/history.py")  # every reference is trained on these data, with these stop reasons


# The cache's location is configuration of the machine (like XDG_CACHE_HOME), not a grading option: an entry
# is used only when its key (everything the reference depends on) and digest match, wherever the cache is.
def cache_dir() -> Path:
    return Path(os.environ.get("GRADEKIT_CACHE") or Path.home() / ".cache" / "gradekit")


def index_dir() -> Path:
    explicit = os.environ.get("GRADEKIT_CACHE_INDEX")
    if explicit:
        return Path(explicit)
    c = cache_dir()
    return c.parent / (c.name + ".digests")


def _digest(weights: bytes, meta: bytes) -> str:
    return hashlib.sha256(b"weights\0" + weights + b"\0meta\0" + meta).hexdigest()


def _recorded(key: str) -> str | None:
    try:
        return (index_dir() / f"{key}.sha256").read_text().strip()
    except OSError:
        return None


def cache_key(parts: dict, code_files: tuple[str, ...]) -> str:
    """Key of the entry for `parts` (settings, data, device: JSON) and the content of `code_files` (paths
    relative to the repository: the reference and the loops it is trained and evaluated with)."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for rel in (*code_files, *ALWAYS):
        p = REPO / rel
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:24]


def load(key: str) -> dict | None:
    """{"state_dict": {name: array}, "meta": {...}} or None when absent or unreadable."""
    folder = cache_dir() / key
    try:
        from safetensors.numpy import load as load_bytes

        weights, meta = (folder / "weights.safetensors").read_bytes(), (folder / "meta.json").read_bytes()
        if _recorded(key) != _digest(weights, meta):  # read once, verified, then parsed: no swap in between
            return None  # changed since it was stored, or not stored by this grader: retrain
        return {"state_dict": dict(load_bytes(weights)), "meta": json.loads(meta)}
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    except Exception:  # a corrupt weights file: behave as a miss and retrain
        return None


def store(key: str, state_dict: dict[str, np.ndarray], meta: dict) -> None:
    """Write atomically: a folder appears complete or not at all (parallel graders may race)."""
    from safetensors.numpy import save

    weights = save({k: np.ascontiguousarray(v) for k, v in state_dict.items()})
    _store_bytes(key, weights, json.dumps(meta, default=float).encode())


def _store_bytes(key: str, weights: bytes, meta: bytes) -> None:
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}."))
    (tmp / "weights.safetensors").write_bytes(weights)
    (tmp / "meta.json").write_bytes(meta)
    digest = _digest(weights, meta)
    import shutil

    try:
        try:
            os.replace(tmp, root / key)
        except OSError:
            if load(key) is not None:  # another process stored the same key first
                return
            shutil.rmtree(root / key, ignore_errors=True)  # a tampered or unverifiable entry: replace it
            os.replace(tmp, root / key)
        write_atomic(index_dir() / f"{key}.sha256", digest)
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- entries as bytes: the reference trained once for a Dask cluster (grader.remote) ---------------
def entry_keys() -> list[str]:
    """Keys of the entries stored here (verified or not)."""
    try:
        return sorted(p.name for p in cache_dir().iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def export_entry(key: str) -> dict | None:
    """{"weights": bytes, "meta": bytes, "digest": sha256} of a verified entry, else None."""
    folder = cache_dir() / key
    try:
        weights, meta = (folder / "weights.safetensors").read_bytes(), (folder / "meta.json").read_bytes()
    except OSError:
        return None
    digest = _digest(weights, meta)
    return {"weights": weights, "meta": meta, "digest": digest} if _recorded(key) == digest else None


def export_entries(max_bytes: int = 256 * 1024 * 1024) -> dict[str, dict]:
    """Every verified entry (`export_entry`), newest first, up to `max_bytes` in all."""
    def mtime(k: str) -> float:
        try:
            return (cache_dir() / k).stat().st_mtime
        except OSError:
            return 0.0

    out, total = {}, 0
    for key in sorted(entry_keys(), key=mtime, reverse=True):
        entry = export_entry(key)
        if entry and total + len(entry["weights"]) <= max_bytes:
            out[key] = entry
            total += len(entry["weights"])
    return out


def import_entry(key: str, entry: dict) -> bool:
    """Store an entry another machine exported, if its digest holds and this cache lacks a verified one."""
    if not isinstance(key, str) or not key.isalnum() or len(key) > 64:
        return False
    weights, meta = entry.get("weights"), entry.get("meta")
    if not isinstance(weights, bytes) or not isinstance(meta, bytes) or _digest(weights, meta) != entry.get("digest"):
        return False
    if export_entry(key) is None:
        _store_bytes(key, weights, meta)
    return True
