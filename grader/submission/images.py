"""The student's own figures: image outputs saved in the notebook and image files in the submission folder.

Only PNG, JPEG and GIF are taken (SVG can reference outside resources); each is checked to be a real image
with Pillow before it is written next to the results, so a damaged file never reaches the PDF renderer.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass
from pathlib import Path

MAX_FIGURES = 24
MAX_FIGURE_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 16_000_000  # one figure (4000 × 4000; a matplotlib figure at 300 dpi is ~3 M)
# all figures of one submission together: the PDF renderer decodes and re-encodes every pixel (24 solid
# 6300 × 6300 PNGs of 130 kB each took the report from 8 s to 48 s)
MAX_TOTAL_PIXELS = 64_000_000
MAX_DECODED_BYTES = 64 * 1024 * 1024  # all figures of one submission together
SIGNATURES = {"png": b"\x89PNG\r\n\x1a\n", "jpeg": b"\xff\xd8\xff", "gif": b"GIF8"}
IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".gif": "gif"}
NOTEBOOK_MIME = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif"}


@dataclass
class StudentFigure:
    data: bytes
    fmt: str  # "png" | "jpeg" | "gif"
    caption: str  # "vae.ipynb, cell 14 (output 1)" or "samples.png"


def _pixels(data: bytes) -> int:
    """The image's pixel count when `data` is a sound image of at most MAX_PIXELS pixels, else 0."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            pixels = im.width * im.height
            if not 0 < pixels <= MAX_PIXELS:
                return 0
            im.verify()
        return pixels
    except Exception:
        return 0


class _Pixels:
    """What is left of MAX_TOTAL_PIXELS; names the figures left out for it."""

    def __init__(self, notes: list[str] | None):
        self.left, self.notes, self.dropped = MAX_TOTAL_PIXELS, notes, []

    def take(self, data: bytes, caption: str) -> bool:
        pixels = _pixels(data)
        if pixels and pixels > self.left:
            self.dropped.append(caption)
            return False
        self.left -= pixels
        return pixels > 0

    def note(self) -> None:
        if self.dropped and self.notes is not None:
            shown = ", ".join(self.dropped[:5]) + (f" and {len(self.dropped) - 5} more" if len(self.dropped) > 5 else "")
            self.notes.append(f"Figures not shown ({shown}): the report shows at most {MAX_TOTAL_PIXELS // 1_000_000} "
                              "million pixels of a submission's figures in all; save figures at a lower resolution.")


def find_figures(folder: Path, nb=None, nb_name: str = "", notes: list[str] | None = None) -> list[StudentFigure]:
    """Notebook image outputs first (in cell order), then image files of the folder (sorted by name); those past
    MAX_TOTAL_PIXELS are left out, named in `notes`."""
    pixels = _Pixels(notes)
    try:
        return _find_figures(folder, nb, nb_name, pixels)
    finally:
        pixels.note()


def _find_figures(folder: Path, nb, nb_name: str, pixels: _Pixels) -> list[StudentFigure]:
    out: list[StudentFigure] = []
    budget = MAX_DECODED_BYTES
    if nb is not None:
        for cell_no, cell in enumerate(nb.get("cells", []), 1):
            if not isinstance(cell, dict) or cell.get("cell_type") != "code" or not isinstance(cell.get("outputs"), list):
                continue
            for k, o in enumerate(cell.get("outputs", []) or [], 1):
                data = o.get("data") if isinstance(o, dict) else None
                if not isinstance(data, dict):
                    continue
                for mime, fmt in NOTEBOOK_MIME.items():
                    b64 = data.get(mime)
                    if isinstance(b64, list):
                        b64 = "".join(b64)
                    if not isinstance(b64, str) or len(b64) > MAX_FIGURE_BYTES * 4 // 3 + 4:
                        continue
                    try:  # the first bytes say whether it is an image at all, before decoding megabytes
                        if not base64.b64decode(b64[:16].replace("\n", "") + "==", validate=False).startswith(SIGNATURES[fmt]):
                            continue
                        raw = base64.b64decode(b64, validate=False)
                    except (binascii.Error, ValueError):
                        continue
                    budget -= len(raw)
                    if budget < 0:
                        return out
                    caption = f"{nb_name}, cell {cell_no} (output {k})"
                    if pixels.take(raw, caption):
                        out.append(StudentFigure(raw, fmt, caption))
                    break
                if len(out) >= MAX_FIGURES:
                    return out
    for p in _image_files(Path(folder)):
        if len(out) >= MAX_FIGURES:
            break
        if p.stat().st_size > MAX_FIGURE_BYTES:
            continue
        raw = p.read_bytes()
        caption = p.relative_to(folder).as_posix()
        if pixels.take(raw, caption):
            out.append(StudentFigure(raw, IMAGE_SUFFIXES[p.suffix.lower()], caption))
    return out


def _image_files(folder: Path, max_seen: int = 5000) -> list[Path]:
    """Image files under `folder` by name: no symlinks followed, no hidden folders, at most `max_seen` entries looked at."""
    found, seen = [], 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            seen += 1
            if seen > max_seen:
                return found
            p = Path(root) / name
            if not name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and not p.is_symlink() and p.is_file():
                found.append(p)
    return found


def write_figures(figures: list[StudentFigure], out_dir: Path, rel_to: Path) -> list[dict]:
    """Write the figures to `out_dir` (replacing its previous ones); [{path relative to rel_to, caption}]."""
    out_dir = Path(out_dir)
    if out_dir.is_dir():
        for old in out_dir.iterdir():
            if old.is_file():
                old.unlink()
    entries = []
    for i, f in enumerate(figures, 1):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"student_{i:02d}.{'jpg' if f.fmt == 'jpeg' else f.fmt}"
        path.write_bytes(f.data)
        entries.append({"path": path.relative_to(rel_to).as_posix(), "caption": f.caption})
    return entries
