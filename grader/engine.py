"""Grading one submission: submission -> sandboxed run -> plain arrays -> comparison -> results.

`grade_submission` never raises for anything the student did: broken, slow or hostile code ends as
zero points on the checks it affects, with the reason in the feedback. It raises `GradingError`
only for problems of the grader's inputs (no such folder, unknown assignment, bad rubric).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib
import os
import stat
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from grader import __version__, trace
from grader.charging import charge_once, drop_ruled_out, drop_ruled_out_causes
from grader.metrics import metric_info
from grader.redact import machine_paths, redact_paths
from grader.results import GradeResult, QuestionResult, TestResult
from grader.rubric import RUBRICS_DIR, CheckSpec, Rubric, RubricError, available_rubrics
from grader.sandbox.client import MAX_COPY_ENTRIES, REPO_ROOT, IsolationUnavailable, Sandbox, SandboxConfig, joined_output
from grader.submission import fits, prepare, write_figures
from grader.submission.answers import MAX_ANSWER_CHARS, parse_answers  # noqa: F401 (public here since v0.1)

if TYPE_CHECKING:
    from grader.checks import CheckContext, Outcome, Session, StudentValueError  # noqa: F401
    from grader.checks.interface import NotJudged, SignatureError  # noqa: F401
    from grader.checks.runners import ContextFactory

# torch and the checks are imported where grading starts, not here: `grade batch`'s parent process
# imports this module only to find assignments and hash submissions, and a torch import there
# (3-4 s on the project's VM) would delay the start of the workers that do the grading.
_CHECKS_NAMES = ("CheckContext", "Outcome", "Session", "StudentValueError", "NotJudged", "SignatureError")


def __getattr__(name: str):
    """`engine.CheckContext` and the other names of grader.checks (public here since v0.1), imported on
    first use. Read-only: to grade with another context, pass `grade_submission(..., context=...)`."""
    if name in _CHECKS_NAMES:
        from grader import checks
        from grader.checks import interface

        return getattr(checks, name, None) or getattr(interface, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



class GradingError(Exception):
    """The grader cannot grade this input at all (message says what to do)."""


@dataclass
class GradeOptions:
    """How to grade one submission. Everything a grading process needs beyond the submission and the rubric:
    `grade batch` ships one of these to every worker (pickled to its local pool, as `to_dict()` inside a Dask
    task), so no option travels through the environment."""

    only: list[str] = field(default_factory=list)
    public_only: bool = False
    device: str = "auto"
    out_dir: Path | None = None  # hidden from the student's code; figures go to out_dir/<student>/figures
    data: str | None = None  # data set for model-level checks (overrides the rubric's [model] data)
    model_overrides: dict = field(default_factory=dict)  # training budget etc. (tests use tiny ones)
    write_figures: bool = True
    threads: int | None = None  # torch threads of the child when it trains (unit checks: always 1)
    # Train the student's model in a second sandboxed child while the unit checks run (`_trains_ahead`):
    # None = when this grade has two cores (threads, else torch's, >= 2); `grade batch -j 2` gives each job one
    train_ahead: bool | None = None
    namespaces: bool = True
    # Run student code even where it cannot be isolated (`--allow-unsandboxed`): results and reports say so
    allow_unsandboxed: bool = False
    # Files the client left out when it packed this submission on another machine (grader.remote):
    # reported as if this machine's copy had left them out.
    left_out: list[str] = field(default_factory=list)
    # What the checks' inputs derive from (grader/checks/inputs.py): None = a fresh secret for this run (recorded
    # in results.json); a recorded one (`--seed`) draws the same inputs again; "" = the published inputs (self-checks)
    secret: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON-able values (the form a Dask task carries; `from_dict` reads it back)."""
        d = asdict(self)
        d["out_dir"] = str(self.out_dir) if self.out_dir is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GradeOptions":
        """The inverse of `to_dict`; a key this version does not know is an error (a client and a worker
        running different graders are refused before this, by `grader.remote.grader_identity`)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown grading option(s) {', '.join(unknown)}")
        d = dict(d)
        if d.get("out_dir") is not None:
            d["out_dir"] = Path(d["out_dir"])
        return cls(**d)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise GradingError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise GradingError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def find_assignment(submission: Path, assignment: str | None, rubrics_dir: Path = RUBRICS_DIR) -> Rubric:
    try:
        rubrics = available_rubrics(rubrics_dir)
    except RubricError as e:
        raise GradingError(str(e)) from None
    if assignment:
        if assignment not in rubrics:
            raise GradingError(f"unknown assignment {assignment!r}; known: {', '.join(sorted(rubrics)) or 'none'} (see `grade list`)")
        return rubrics[assignment]
    fitting = [r for r in rubrics.values() if fits(submission, r)]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        unreadable = _unreadable_notebooks(submission)
        if unreadable:  # the cause, not "holds none of the files": the notebook is there but cannot be read
            raise GradingError("; ".join(unreadable))
        wanted = ", ".join(f"{r.module} ({r.id})" for r in rubrics.values())
        raise GradingError(f"{submission} holds none of the files an assignment expects ({wanted}, or a notebook "
                           "defining its functions); "
                           "check the folder, or name the assignment with --assignment")
    raise GradingError(f"{submission} fits several assignments ({', '.join(r.id for r in fitting)}): choose one with --assignment")


def _unreadable_notebooks(folder: Path) -> list[str]:
    """What is wrong with each notebook in `folder` that cannot be read at all (NotebookError's words)."""
    from grader.submission import notebooks_in
    from grader.submission.notebook import NotebookError, read_notebook

    out = []
    for book in notebooks_in(folder):
        try:
            read_notebook(book)
        except NotebookError as e:
            out.append(str(e))
        except OSError as e:
            out.append(f"{book.name} could not be read ({e.strerror or e})")
    return out


def submission_hash(submission: Path) -> str:
    """sha256 over the submission's file names and contents (regrades can be matched to it)."""
    h = hashlib.sha256()
    for p in _regular_files(submission):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            h.update(str(p.relative_to(submission)).encode() + b"\0")
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _regular_files(folder: Path) -> list[Path]:
    """The files the sandbox copies (see `client._copy_submission`): no links followed, no hidden
    folders or __pycache__, so the original and its copy hash the same."""
    out, entries = [], 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        entries += 1 + len(files)
        if entries > MAX_COPY_ENTRIES:  # where the copy stops too (client.submission_files)
            break
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        out += [Path(root) / f for f in files]
    return sorted(out)


def rubric_hash(rubric: Rubric) -> str:
    return hashlib.sha256(Path(rubric.path).read_bytes()).hexdigest()


def _hide_list(rubric: Rubric, submission: Path, out_dir: Path | None) -> list[str]:
    paths = [REPO_ROOT / "reference", RUBRICS_DIR, REPO_ROOT / "grader" / "checks", REPO_ROOT / "tests",
             REPO_ROOT / "submissions", submission.parent, submission]
    # The grading user's secrets (a grader run unprivileged shares its id with the child).
    home = Path.home()
    paths += [home / name for name in (".ssh", ".gnupg", ".aws", ".config", ".netrc", ".docker", ".kube")]
    if out_dir is not None:
        paths.append(out_dir)
    return [str(p) for p in paths]


def grade_submission(submission: Path, rubric: Rubric, options: GradeOptions | None = None,
                     context: "ContextFactory | None" = None) -> GradeResult:
    """Grade `submission` with `rubric`. `context` builds each check's context (default
    `grader.checks.CheckContext`; grader/checks/runners.py says what it is called with): the release
    recorder and the offline self-check pass subclasses that answer from recorded reference values."""
    import torch

    from grader.checks import Session

    options = options or GradeOptions()
    submission = Path(submission).resolve()
    if not submission.is_dir():
        raise GradingError(f"{submission} is not a folder: pass the folder that holds {rubric.module}")
    device = resolve_device(options.device)
    selected = rubric.select(options.only, public_only=options.public_only)
    if not selected:
        raise GradingError(f"--only {','.join(options.only)} matches no check of {rubric.id}; "
                           f"tags: {', '.join(rubric.components)}")
    t0 = time.monotonic()
    result = GradeResult(
        student=submission.name, assignment=rubric.id, tests=[], grader_version=__version__,
        submission_hash="", rubric_hash=rubric_hash(rubric),
        graded_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), device=device,
        questions=[],
    )
    trains = any(spec.kind_info.trains for spec in selected)
    if trains:  # unit checks never train: they do not wait for it. Asked now, it overlaps the preflight below
        from grader.sandbox.client import Zygote

        Zygote.shared().prepare_training()
    # Unit checks compute on small tensors, the grader and the child taking turns: more than one torch
    # thread only adds OpenMP hand-offs and spinning threads competing with the other process for the
    # cores (3x the CPU time and 2-3x the wall time of `grade check` measured on 2 cores). That holds
    # for `grade batch` too, whose workers ask for cores // jobs threads (for training).
    config = SandboxConfig(module_file=rubric.module, device=device, memory_mb=rubric.limits.memory_mb,
                           threads=(options.threads or torch.get_num_threads()) if trains else 1,
                           namespaces=options.namespaces, allow_unsandboxed=options.allow_unsandboxed,
                           load_timeout_s=rubric.limits.call_timeout_s,
                           hide=_hide_list(rubric, submission, options.out_dir))
    from grader.checks.inputs import check_secret, new_secret

    try:  # made here, after the zygote was forked off this process: never in a child's memory
        secret = new_secret() if options.secret is None else check_secret(options.secret)
    except ValueError as e:
        raise GradingError(str(e)) from None
    result.inputs_secret = secret
    session = Session(data=options.data, model_overrides=dict(options.model_overrides), figures_dir=None, secret=secret)
    preflight = getattr(importlib.import_module(rubric.checks_module), "preflight", None)
    if preflight is not None:
        try:
            preflight(rubric, session, selected)
        except ValueError as e:  # bad data folder, bad [model] settings: the instructor's to fix
            raise GradingError(str(e)) from None
    trace.mark("rubric's checks module imported, preflight")
    ahead_hook = getattr(importlib.import_module(rubric.checks_module), "train_ahead", None)
    ahead = ahead_hook is not None and _trains_ahead(selected, options)
    with Sandbox(submission, config) as sandbox, contextlib.ExitStack() as closing:
        # From here on the grader reads only the sandbox's copy (no links, regular files only).
        result.submission_hash = submission_hash(sandbox.scratch)
        handed_in = prepare(sandbox.scratch, rubric)  # module source (+ notebook line map), answers, figures; runs nothing
        result.errors.extend(handed_in.errors)
        if handed_in.needs_source:  # built from a notebook by the grader; the child imports only this
            sandbox.write_module(handed_in.module.source)
        trace.mark("submission hashed and read (answers, notebook)")
        answers = handed_in.answers.answers
        result.questions = [QuestionResult(q.id, q.title, q.points, answers.get(q.id)) for q in rubric.questions]
        left_out = list(options.left_out) + sandbox.skipped
        if left_out:
            result.errors.append("not graded (links, special files, or over the size limit): "
                                 + ", ".join(left_out[:20]) + (" …" if len(left_out) > 20 else ""))
        trainer = None
        if ahead:  # a second child of the same copy (taken before any student code ran), for the training only
            trainer = closing.enter_context(Sandbox(sandbox.scratch, dataclasses.replace(config)))
            config.threads = 1  # the first child runs the unit checks only
        try:
            if trainer is not None:
                trainer.start()
                trainer.output_from = trainer.log_size()  # the import's output is the first child's to show
            sandbox.start()
        except IsolationUnavailable as e:
            raise GradingError(str(e)) from None
        result.sandbox = dict(sandbox.protections)
        if sandbox.protections.get("unsandboxed"):
            result.errors.append("WARNING: this submission ran WITHOUT isolation (--allow-unsandboxed); missing: "
                                 + ", ".join(sandbox.protections["unsandboxed"]))
        if sandbox.load_error is not None:
            e = sandbox.load_error
            result.errors.append(handed_in.translate(f"{rubric.module} could not be imported: {e.message}"
                                                     + (f" ({e.where})" if e.where else "")))
        diagnosed: dict = {}
        deadline = t0 + rubric.limits.submission_timeout_s
        figures_dir = None
        if options.out_dir is not None and options.write_figures:
            figures_dir = Path(options.out_dir) / result.student / "figures"
        session.figures_dir = figures_dir
        session.remaining_s = lambda: deadline - time.monotonic()
        numbers = check_numbers(rubric)
        if trainer is not None and trainer.load_error is None and sandbox.load_error is None:
            first = next(spec for spec in selected if spec.kind_info.trains)
            from grader.checks import CheckContext

            try:
                ahead_hook((context or CheckContext)(first, rubric, trainer, device, {}, rubric.limits.call_timeout_s,
                                                     session))
                trace.mark("training started ahead in a second child")
            except Exception:  # (a grader bug) the model checks then train in the first child, as with one child
                pass
        for spec in selected:
            number = numbers[spec.id]
            test = _run_check(spec, number, rubric, sandbox, device, diagnosed, deadline, result, session, context)
            test.output = handed_in.translate(test.output)  # notebook: cell and line, not the generated module's
            result.tests.append(test)
        drop_ruled_out(result.tests, session.ruled_out)
        drop_ruled_out_causes(result.tests, session.causes_ruled_out)
        charge_once(result.tests)
        from grader.checks.runners import credit_blocked

        credit_blocked(result.tests, rubric, session)
        stats = getattr(sandbox, "stats", None)  # (a self-check bundle's in-process stand-in has none)
        if stats and trace.enabled():
            trace.mark("checks: waiting for the child (all requests)", total_s=stats["request_s"], count=stats["requests"])
            trace.mark("checks: the child's own time in requests", total_s=stats["child_s"], count=stats["requests"])
            trace.mark("checks: answering the child's upcalls (stand-ins)", total_s=stats["upcall_s"], count=stats["upcalls"])
        trace.mark(f"checks ({len(selected)})")
        result.student_output = handed_in.translate(joined_output([sandbox, trainer] if trainer else [sandbox]))
        _redact(result, submission, options.out_dir)
        result.figures = session.figures
        result.metrics = session.metrics
        if options.data:
            result.metrics["data_spec"] = options.data  # `grade batch` regrades when the data changes
        result.metric_info = metric_info(getattr(importlib.import_module(rubric.checks_module), "METRICS", None),
                                         result.metrics)
        trace.mark("results collected")
    shown = []
    if figures_dir is not None and handed_in.figures:
        shown = write_figures(handed_in.figures, figures_dir.parent / "student_figures", figures_dir.parent)
    result.submission = handed_in.summary(shown)
    result.execution_time = time.monotonic() - t0
    trace.mark("sandbox closed (children killed, run folder removed)")
    return result


def _trains_ahead(selected: list[CheckSpec], options: GradeOptions) -> bool:
    """Whether to train the student's model in a second child while the unit checks run in the first.

    Only with two cores for this grade (`options.train_ahead`, default: `threads` or torch's >= 2; a `grade
    batch -j 2` job has one and grades as before), and only when every model check comes after every
    other check: the checks then see the same results in the same order as one child would give them."""
    if options.train_ahead is False:
        return False
    if options.train_ahead is None:
        import torch

        if (options.threads or torch.get_num_threads()) < 2:
            return False
    trains = [spec.kind_info.trains for spec in selected]
    return any(trains) and not all(trains) and trains == sorted(trains)


def check_numbers(rubric: Rubric) -> dict[str, str]:
    """check id -> its number "component.position", counted over the whole rubric: the same check has the
    same number in `grade check` (public checks only), an --only run and the full report."""
    out, per_component = {}, {}
    for spec in rubric.checks:
        per_component[spec.component] = per_component.get(spec.component, 0) + 1
        out[spec.id] = f"{rubric.components.index(spec.component) + 1}.{per_component[spec.component]}"
    return out


def _redact(result: GradeResult, submission: Path, out_dir) -> None:
    """Take the grading machine's paths out of what the student sees (feedback, errors, captured output)."""
    roots = machine_paths(submission, Path(submission).parent, out_dir)
    for t in result.tests:
        t.output = redact_paths(t.output, roots)
        t.mistakes = [{k: redact_paths(v, roots) if isinstance(v, str) else v for k, v in m.items()}
                      if isinstance(m, dict) else m for m in t.mistakes]
    result.errors = [redact_paths(e, roots) for e in result.errors]
    result.student_output = redact_paths(result.student_output, roots)


def _run_check(spec: CheckSpec, number: str, rubric: Rubric, sandbox: Sandbox, device: str, diagnosed: dict,
               deadline: float, result: GradeResult, session: Session, context=None) -> TestResult:
    from grader.checks.runners import CheckRun, runner_for

    test = TestResult(name=spec.name, number=number,
                      score=0.0, max_score=spec.points, tags=spec.all_tags, check=spec.id, component=spec.component,
                      visibility="visible" if spec.public else "after_published", hint=spec.hint)
    t0 = time.monotonic()
    if sandbox.load_error is not None:
        e = sandbox.load_error
        test.output = f"Not run: {rubric.module} could not be imported.\n{e.message}" + (f"\n  at {e.where}" if e.where else "")
        test.error = "import"
        return test
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        test.output = f"Not run: the submission used up its time budget of {rubric.limits.submission_timeout_s:g} s."
        test.error = "budget"
        return test
    run = CheckRun(spec, rubric, sandbox, device, diagnosed, timeout=min(rubric.limits.call_timeout_s, remaining),
                   deadline=deadline, session=session, result=result, test=test)
    if context is not None:
        run.context = context
    outcome = runner_for(spec).run(run)
    test.score = round(spec.points * outcome.fraction, 4)
    test.lost_by_cause = {c: spec.points * f for c, f in outcome.lost_by_cause.items()}
    test.mistakes = [{"id": m.id, "message": m.message, "hint": m.hint} for m in outcome.mistakes]
    lines = [outcome.message]
    for m in outcome.mistakes:
        lines.append(f"Diagnosis: {m.message}." + (f" Hint: {m.hint}" if m.hint else ""))
        diagnosed.setdefault(spec.component, m)
    if test.score < test.max_score and spec.hint and not outcome.mistakes:
        lines.append(f"Hint: {spec.hint}")
    test.output = "\n".join(l for l in lines if l)
    test.duration = time.monotonic() - t0
    return test
