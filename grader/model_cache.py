"""The reference model, trained once per (assignment, data, config, device, code) and cached.

A class pays for training the reference once: the cache key hashes everything the result depends
on, so a change of data, budget or reference code retrains and nothing stale is reused.
Location: $GRADEKIT_CACHE, else ~/.cache/gradekit. Weights are stored with safetensors (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

CODE_FILES = ("reference/vae.py", "grader/training.py", "grader/evaluation.py")
REPO = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    return Path(os.environ.get("GRADEKIT_CACHE") or Path.home() / ".cache" / "gradekit")


def cache_key(parts: dict, code_files: tuple[str, ...] = CODE_FILES) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for rel in code_files:
        p = REPO / rel
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:24]


def load(key: str) -> dict | None:
    """{"state_dict": {name: array}, "meta": {...}} or None when absent or unreadable."""
    folder = cache_dir() / key
    try:
        from safetensors.numpy import load_file

        meta = json.loads((folder / "meta.json").read_text())
        return {"state_dict": dict(load_file(str(folder / "weights.safetensors"))), "meta": meta}
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    except Exception:  # a corrupt weights file: behave as a miss and retrain
        return None


def store(key: str, state_dict: dict[str, np.ndarray], meta: dict) -> None:
    """Write atomically: a folder appears complete or not at all (parallel graders may race)."""
    from safetensors.numpy import save_file

    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}."))
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(tmp / "weights.safetensors"))
    (tmp / "meta.json").write_text(json.dumps(meta, default=float))
    try:
        os.replace(tmp, root / key)
    except OSError:  # another process stored the same key first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
