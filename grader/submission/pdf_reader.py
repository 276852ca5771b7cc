"""Extract a PDF's text in a process of its own, with memory, time and decompressed-size limits.

A student's PDF is untrusted input that the grader reads itself: a 0.5 MB file whose page draws one
512 MiB Flate stream four times took a grader from 0.7 to 3.2 GB. `answers.pdf_text` therefore runs
this file as a script (`python -I pdf_reader.py FILE`: no package import, nothing of the grader's
in memory) and reads one JSON line back. Here, before the PDF parser sees the file:

- RLIMIT_AS = MEMORY_MB, RLIMIT_CPU = CPU_S (the parent also kills it after its own wall-clock limit);
- every Flate stream of the file is inflated once, incrementally, and the file is refused when they
  add up to more than MAX_INFLATED_BYTES (a stream drawn many times is bounded by the memory limit).

Output: {"pages": [...]} or {"error": "encrypted" | "damaged" | "too_large" | "missing", "message": ...}.
Standard library only, plus pypdfium2 (or pypdf where it is missing) imported after the limits.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import zlib

MEMORY_MB = 1024
CPU_S = 10
MAX_INFLATED_BYTES = 256 << 20
MAX_PDF_PAGES = 80
MAX_TEXT_CHARS = 4_000_000
CHUNK = 1 << 20
_STREAM = re.compile(rb"/FlateDecode.{0,400}?>>\s*stream\r?\n", re.DOTALL)


def inflated_size(data: bytes, limit: int = MAX_INFLATED_BYTES) -> int:
    """The total size of the file's Flate streams once inflated, counting no further than `limit`
    (+1 chunk): never holds more than one chunk of inflated bytes."""
    total = 0
    for m in _STREAM.finditer(data):
        d, pos, buf = zlib.decompressobj(), m.end(), b""
        while total <= limit and not d.eof:
            if not buf:
                buf = data[pos:pos + CHUNK]
                pos += len(buf)
                if not buf:
                    break
            try:
                out = d.decompress(buf, CHUNK)
            except zlib.error:
                break  # not Flate after all (or damaged): the parser will say so
            if not out and d.unconsumed_tail == buf:
                break  # no progress
            buf = d.unconsumed_tail
            total += len(out)
        if total > limit:
            break
    return total


def _pages_pdfium(path: str) -> list[str]:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(path)
    try:
        pages, total = [], 0
        for i in range(min(len(doc), MAX_PDF_PAGES)):
            page = doc[i]
            textpage = page.get_textpage()
            pages.append(textpage.get_text_range())
            textpage.close()
            page.close()
            total += len(pages[-1])
            if total > MAX_TEXT_CHARS:
                break
        return pages
    finally:
        doc.close()


def _pages_pypdf(path: str) -> list[str]:
    import pypdf

    reader = pypdf.PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):
        raise PermissionError("password")
    pages, total = [], 0
    for page in reader.pages[:MAX_PDF_PAGES]:
        pages.append(page.extract_text() or "")
        total += len(pages[-1])
        if total > MAX_TEXT_CHARS:
            break
    return pages


def extract(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    size = inflated_size(data)
    if size > MAX_INFLATED_BYTES:
        return {"error": "too_large", "message": f"its compressed streams inflate to more than "
                                                 f"{MAX_INFLATED_BYTES >> 20} MiB"}
    del data
    try:
        import pypdfium2  # noqa: F401
    except ImportError:
        try:
            import pypdf  # noqa: F401
        except ImportError:
            return {"error": "missing", "message": "neither pypdfium2 nor pypdf is installed"}
        reader = _pages_pypdf
    else:
        reader = _pages_pdfium
    try:
        return {"pages": reader(path)}
    except MemoryError:
        return {"error": "too_large", "message": f"reading it needs more than {MEMORY_MB} MiB of memory"}
    except PermissionError:
        return {"error": "encrypted", "message": "password"}
    except Exception as e:  # PDF parsers raise many kinds on damaged files
        if "password" in str(e).lower():
            return {"error": "encrypted", "message": "password"}
        return {"error": "damaged", "message": f"{type(e).__name__}: {str(e)[:120]}"}


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_MB << 20, MEMORY_MB << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_S, CPU_S))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.stdout.write(json.dumps(extract(sys.argv[1])) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
