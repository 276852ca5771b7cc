"""Grading a whole class: parallel, resumable, crash-tolerant.

    summary = grade_batch(Path("class/"), Path("reports/"), GradeOptions(only=["elbo"]), jobs=2)

- Every immediate, non-hidden subfolder of ROOT is a submission (its name is the student).
- How to grade is one `engine.GradeOptions`, shipped as it is to every worker (pickled to the local pool,
  `to_dict()` inside a Dask task): nothing travels through the environment. The batch sets its `out_dir`,
  `threads` and `left_out` for each worker; `grade_batch`'s own arguments are what only a batch has.
- A submission is skipped when OUT/<student>/results.json exists and its submission hash, rubric
  hash, grader version and set of checks all equal the current ones (`force=True` regrades).
- The rest are graded in a pool of `spawn`ed worker processes (each with its own warm zygote);
  each worker writes its result atomically (`save_result`) as soon as it is done, so an
  interrupted or killed batch resumes where it stopped.
- A submission whose grading raises is recorded as a failure (summary and OUT/<student>/error.txt);
  a worker process that dies is replaced (fresh pool, the remaining submissions resubmitted; a
  submission that was in flight during two deaths is given up); a submission running longer than
  the rubric's `submission_timeout_s` + 60 s has its worker killed and is recorded as a failure.
- Ctrl-C / SIGTERM: nothing more is submitted, the pool is shut down, finished results stay.
- At the end OUT/gradebook.csv is (re)written atomically from every OUT/*/results.json.

`executor="dask"` grades on a Dask cluster whose machines share no files with this one: each submission
travels as bytes, the results, figures and plots come back as bytes, and this process writes them and
renders the reports (same skipping rules; see `_run_dask` and grader/remote.py, docs/cluster.md).
"""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from grader.fileio import write_atomic

if TYPE_CHECKING:
    from grader.engine import GradeOptions

GUARD_EXTRA_S = 60.0
MAX_POOL_DEATHS_PER_SUBMISSION = 2


# ---- data ------------------------------------------------------------------------------------
@dataclass
class StudentOutcome:
    student: str
    status: str  # "graded" | "skipped" | "failed"
    score: float | None = None
    max_score: float | None = None
    seconds: float = 0.0
    message: str = ""  # failure reason (first line) or submission-level problems


@dataclass
class BatchSummary:
    root: Path
    out: Path
    total: int = 0
    outcomes: list[StudentOutcome] = field(default_factory=list)
    interrupted: bool = False
    elapsed: float = 0.0
    gradebook: Path | None = None
    pool_restarts: int = 0

    def _with(self, status: str) -> list[StudentOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def graded(self) -> list[StudentOutcome]:
        return self._with("graded")

    @property
    def skipped(self) -> list[StudentOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[StudentOutcome]:
        return self._with("failed")

    @property
    def not_done(self) -> int:
        return self.total - len(self.outcomes)


ProgressFn = Callable[[StudentOutcome, int, int], None]  # (outcome, done, total)


# ---- discovery and skipping --------------------------------------------------------------------
def find_submissions(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        from grader.engine import GradingError

        raise GradingError(f"{root} is not a folder: pass the folder that holds one subfolder per student")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def not_submissions(root: Path) -> list[tuple[str, str]]:
    """(name, why it is not graded and what to do) for every entry of `root` that `find_submissions` leaves
    out but a student may have handed in (a zip, a loose module or notebook): listed, never silently dropped."""
    out = []
    for p in sorted(Path(root).iterdir()):
        if p.name.startswith((".", "_")) or p.is_dir():
            continue
        if p.suffix.lower() == ".zip":
            out.append((p.name, "a zip archive, not a folder: unpack it into ROOT/<student>/ "
                                "(`grade import canvas|moodle` unpacks an LMS download)"))
        elif p.suffix.lower() in (".py", ".ipynb", ".pdf", ".tex", ".md"):
            out.append((p.name, f"a loose file: put it in a folder of its own, ROOT/{p.stem}/{p.name}"))
    return out


def _wanted_checks(rubric, only, public_only: bool = False) -> set[str]:
    return {c.id for c in rubric.select(list(only or []), public_only=public_only)}


def is_up_to_date(submission: Path, rubric, out: Path, only=None, data: str | None = None,
                  digest: str | None = None, public_only: bool = False) -> bool:
    """True when OUT/<student>/results.json grades exactly this submission with this rubric and grader
    (`digest`: the submission's hash when the caller has it already, see grader.remote.Packed)."""
    from grader import __version__
    from grader.engine import rubric_hash, submission_hash
    from grader.results import load_result

    path = Path(out) / submission.name / "results.json"
    if not path.is_file():
        return False
    try:
        old = load_result(path)
    except Exception:  # unreadable or from another schema: regrade
        return False
    return (old.grader_version == __version__ and old.rubric_hash == rubric_hash(rubric)
            and {t.check for t in old.tests} == _wanted_checks(rubric, only, public_only)
            and (old.metrics.get("data_spec") or None) == (data or None)
            and old.submission_hash == (digest or submission_hash(submission)))


def _write_error(out: Path, student: str, text: str) -> None:
    write_atomic(Path(out) / student / "error.txt", text if text.endswith("\n") else text + "\n")


def _first_line(text: str) -> str:
    from grader.glossary import shorten

    return shorten((text.strip().splitlines() or [""])[0], 300)


# ---- the work of one submission (runs in a worker process) ------------------------------------
def grade_one(path: str, options: GradeOptions, assignment: str | None = None, rubrics_dir: str | None = None) -> dict:
    """Grade one submission with `options`; return {"ok": True, "result": results.json dict} or
    {"ok": False, "error": text}. Never raises (a worker's answer is always written by the parent)."""
    try:
        from grader.sandbox.client import Zygote

        Zygote.shared().launch()
        from grader.engine import find_assignment, grade_submission

        submission = Path(path).resolve()
        rubric = (find_assignment(submission, assignment, Path(rubrics_dir)) if rubrics_dir
                  else find_assignment(submission, assignment))
        result = grade_submission(submission, rubric, options)
        return {"ok": True, "result": result.to_json()}
    except Exception as e:
        return {"ok": False, "error": _error_text(e)}


def _error_text(e: BaseException) -> str:
    from grader.engine import GradingError

    if isinstance(e, GradingError):
        return f"cannot grade: {e}"
    return f"internal error while grading: {type(e).__name__}: {e}\n\n{traceback.format_exc()}"


def _worker_init(jobs: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what happens on Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from grader.sandbox.client import Zygote

    Zygote.shared().launch(fork_here=True)  # torch imported once, here; the zygote forked off this fresh worker
    import torch

    if jobs > 1:
        torch.set_num_threads(1)


def _local_task(path: str, options: GradeOptions, assignment: str | None, rubrics_dir: str | None, marker: str,
                reports: bool = True) -> dict:
    """Worker side of the local pool: grade, then write results.json (or error.txt) atomically into
    options.out_dir."""
    from grader import trace

    trace.mark("batch: submission started")
    Path(marker).write_text(f"{os.getpid()} {time.time()}")
    t0 = time.monotonic()
    student = Path(path).name
    reply = grade_one(path, options, assignment, rubrics_dir)
    seconds = time.monotonic() - t0
    out = options.out_dir
    try:
        if reply["ok"]:
            return _store(reply["result"], out, student, seconds, reports)
        _write_error(out, student, reply["error"])
        return {"student": student, "status": "failed", "seconds": seconds, "message": _first_line(reply["error"])}
    except Exception as e:  # e.g. the disk is full: still a per-student failure
        return {"student": student, "status": "failed", "seconds": seconds,
                "message": f"could not write the result: {type(e).__name__}: {e}"}


def _store(data: dict, out: Path, student: str, seconds: float, reports: bool = True) -> dict:
    """Write results.json atomically (the student named by the folder), drop a stale error.txt,
    then render report.html/.pdf beside it (a report failure is noted, the result stays)."""
    from grader.results import write_json_atomic

    write_json_atomic(out / student / "results.json", data)
    (out / student / "error.txt").unlink(missing_ok=True)
    from grader import trace

    trace.mark("results.json written")
    errors = data.get("extra_data", {}).get("gradekit", {}).get("errors", [])
    notes = [_first_line(e) for e in errors[:2]]
    if reports:
        problem = render_student_report(out / student)
        if problem:
            notes.append(problem)
    return {"student": student, "status": "graded", "seconds": seconds,
            "score": data.get("score"), "max_score": data.get("max_score"),
            "message": "; ".join(notes)}


def render_student_report(folder: Path) -> str:
    """Render folder/report.html and report.pdf from folder/results.json; '' or what went wrong."""
    try:
        from grader.report.render import render_report
        from grader.results import load_result

        render_report(load_result(folder / "results.json"), folder)
        return ""
    except Exception as e:
        return f"report not rendered: {type(e).__name__}: {e}"


# ---- process helpers ---------------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    """pid's descendants (Linux /proc); the sandbox children are grandchildren of a worker."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(pid: int) -> None:
    for p in [pid] + _descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_pool(pool: cf.ProcessPoolExecutor) -> None:
    procs = dict(getattr(pool, "_processes", None) or {})
    for pid in procs:
        _kill_tree(pid)
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:
        pass
    for p in procs.values():
        try:
            p.join(timeout=5)
        except Exception:
            pass


def default_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ---- the batch ---------------------------------------------------------------------------------
def grade_batch(root: Path, out: Path, options: GradeOptions | None = None, *, jobs: int = 1,
                assignment: str | None = None, rubrics_dir: Path | None = None, force: bool = False,
                progress: ProgressFn | None = None, executor: str = "local", scheduler: str | None = None,
                reports: bool = True, write_gradebook_csv: bool = True) -> BatchSummary:
    """Grade every submission folder under `root` into `out` with `options` (see the module docstring;
    options.secret: the checks' inputs of every student, None: a fresh one per submission).
    Batch only: `jobs` local workers; `assignment` (else inferred per submission) from `rubrics_dir`;
    `force` regrades up-to-date results; `progress(outcome, done, total)`; `executor` "local" or "dask"
    (at `scheduler`); `reports` renders each report; `write_gradebook_csv` writes OUT/gradebook.csv."""
    from grader.engine import GradeOptions, GradingError, find_assignment

    root, out = Path(root), Path(out)
    jobs = max(1, int(jobs))
    options = options or GradeOptions()
    only, data = list(options.only), options.data
    t_start = time.monotonic()
    submissions = find_submissions(root)
    out.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(root=root, out=out, total=len(submissions))

    def report(o: StudentOutcome) -> None:
        summary.outcomes.append(o)
        if progress is not None:
            try:
                progress(o, len(summary.outcomes), summary.total)
            except Exception:
                pass

    todo: list[tuple[Path, float, object, object]] = []  # (submission, wall-clock guard in s, rubric, Packed | None)
    for sub in submissions:
        try:
            rubric = (find_assignment(sub.resolve(), assignment, Path(rubrics_dir)) if rubrics_dir
                      else find_assignment(sub.resolve(), assignment))
            if only and not rubric.select(only):
                raise GradingError(f"--only {','.join(only)} matches no check of {rubric.id}; tags: {', '.join(rubric.components)}")
            packed = None
            if executor == "dask":  # read once: the bytes hashed here are the bytes graded on the cluster
                from grader.remote import pack_submission

                packed = pack_submission(sub)
        except Exception as e:
            text = str(e) if isinstance(e, GradingError) else f"{type(e).__name__}: {e}"
            _write_error(out, sub.name, f"cannot grade: {text}")
            report(StudentOutcome(sub.name, "failed", message=_first_line(text)))
            continue
        if not force and is_up_to_date(sub, rubric, out, only, data, packed.digest if packed else None,
                                       options.public_only):
            from grader.results import load_result

            old = load_result(out / sub.name / "results.json")
            if reports and not (out / sub.name / "report.pdf").is_file():
                render_student_report(out / sub.name)  # no student code runs: cheap and safe
            report(StudentOutcome(sub.name, "skipped", old.score, old.max_score, 0.0))
            continue
        todo.append((sub, rubric.limits.submission_timeout_s + GUARD_EXTRA_S, rubric, packed))

    old_handler = None
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum, frame):
            raise KeyboardInterrupt

        old_handler = signal.signal(signal.SIGTERM, _on_term)
    try:
        if todo:
            if executor == "dask":
                _run_dask(todo, out, options, scheduler, report, summary, reports)
            elif executor == "local":
                _run_local(todo, out, options, jobs, assignment, rubrics_dir, report, summary, reports)
            else:
                raise GradingError(f"unknown executor {executor!r}: use local or dask")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    if write_gradebook_csv:
        try:
            summary.gradebook = write_gradebook(out)
        except KeyboardInterrupt:
            summary.interrupted = True
    summary.elapsed = time.monotonic() - t_start
    return summary


def _run_local(todo, out: Path, options: GradeOptions, jobs: int, assignment, rubrics_dir, report,
               summary: BatchSummary, reports: bool = True) -> None:
    from dataclasses import replace

    rubrics_dir = str(Path(rubrics_dir).resolve()) if rubrics_dir else None
    # what every worker gets: the caller's options, writing into OUT, training with its share of the cores
    options = replace(options, out_dir=out.resolve(), threads=max(1, default_cores() // jobs), left_out=[])
    state = Path(tempfile.mkdtemp(prefix="gradekit-batch-"))
    guard = {sub.name: g for sub, g, *_ in todo}
    pending = [sub for sub, *_ in todo]  # not yet finished, in order
    deaths: dict[str, int] = {}
    ctx = multiprocessing.get_context("spawn")
    try:
        while pending:
            pool = cf.ProcessPoolExecutor(max_workers=min(jobs, len(pending)), mp_context=ctx,
                                          initializer=_worker_init, initargs=(jobs,))
            futures: dict[cf.Future, Path] = {}
            for sub in pending:
                (state / sub.name).unlink(missing_ok=True)
            try:
                for sub in pending:
                    futures[pool.submit(_local_task, str(sub.resolve()), options, assignment, rubrics_dir,
                                        str(state / sub.name), reports)] = sub
                broken = False
                while futures and not broken:
                    done, _ = cf.wait(list(futures), timeout=0.5, return_when=cf.FIRST_COMPLETED)
                    for f in done:
                        sub = futures.pop(f)
                        try:
                            r = f.result()
                        except BrokenProcessPool:
                            futures[f] = sub  # dealt with below, with the others in flight
                            broken = True
                            continue
                        except Exception as e:  # pickling problems and the like: this student only
                            r = {"student": sub.name, "status": "failed", "message": f"{type(e).__name__}: {e}"}
                            _write_error(out, sub.name, f"internal error: {type(e).__name__}: {e}")
                        pending.remove(sub)
                        report(StudentOutcome(r["student"], r["status"], r.get("score"), r.get("max_score"),
                                              r.get("seconds", 0.0), r.get("message", "")))
                    if broken:
                        break
                    # wall-clock guard: kill the worker of a submission that runs too long
                    now = time.time()
                    for f, sub in list(futures.items()):
                        started = _started(state / sub.name)
                        if started and not f.done() and now - started[1] > guard[sub.name]:
                            pending.remove(sub)
                            futures.pop(f)
                            msg = (f"grading took longer than {guard[sub.name]:g} s (the rubric's submission_timeout_s "
                                   f"+ {GUARD_EXTRA_S:g} s): its worker was killed; regrade it alone with `grade run`")
                            _write_error(out, sub.name, msg)
                            report(StudentOutcome(sub.name, "failed", seconds=now - started[1], message=msg))
                            _kill_tree(started[0])  # breaks the pool: the others are resubmitted
                            broken = True
                if broken:
                    summary.pool_restarts += 1
                    for sub in list(futures.values()):
                        if sub in pending and _started(state / sub.name):
                            deaths[sub.name] = deaths.get(sub.name, 0) + 1
                            if deaths[sub.name] >= MAX_POOL_DEATHS_PER_SUBMISSION:
                                pending.remove(sub)
                                msg = ("the grading worker process died twice while grading this submission "
                                       "(out of memory? a grader bug?); regrade it alone with `grade run`")
                                _write_error(out, sub.name, msg)
                                report(StudentOutcome(sub.name, "failed", message=msg))
                _kill_pool(pool)
            except BaseException:
                _kill_pool(pool)
                raise
    finally:
        import shutil

        shutil.rmtree(state, ignore_errors=True)


def _started(marker: Path) -> tuple[int, float] | None:
    try:
        pid, t = marker.read_text().split()
        return int(pid), float(t)
    except (OSError, ValueError):
        return None


def _run_dask(todo, out: Path, options: GradeOptions, scheduler, report, summary: BatchSummary,
              reports: bool = True) -> None:
    """Grade `todo` on a Dask cluster that shares no files with this machine (grader.remote has the protocol).

    Each submission travels inside its task (not scattered: scattered data dies with the worker holding it, and
    the scheduler could not rerun the task); a task runs `remote.grade_packed` on a worker,
    which refuses when its grader or data differ from ours: that worker gets no more tasks and the submission is
    sent to another one. The scheduler retries a task whose worker was lost (the student's outcome says so);
    after `distributed.scheduler.allowed-failures` losses it is a failure of that student. While the reference
    model is not in our cache, one task runs alone first: the reference is trained once, for the whole cluster,
    and shipped with every later task.

    Each task carries `options.to_dict()` with the data spec made absolute; the worker sets out_dir, threads
    and left_out, and reads the options only after it has checked that it runs the client's grader."""
    import uuid
    from dataclasses import replace

    from grader import model_cache
    from grader.engine import GradingError
    from grader.remote import data_digest, grade_packed, grader_identity, resolve_data_spec, write_files

    try:
        import distributed
    except ImportError:
        raise GradingError("--executor dask needs the `distributed` package: pip install 'gradekit[dask]'") from None
    if not scheduler:
        raise GradingError("--executor dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786)")
    data, only = options.data, list(options.only)
    data_spec = resolve_data_spec(data)
    try:
        data_sha = data_digest(data_spec)
    except Exception as e:
        raise GradingError(f"--data {data}: {e}") from None
    shipped_options = replace(options, data=data_spec, out_dir=None, threads=None, left_out=[]).to_dict()
    try:
        client = distributed.Client(scheduler, timeout="20s")
    except Exception as e:
        raise GradingError(f"cannot reach the Dask scheduler at {scheduler}: {e}; start one with `dask scheduler` "
                           "and workers with `dask worker ADDRESS --preload grader.remote` (docs/cluster.md)") from None
    try:
        identities: dict[str, dict] = {}
        lost: dict[str, int] = {}  # student -> tasks lost with their inputs (resubmitted)
        refused: dict[str, str] = {}  # worker -> why it refused; it gets no more tasks
        entries = model_cache.export_entries()
        shipped = [client.scatter([entries], broadcast=True)[0] if entries else None]
        trains = any("model" in spec.all_tags for _, _, rubric, _ in todo for spec in rubric.select(only))
        gated = [trains and not entries]  # one task alone until the reference model comes back
        queue = [(sub, guard, rubric, packed) for sub, guard, rubric, packed in todo]
        running: dict = {}  # future -> (item, submitted_at)

        def usable() -> list[str]:
            return [w for w in client.scheduler_info(n_workers=-1)["workers"] if w not in refused]

        def submit(item) -> None:
            sub, guard, rubric, packed = item
            if rubric.id not in identities:
                identities[rubric.id] = grader_identity(rubric)
            task = {"student": sub.name, "assignment": rubric.id, "identity": identities[rubric.id],
                    "options": shipped_options, "data_as_given": data, "data_digest": data_sha}
            restrict = usable() if refused else None
            f = client.submit(grade_packed, task, packed, shipped[0], pure=False,
                              key=f"grade-{sub.name}-{uuid.uuid4().hex[:12]}", workers=restrict,
                              allow_other_workers=False)
            running[f] = (item, time.monotonic())

        def fail(sub: Path, seconds: float, text: str) -> None:
            _write_error(out, sub.name, text)
            report(StudentOutcome(sub.name, "failed", seconds=seconds, message=_first_line(text)))

        while queue or running:
            workers = usable()
            if not workers and not running:
                why = "; ".join(sorted(set(refused.values()))) or "the scheduler has no workers"
                for sub, *_ in queue:
                    fail(sub, 0.0, f"cannot grade: no Dask worker can grade it: {why}")
                break
            slots = 1 if gated[0] else max(1, sum(n for w, n in client.nthreads().items() if w in workers))
            while queue and len(running) < slots:
                submit(queue.pop(0))
            try:
                distributed.wait(list(running), timeout=0.5, return_when="FIRST_COMPLETED")
            except Exception:  # timeout, or a future cancelled (handled below)
                pass
            now = time.monotonic()
            for f, (item, t0) in list(running.items()):
                sub, guard = item[0], item[1]
                if f.cancelled():  # its input (the shipped reference entries) was lost with a worker
                    running.pop(f)
                    lost[sub.name] = lost.get(sub.name, 0) + 1
                    if lost[sub.name] > 3:
                        fail(sub, now - t0, "the Dask task was lost with its workers 4 times; regrade it alone")
                        continue
                    if entries:
                        shipped[0] = client.scatter([entries], broadcast=True)[0]
                    queue.insert(0, item)
                elif f.done():
                    running.pop(f)
                    try:
                        reply = f.result()
                    except Exception as e:  # KilledWorker: its workers died `allowed-failures` times
                        reply = {"ok": False, "error": f"the Dask task failed: {type(e).__name__}: {e} (the workers "
                                 "running it died: out of memory? killed?); regrade it alone with `grade run`"}
                    times = _times_rescheduled(client, f.key) + lost.get(sub.name, 0)
                    if reply.get("refused"):
                        refused[reply.get("worker", "?")] = reply["refused"]
                        queue.insert(0, item)  # to another worker, or failed above when none is left
                        continue
                    if reply.get("ok"):
                        for key, entry in (reply.get("reference_entries") or {}).items():
                            model_cache.import_entry(key, entry)
                            entries[key] = entry
                        if reply.get("reference_entries"):
                            shipped[0] = client.scatter([entries], broadcast=True)[0]
                            gated[0] = False
                        try:
                            write_files(reply.get("files") or {}, out / sub.name)
                            r = _store(reply["result"], out, sub.name, now - t0, reports)
                        except Exception as e:  # e.g. the disk is full: still a per-student failure
                            fail(sub, now - t0, f"could not write the result: {type(e).__name__}: {e}")
                            continue
                        note = f"graded again after its worker was lost {times}×" if times else ""
                        report(StudentOutcome(sub.name, "graded", r["score"], r["max_score"], now - t0,
                                              "; ".join(m for m in (note, r["message"]) if m)))
                        if gated[0] and sum(o.status == "graded" for o in summary.outcomes) >= 2:
                            gated[0] = False  # nothing trained was cached after two: stop waiting
                    else:
                        fail(sub, now - t0, reply["error"])
                elif now - t0 > guard:
                    running.pop(f)
                    f.cancel()
                    fail(sub, now - t0, f"grading took longer than {guard:g} s on the Dask cluster: cancelled")
    finally:
        client.close()


def _times_rescheduled(client, key) -> int:
    """How often the scheduler had to rerun task `key` because the worker running it was lost (0 if unknown)."""
    def suspicious(dask_scheduler, key=key):
        ts = dask_scheduler.tasks.get(key)
        return ts.suspicious if ts is not None else 0

    try:
        return int(client.run_on_scheduler(suspicious))
    except Exception:
        return 0


# ---- gradebook ---------------------------------------------------------------------------------
def collect_results(out: Path) -> list:
    """Every OUT/*/results.json as GradeResult, sorted by student (unreadable files are skipped), with the
    manual grades of OUT/grades.sqlite applied when there is one."""
    from grader.results import load_result

    results = []
    for p in sorted(Path(out).glob("*/results.json")):
        try:
            r = load_result(p)
        except Exception:
            continue
        r.student = p.parent.name
        results.append(r)
    from grader.manual_grades.store import apply_stored_grades

    apply_stored_grades(out, results)  # grades entered in `grade serve` (grades.sqlite) count everywhere
    return results


def gradebook_frame(out: Path):
    import pandas as pd

    rows, components, questions = [], [], []
    results = collect_results(out)
    for r in results:
        for t in r.tests:
            comp = t.component or (t.tags[0] if t.tags else t.check)
            if comp not in components:
                components.append(comp)
        for q in r.questions:
            if q.id not in questions:
                questions.append(q.id)
    questions.sort(key=lambda q: (len(q), q))
    for r in results:
        row = {"student": r.student, "assignment": r.assignment, "score": round(r.score, 4), "max_score": r.max_score,
               "autograded_score": round(r.autograded_score, 4), "autograded_max": r.autograded_max}
        qs = {q.id: q.score for q in r.questions}
        for q in questions:
            row[q] = qs.get(q)
        per: dict[str, float] = {}
        for t in r.tests:
            comp = t.component or (t.tags[0] if t.tags else t.check)
            per[comp] = per.get(comp, 0.0) + t.score
        for c in components:
            row[c] = round(per[c], 4) if c in per else None
        row["errors"] = len(r.errors)
        row["submission_hash"] = r.submission_hash
        row["graded_at"] = r.graded_at
        rows.append(row)
    columns = (["student", "assignment", "score", "max_score", "autograded_score", "autograded_max"] + questions
               + components + ["errors", "submission_hash", "graded_at"])
    return pd.DataFrame(rows, columns=columns)


def write_csv_atomic(df, path: Path) -> Path:
    """`df` as CSV (no index), written whole or not at all; text cells that a spreadsheet would run as a
    formula (a student folder named "=HYPERLINK(...)") are neutralised (`fileio.csv_cell`)."""
    from grader.fileio import csv_safe_frame

    return write_atomic(path, csv_safe_frame(df).to_csv(index=False))


def write_gradebook(out: Path) -> Path:
    """OUT/gradebook.csv: one row per student with totals, per-question and per-component scores."""
    return write_csv_atomic(gradebook_frame(out), Path(out) / "gradebook.csv")
