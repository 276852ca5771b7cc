"""A class folder -> the code of each submission, as grading reads it (nothing is run).

Each subfolder of ROOT is one student. Its code is the assignment's module file, else the module
built from its notebook, exactly as `grade run` builds it (grader.submission). Anything that is
not a submission folder, or whose code cannot be read or parsed, is listed with the reason.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from grader.rubric import Rubric
from grader.similarity.compare import Document, Skipped, make_document, starter_hashes

# a module larger than this is not homework (the references are ~10 kB): listed, never read whole, never
# parsed (parsing 2 MB of code took 9 s and 1.2 GB before a single node could be counted)
MAX_BYTES = 300_000


class SimilarityError(Exception):
    """Bad input for the whole run (not one submission): the CLI prints it and exits 2."""


def _read_regular(path: Path) -> str:
    """The text of a regular file (no link, no FIFO), bounded; raises OSError/ValueError with a reason."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if st.st_size > MAX_BYTES:
            raise ValueError(f"{path.name} is {st.st_size / 1e3:.0f} kB (more than {MAX_BYTES / 1e3:.0f} kB of code)")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    return source_text(data)


def source_text(data: bytes) -> str:
    """Python source bytes as Python reads them when it imports the file: a UTF-8 BOM dropped, a coding
    cookie obeyed (a BOM, or a latin-1 cookie, must not hide a copy from the comparison that the grading
    imports alike); undecodable bytes replaced, never an error."""
    import codecs
    import io
    import tokenize

    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        codecs.lookup(encoding)
    except (SyntaxError, LookupError):
        encoding = "utf-8"
    if encoding == "utf-8-sig" or data.startswith(codecs.BOM_UTF8):
        encoding, data = "utf-8", data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode(encoding, errors="replace")
    except (LookupError, UnicodeError):
        return data.decode("utf-8", errors="replace")


def submission_code(folder: Path, rubric: Rubric) -> tuple[str, str]:
    """(origin, source) of one submission's code; raises ValueError with the reason it has none."""
    from grader.submission import _pick_notebook
    from grader.submission.notebook import NotebookError, module_from_notebook, read_notebook

    py = folder / rubric.module
    if py.is_file() or py.is_symlink():
        try:
            return rubric.module, _read_regular(py)
        except OSError as e:
            raise ValueError(f"{rubric.module} could not be read ({e.strerror or e})") from None
    book, why = _pick_notebook(folder, rubric)
    if book is None:
        raise ValueError(why or f"no {rubric.module} and no notebook")
    try:
        module = module_from_notebook(book, rubric.module, read_notebook(book))
    except (NotebookError, OSError, RecursionError, MemoryError) as e:
        raise ValueError(f"{book.name} could not be read as a notebook ({e})") from None
    return f"{book.name} (code cells)", module.source


def _fingerprint_one(item: tuple[str, str, str, bool]):
    student, origin, source, use_cache = item
    try:
        return make_document(student, origin, source, use_cache)
    except SyntaxError as e:
        return Skipped(student, f"{origin} does not parse as Python (line {e.lineno}: {e.msg})")
    except (RecursionError, MemoryError) as e:
        return Skipped(student, f"{origin} could not be read as Python ({type(e).__name__})")
    except ValueError as e:
        return Skipped(student, f"{origin} could not be compared: {e}")


def _map(items: list, jobs: int) -> list:
    """`_fingerprint_one` over items, in `jobs` processes when there are enough of them to pay for it."""
    if jobs <= 1 or len(items) < 40:
        return [_fingerprint_one(i) for i in items]
    import multiprocessing as mp
    import sys
    from concurrent.futures import ProcessPoolExecutor

    # fork is cheapest; a process that imported torch (threads) starts clean workers instead
    context = mp.get_context("spawn" if "torch" in sys.modules else "fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(_fingerprint_one, items, chunksize=max(1, len(items) // (4 * jobs))))


def load_class(root: Path, rubric: Rubric, use_cache: bool = True, jobs: int | None = None
               ) -> tuple[list[Document], list[Skipped]]:
    """The fingerprinted code of each submission under `root`, and what was skipped and why.
    `jobs`: processes that fingerprint (default: the cores; uncached submissions only cost time)."""
    if not root.is_dir():
        raise SimilarityError(f"{root} is not a folder: pass the folder that holds one subfolder per student")
    skipped: list[Skipped] = []
    todo: list[tuple[str, str, str, bool]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if not entry.is_dir() or entry.is_symlink():
            skipped.append(Skipped(entry.name, "not a submission folder (a loose file or a link): put each "
                                               "student's files in a folder named after the student"))
            continue
        try:
            origin, source = submission_code(entry, rubric)
        except ValueError as e:
            skipped.append(Skipped(entry.name, str(e)))
            continue
        if not source.strip():
            skipped.append(Skipped(entry.name, f"{origin} is empty"))
            continue
        if len(source) > MAX_BYTES:  # a module built from a notebook (up to 2 M characters)
            skipped.append(Skipped(entry.name, f"{origin}: {len(source) / 1e3:.0f} k characters of code (more than "
                                               f"{MAX_BYTES / 1e3:.0f} k): not compared, review it by hand"))
            continue
        todo.append((entry.name, origin, source, use_cache))
    done = _map(todo, jobs if jobs is not None else (os.cpu_count() or 1))
    docs = [d for d in done if isinstance(d, Document)]
    skipped += [d for d in done if isinstance(d, Skipped)]
    return docs, sorted(skipped, key=lambda s: s.student)


def guess_assignment(root: Path, rubrics: dict[str, Rubric]) -> Rubric:
    """The assignment that the most submission folders under `root` fit."""
    from grader.submission import fits

    if not root.is_dir():
        raise SimilarityError(f"{root} is not a folder: pass the folder that holds one subfolder per student")
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    counts = {rid: sum(fits(f, r) for f in folders) for rid, r in rubrics.items()}
    best = max(counts.values(), default=0)
    if best == 0:
        raise SimilarityError(f"no folder under {root} holds an assignment's module or notebook "
                              f"({', '.join(r.module for r in rubrics.values())}): check ROOT, or name the "
                              "assignment with --assignment")
    winners = [rid for rid, c in counts.items() if c == best]
    if len(winners) > 1:
        raise SimilarityError(f"the folders fit several assignments equally ({', '.join(sorted(winners))}): "
                              "choose one with --assignment")
    return rubrics[winners[0]]


def starter_code(rubric: Rubric, starter: Path | None) -> tuple[set[int], str]:
    """(k-gram hashes to ignore, where they came from). Default: the starter `grade release` gives
    the students (the reference with its solution blocks removed)."""
    if starter is None:
        from grader.authoring.release import ReleaseError, make_starter, reference_file

        try:
            text = make_starter(reference_file(rubric).read_text(), f"the reference of {rubric.id}")
        except (ReleaseError, OSError) as e:
            return set(), f"none (the release starter could not be built: {e})"
        return starter_hashes(text), f"the release starter of {rubric.id} (grade release)"
    if not starter.exists():
        raise SimilarityError(f"--starter {starter}: no such file or folder")
    files = [starter] if starter.is_file() else sorted(p for p in starter.rglob("*") if p.suffix in (".py", ".ipynb"))
    hashes: set[int] = set()
    for f in files:
        try:
            if f.suffix == ".ipynb":
                from grader.submission.notebook import code_cells, read_notebook

                for _, cell in code_cells(read_notebook(f)):
                    try:
                        hashes |= starter_hashes(cell)
                    except SyntaxError:
                        continue  # a cell with shell magics: nothing of it can be in a module
            else:
                hashes |= starter_hashes(_read_regular(f))
        except SyntaxError as e:
            raise SimilarityError(f"--starter {f} does not parse as Python (line {e.lineno}: {e.msg})") from None
        except Exception as e:  # noqa: BLE001 - any unreadable starter is the user's to fix, named here
            raise SimilarityError(f"--starter {f} could not be read ({e})") from None
    if not files:
        raise SimilarityError(f"--starter {starter} holds no .py or .ipynb file")
    return hashes, str(starter)
