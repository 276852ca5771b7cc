"""Grading on machines that share no files with the client: the worker side of `grade batch --executor dask`.

Only bytes cross the wire; nothing depends on a path being the same on two machines:

    client (grader.batch)                          worker (`dask worker ADDRESS --preload grader.remote`)
    pack_submission(folder) -> Packed  ───────▶   grade_packed(task, packed, reference_entries)
      the sandbox's copy rules, read once;           refuses unless the task's `grader_identity` and data
      digest == engine.submission_hash               digest equal its own; grades the copy in a scratch folder
    writes results.json + files, renders  ◀─────   {"ok", "result", "files", "reference_entries", "worker"}

- Same grader everywhere: a task carries `grader_identity(rubric)` (gradekit's version, sha256 of the rubric
  and of every file of the grader/ and reference/ packages). A worker whose identity differs answers
  {"ok": False, "refused": "..."} naming what differs and grades nothing: a stale copy is never used.
- Data: `data_digest(spec)` hashes the files a spec reads (scikit-learn's embedded digits file, or the MNIST
  IDX files of `mnist:PATH`); a worker whose files at that path differ (or are missing) refuses.
- Reference model: the client ships its verified reference-cache entries (`grader.model_cache.export_entries`);
  a worker installs those it lacks (digest checked) and sends back the ones it trained during the task.
- Options: a task carries the client's `engine.GradeOptions` as `to_dict()` (plain values, `--allow-unsandboxed`
  included), read only after the identity check; the worker sets out_dir, threads and left_out itself.
- `dask_setup` (the `--preload`) checks at worker start that the worker can isolate student code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from grader.fileio import write_atomic

MAX_RETURNED_BYTES = 64 * 1024 * 1024  # figures and plots sent back per student (past this: left out, noted)


# ---- the submission as content -------------------------------------------------------------------
@dataclass
class Packed:
    """A submission read once on the client: its files (relative POSIX path -> bytes) and folders, what the
    copy rules left out, and `digest` (equal to `engine.submission_hash` of the copy graded from it)."""

    files: dict[str, bytes] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.files.values())


def files_digest(files: dict[str, bytes]) -> str:
    """sha256 over names and contents in `engine.submission_hash`'s order (its Path order, not str order)."""
    h = hashlib.sha256()
    for rel in sorted(files, key=Path):
        h.update(rel.encode() + b"\0")
        h.update(files[rel])
    return h.hexdigest()


def pack_submission(folder: Path) -> Packed:
    """Read `folder` with the sandbox's copy rules (`sandbox.client.submission_files`)."""
    from grader.sandbox.client import submission_files

    packed = Packed()
    for kind, rel, f in submission_files(Path(folder)):
        if kind == "left_out":
            packed.left_out.append(str(rel))
        elif kind == "dir":
            packed.folders.append(rel.as_posix())
        else:
            packed.files[rel.as_posix()] = f.read()
    packed.digest = files_digest(packed.files)
    return packed


def unpack(packed: Packed, folder: Path) -> None:
    """Write `packed` into the new folder `folder` (paths checked: nothing lands outside it)."""
    folder.mkdir(parents=True, mode=0o755)
    for rel in [*packed.folders, *packed.files]:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"packed submission holds an unsafe path {rel!r}")
    for rel in packed.folders:
        (folder / rel).mkdir(parents=True, exist_ok=True, mode=0o755)
    for rel, data in packed.files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        (folder / rel).write_bytes(data)


# ---- same grader everywhere ---------------------------------------------------------------------
_HASHES: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, sha256): re-read only when changed


def _sha256_file(path: Path) -> str:
    st = path.stat()
    old = _HASHES.get(str(path))
    if old and old[:2] == (st.st_mtime_ns, st.st_size):
        return old[2]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _HASHES[str(path)] = (st.st_mtime_ns, st.st_size, digest)
    return digest


def grader_identity(rubric) -> dict:
    """{"gradekit": version, "assignment": id, "files": {"grader/…py" | "reference/…py" | "rubrics/<id>.toml": sha256}}:
    what a grade depends on, as the files on this machine are now (a worker whose files changed since it
    imported them is refused too: its identity is that of the files it would import next)."""
    import grader
    import reference
    from grader import __version__

    files = {}
    for package in (grader, reference):
        root = Path(package.__file__).resolve().parent
        for p in sorted(root.rglob("*.py")):
            if "__pycache__" not in p.parts:
                files[f"{root.name}/{p.relative_to(root).as_posix()}"] = _sha256_file(p)
    files[f"rubrics/{Path(rubric.path).name}"] = _sha256_file(Path(rubric.path))
    return {"gradekit": __version__, "assignment": rubric.id, "files": files}


def identity_difference(client: dict, worker: dict) -> str:
    """'' when equal, else what differs between the client's grader and this worker's, in words."""
    problems = []
    if client.get("gradekit") != worker.get("gradekit"):
        problems.append(f"gradekit {worker.get('gradekit')} here, {client.get('gradekit')} on the client")
    a, b = client.get("files", {}), worker.get("files", {})
    differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    missing, extra = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    for words, names in (("differ", differ), ("are missing here", missing), ("exist only here", extra)):
        if names:
            problems.append(f"{len(names)} file(s) {words}: {', '.join(names[:6])}" + (" …" if len(names) > 6 else ""))
    return "; ".join(problems)


# ---- data ------------------------------------------------------------------------------------------
def resolve_data_spec(spec: str | None) -> str | None:
    """`mnist:PATH` with PATH made absolute (it names the same folder on every worker), else unchanged."""
    if not spec:
        return spec
    kind, sep, rest = spec.strip().partition(":")
    if sep and kind.strip().lower().startswith("mnist") and rest.strip():
        return f"{kind}:{Path(os.path.expanduser(rest.strip())).resolve()}"
    return spec


def data_digest(spec: str | None) -> str:
    """sha256 over the files `spec` reads ('' for the rubric's default, which the rubric's hash covers):
    scikit-learn's embedded digits file, or the IDX files of `mnist:PATH`. Raises DataError if absent."""
    if not spec:
        return ""
    kind = spec.strip().partition(":")[0].strip().lower()
    if kind == "digits":
        from grader.data import digits_file

        paths = {"digits.csv.gz": digits_file()}
    else:
        from grader.data import _find_mnist_files

        path = Path(os.path.expanduser(spec.partition(":")[2].strip())).resolve()
        paths = {f"{a}-{b}": p for (a, b), p in sorted(_find_mnist_files(path).items())}
    h = hashlib.sha256()
    for name, p in sorted(paths.items()):
        h.update(name.encode() + b"\0" + _sha256_file(p).encode())
    return h.hexdigest()


# ---- the worker's side ----------------------------------------------------------------------------
def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except Exception:
        import socket

        return f"{socket.gethostname()} (pid {os.getpid()})"


def _worker_threads() -> int:
    """Torch threads for training: this machine's cores shared by the worker's task slots."""
    from grader.batch import default_cores

    try:
        from distributed import get_worker

        slots = max(1, get_worker().state.nthreads)
    except Exception:
        slots = 1
    return max(1, default_cores() // slots)


def worker_allows_unsandboxed() -> bool:
    """The worker's own opt-in to run code it cannot isolate: `GRADEKIT_ALLOW_UNSANDBOXED=1 dask worker ...`.
    Configuration of this machine by whoever started the worker (docs/cluster.md), read here and nowhere
    below: it becomes a value of the options and the sandbox's config, like the client's `--allow-unsandboxed`."""
    from grader.sandbox.errors import ALLOW_UNSANDBOXED_ENV

    return os.environ.get(ALLOW_UNSANDBOXED_ENV) == "1"


def grade_packed(task: dict, packed: Packed, reference_entries: dict | None = None) -> dict:
    """Grade `packed` as student task["student"] on this machine, if it runs the client's grader.

    task: {"student", "assignment", "identity", "options": GradeOptions.to_dict() (its data spec absolute),
    "data_digest", "data_as_given"}.
    Returns {"ok": True, "result": results.json dict, "files": {path under OUT/<student>: bytes},
    "reference_entries": {key: entry} trained here, "worker"}, or {"ok": False, "refused"|"error": text,
    "worker"}. Never raises (the client writes every answer)."""
    from grader.batch import _error_text

    worker = _worker_name()
    try:
        from grader.engine import GradeOptions, GradingError, find_assignment

        try:
            rubric = find_assignment(Path("."), task["assignment"])
        except GradingError as e:
            return {"ok": False, "worker": worker, "refused": f"worker {worker} cannot grade {task['assignment']}: {e}"}
        difference = identity_difference(task["identity"], grader_identity(rubric))
        if difference:
            return {"ok": False, "worker": worker,
                    "refused": f"worker {worker} runs another grader than the client ({difference}); "
                               "install the client's gradekit on it (pip install the same wheel or commit)"}
        options = GradeOptions.from_dict(task.get("options") or {})
        data = options.data
        if data:
            try:
                here = data_digest(data)
            except Exception as e:
                here = f"unreadable ({type(e).__name__}: {e})"
            if here != task.get("data_digest"):
                return {"ok": False, "worker": worker,
                        "refused": f"worker {worker}: the data of --data {data} differ from the client's "
                                   f"(here: {here[:80] or 'none'}); copy the same files to that path on every worker"}
        from grader import model_cache

        for key, entry in (reference_entries or {}).items():
            model_cache.import_entry(key, entry)
        before = set(model_cache.entry_keys())
        from grader.sandbox.client import Zygote

        Zygote.shared().launch()
        with tempfile.TemporaryDirectory(prefix="gradekit-task-") as tmp:
            submission, out = Path(tmp) / "in" / task["student"], Path(tmp) / "out"
            unpack(packed, submission)
            from grader.engine import grade_submission

            result = grade_submission(submission, rubric, replace(
                options, out_dir=out, threads=_worker_threads(), left_out=list(packed.left_out),
                allow_unsandboxed=options.allow_unsandboxed or worker_allows_unsandboxed()))
            if task.get("data_as_given"):
                result.metrics["data_spec"] = task["data_as_given"]  # as the client wrote it (resume compares it)
            files, dropped = collect_files(out / task["student"])
            if dropped:
                result.errors.append("figures not sent back (over the size limit): " + ", ".join(dropped[:10]))
        new = {k: e for k in set(model_cache.entry_keys()) - before if (e := model_cache.export_entry(k))}
        return {"ok": True, "worker": worker, "result": result.to_json(), "files": files, "reference_entries": new}
    except Exception as e:
        return {"ok": False, "worker": worker, "error": _error_text(e)}


def collect_files(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """Regular files below `folder` (figures, the student's plots) as {relative path: bytes}, at most
    MAX_RETURNED_BYTES in all; and the relative paths left out for size."""
    files, dropped, total = {}, [], 0
    if not folder.is_dir():
        return files, dropped
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            rel = p.relative_to(folder).as_posix()
            size = p.stat().st_size
            if total + size > MAX_RETURNED_BYTES:
                dropped.append(rel)
                continue
            total += size
            files[rel] = p.read_bytes()
    return files, dropped


def write_files(files: dict[str, bytes], folder: Path) -> None:
    """The client's side of `collect_files`: write them below `folder`, refusing paths that leave it."""
    root = Path(folder).resolve()
    for rel, data in files.items():
        target = (root / rel).resolve()
        if Path(rel).is_absolute() or root not in target.parents:
            raise ValueError(f"a worker sent back a file with an unsafe path {rel!r}")
        write_atomic(target, data)  # a report rendered meanwhile sees the old figure or the new one


# ---- worker start ---------------------------------------------------------------------------------
def sandbox_check() -> str:
    """'' when this machine can isolate student code (a probe module imported in a real sandbox), else
    why not. With the worker's opt-in (`worker_allows_unsandboxed`) a machine that cannot is accepted
    (results say so)."""
    from grader.sandbox.client import Sandbox, SandboxConfig
    from grader.sandbox.errors import IsolationUnavailable, missing_protections

    probe = Path(tempfile.mkdtemp(prefix="gradekit-probe-"))
    try:
        (probe / "probe.py").write_text("X = 1\n")
        config = SandboxConfig(module_file="probe.py", load_timeout_s=60, allow_unsandboxed=worker_allows_unsandboxed())
        with Sandbox(probe, config) as sandbox:
            try:
                sandbox.start()
            except IsolationUnavailable as e:
                return str(e)
            if sandbox.load_error is not None:
                return f"the sandbox could not import a one-line module: {sandbox.load_error.message}"
            missing = missing_protections(sandbox.protections)
            if missing and not sandbox.protections.get("unsandboxed"):
                return f"the sandbox lacks: {', '.join(missing)}"
            return ""
    except Exception as e:
        return f"the sandbox could not start: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def dask_setup(worker=None) -> None:
    """`dask worker ADDRESS --preload grader.remote`: refuse to start a worker that cannot isolate student
    code (the message says what is missing), so a misconfigured node never takes tasks."""
    t0 = time.monotonic()
    problem = sandbox_check()
    if problem:
        raise RuntimeError(f"gradekit: this Dask worker cannot grade: {problem}")
    print(f"gradekit: worker can isolate student code (checked in {time.monotonic() - t0:.1f} s)", flush=True)
