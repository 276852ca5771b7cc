"""Model-level grading, once for every assignment: does the student's model *work* when trained on data?

An assignment's model half is a small subclass of `ModelLevel` (e.g. grader/checks/vae_model.py):

    Settings       a dataclass: the rubric's [model] keys and their defaults (unknown keys are refused)
    load_data      the data set named by the settings (embedded default; a local folder with --data)
    train_reference / load_reference
                   the reference trained in the grader with the course's loop, cached by content
                   (grader.model_cache: settings, data, device and the code it depends on)
    train_student  the student's model trained in the sandbox through a harness (grader/harnesses/): only
                   plain data comes back (a history and weights); the grader times the call itself
    training_call  that harness call as data (`TrainingCall`), so that `train_ahead` can start it before the
                   model checks run: in a second sandboxed child, while the unit checks run (engine.py)
    evaluate       the student's weights loaded into the reference's model and evaluated with reference code
    figures, record
                   what the report shows (figures, metrics)

`ModelLevel.run(ctx)` does them in order, once per submission (all the assignment's model checks share it),
with the rules every assignment follows: the reference is never cut by wall-clock time; a student's run
stopped by its time budget is compared with the reference trained for as many epochs, but only when the
grader saw the budget run out (grader/history.py: what the child says is a claim); the report says both.
The check functions then score metrics relative to the reference (`relative_score`).

Training ahead: the engine may call `train_ahead(ctx)` (the assignment's checks module re-exports it) with a
context whose sandbox is a second child of the same submission, before the first check runs. The training
call then runs in a thread (it only waits on that child's socket) while the unit checks use the other core;
`run_training` hands its reply to `train_student` when the model checks come, or makes the call itself when
nothing was started ahead. The call, its inputs, its time limit and what is done with its reply are the
same either way, and a failure is raised where it would have been (in the model check, after the unit
checks): only the wall-clock time of the whole grade changes.

An assignment that trains several models in one run (e.g. a CNN, a VAE and a latent-optimization model) keeps
one ModelLevel: each part that fails goes in `run.errors[part]` (the others are still graded), each loop's claim
in `run.claims[<its epochs setting>]` (one reference, trained at every matched loop's epochs). Models that are
fitted separately (density-models: PPCA, a GMM, a VAE) are one ModelLevel each, with distinct `name`s.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from grader import trace
from grader.checks import CheckContext, believed_epochs, reference_at_students_epochs, timed_call
from grader.history import TrainingClaim, epochs_done
from grader.metrics import Metric
from grader.sandbox.errors import StudentCodeError

MAX_CHECKPOINT_BYTES = 256 * 1024 * 1024  # a model for these data sets is a few MB


class ModelGradingError(Exception):
    """The student's model could not be trained or evaluated; the message says why."""


@dataclass
class Reference:
    """The reference trained with the course's loop: its metrics, training history and model (grader side)."""

    metrics: dict
    history: dict
    model: Any = None


@dataclass
class ModelRun:
    """One submission's model-level run, shared by the assignment's model checks (`ModelLevel.run`)."""

    settings: Any
    data: Any
    reference: Reference
    student_metrics: dict | None = None
    student_history: dict = field(default_factory=dict)
    error: str = ""  # why the student's model could not be trained or evaluated (the checks then fail)
    source: str = "trained"  # or "checkpoint"
    claim: TrainingClaim | None = None  # what the child said about its training, beside the grader's clock
    epoch_matched: int = 0  # >0: the reference was trained for this many epochs, as the student's run reached
    # assignments with several models (parts): a part that could not be graded does not stop the others
    errors: dict = field(default_factory=dict)  # part -> why it could not be trained or evaluated
    claims: dict = field(default_factory=dict)  # epochs setting of a loop (e.g. "vae_epochs") -> its TrainingClaim
    epochs_matched: dict = field(default_factory=dict)  # epochs setting -> epochs the reference was matched to
    student_error: StudentCodeError | None = None  # the student's code raised while building or training
    extra: dict = field(default_factory=dict)  # the assignment's own results (e.g. sample scores)

    @property
    def reference_metrics(self) -> dict:
        return self.reference.metrics

    @property
    def reference_history(self) -> dict:
        return self.reference.history


@dataclass
class TrainingCall:
    """The harness call that trains the student's model: `ctx.harness(function, timeout=timeout, **kwargs)`."""

    function: str  # grader/harnesses/<module>.<function>
    kwargs: dict  # plain data (numbers, strings, dicts, numpy arrays)
    timeout: float  # seconds for the whole call


def _same(a, b) -> bool:
    """Plain data equal, arrays by shape, dtype and values (`==` on arrays is element-wise)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


class InThread:
    """`work()` run in a daemon thread; `result()` waits for it and returns its value or raises its exception
    (`error`: a result that is that exception at once). For work that waits on a child (training ahead) or
    draws figures (matplotlib's object API) while the caller computes."""

    def __init__(self, work=None, name: str = "gradekit", error: BaseException | None = None):
        self._value, self._error, self._thread = None, error, None
        if work is not None:
            self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
            self._thread.start()

    def _run(self, work) -> None:
        try:
            self._value = work()
        except BaseException as e:  # raised again by result(), in the caller's thread
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def result(self):
        self.wait()
        if self._error is not None:
            raise self._error
        return self._value


class WorkerDrawing:
    """A figure plan the report worker draws (`start_drawing`), with InThread's `wait`/`result`: `result()` is
    `listed(paths)`; when the worker did not draw it (an error, a dead or hung worker), the plan is drawn here then,
    raising what drawing it raises, as a thread's `result()` would."""

    def __init__(self, worker, folder: Path, plan: list[dict], listed):
        self.worker, self.folder, self.plan, self.listed = worker, folder, plan, listed
        self._paths, self._waited = None, False

    def wait(self) -> None:
        if not self._waited:
            self._paths, self._waited = self.worker.drawn(), True
            if self._paths is None:
                trace.mark(f"figures: the report worker did not draw them ({self.worker.draw_error}); drawn here")

    def result(self):
        self.wait()
        if self._paths is not None:
            return self.listed(self._paths)
        from grader import figures  # (matplotlib: imported here only when drawing here)

        return self.listed(figures.draw_plan(self.folder, self.plan))


def start_drawing(folder: Path, plan: list[dict], listed) -> "InThread | WorkerDrawing":
    """Start drawing a `grader.figures.draw_plan` plan into `folder`; `result()` is `listed(the paths drawn)`.
    In `grade run`'s report worker when it is idle: another process, on the other core (matplotlib holds the GIL,
    so a thread would take turns with the evaluation that runs meanwhile); else in a thread. The same files either
    way (tests/test_cli.py)."""
    from grader.figure_offload import figure_worker

    worker = figure_worker()
    if worker is not None and worker.draw(folder, plan):
        trace.mark("figures: the report worker draws them")
        return WorkerDrawing(worker, folder, plan, listed)

    def draw():
        from grader import figures

        return listed(figures.draw_plan(folder, plan))

    return InThread(draw, name="gradekit-figures")


class TrainingAhead(InThread):
    """A `TrainingCall` made in a thread on another sandbox (`ModelLevel.train_ahead`); `result()` is its
    (reply, wall seconds measured around the call), or its StudentCodeError (timeout, crash, exception).

    The thread only sends the request and waits on the child's socket (the GIL is free meanwhile), so the
    grader's main thread goes on with the unit checks in its own sandbox."""

    KEY = "model level: training started ahead: "  # + the ModelLevel's name: its session.cache key

    def __init__(self, ctx: CheckContext, call: TrainingCall):
        self.call = call

        def train():
            try:
                return timed_call(ctx.harness, call.function, timeout=call.timeout, **call.kwargs)
            finally:
                trace.mark("training ahead: the child's reply arrived")

        super().__init__(train, name="gradekit-training-ahead")

    def matches(self, call: TrainingCall) -> bool:
        return call.function == self.call.function and _same(call.kwargs, self.call.kwargs)


class ModelLevel:
    """Base of an assignment's model half; see the module docstring for the hooks a subclass writes."""

    name: ClassVar[str] = "model"  # key of the shared run in the session's cache
    Settings: ClassVar[type]  # a dataclass of the [model] keys, with defaults
    epochs_field: ClassVar[str] = "max_epochs"  # the setting that says how many epochs a loop trains
    budget_field: ClassVar[str] = "time_budget_s"  # the setting that bounds the student's loop in wall time
    reference_fields: ClassVar[tuple[str, ...]] = ()  # settings the reference's training and metrics depend on
    code_files: ClassVar[tuple[str, ...]] = ()  # repo files whose content keys the cached reference
    student: ClassVar[str] = "your model"  # how the notes name the student's model

    # ---- settings and data ---------------------------------------------------------------------------
    def settings(self, rubric, session=None):
        """The rubric's [model] table over the Settings' defaults, then the session's overrides and --data.
        ValueError naming unknown keys (a rubric typo must not be silently ignored)."""
        known = {f.name for f in dataclasses.fields(self.Settings)}
        values = dict(rubric.model)
        if session is not None:
            values.update(session.model_overrides)
            if session.data:
                values["data"] = session.data
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{rubric.path} [model]: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        return self.Settings(**values)

    def preflight(self, rubric, session, selected) -> None:
        """Before the sandbox starts: when model checks are selected, bad settings or data fail early."""
        if any(spec.kind == "model" for spec in selected):
            self.load_data(self.settings(rubric, session))

    def load_data(self, s):
        raise NotImplementedError

    # ---- the reference, cached ----------------------------------------------------------------------
    def train_reference(self, ctx: CheckContext, s, data) -> tuple[dict, dict, Any]:
        """(state_dict arrays, meta {"metrics", "history"}, model) of the reference trained now."""
        raise NotImplementedError

    def load_reference(self, ctx: CheckContext, s, data, state: dict, meta: dict) -> Reference:
        raise NotImplementedError

    def reference(self, ctx: CheckContext, s, data) -> Reference:
        """The reference for settings `s`, from the cache or trained now (never cut by wall-clock time: how far
        it trains must not depend on the load of the machine that first filled the cache)."""
        from grader import model_cache

        parts = {"assignment": ctx.rubric.id, "data": data.summary(), "device": ctx.device.type,
                 "settings": {k: getattr(s, k) for k in self.reference_fields}}
        key = model_cache.cache_key(parts, self.code_files)
        hit = model_cache.load(key)
        if hit is None:
            state, meta, model = self.train_reference(ctx, s, data)
            model_cache.store(key, state, meta)
            ctx.session.metrics["reference_cache"] = "trained now"
            return Reference(meta["metrics"], meta["history"], model)
        ctx.session.metrics["reference_cache"] = "reused"
        return self.load_reference(ctx, s, data, hit["state_dict"], hit["meta"])

    # ---- the student's model -------------------------------------------------------------------------
    def train_student(self, ctx: CheckContext, s, data, run: ModelRun) -> dict:
        """Train the student's model in the sandbox (`ctx.harness`, timed with `timed_call`); set
        `run.student_history` and `run.claim`; return the trained weights (arrays). ModelGradingError when
        nothing can be evaluated."""
        raise NotImplementedError

    def training_call(self, ctx: CheckContext, s, data) -> TrainingCall | None:
        """The harness call `train_student` makes (None: this assignment does not train ahead)."""
        return None

    def run_training(self, ctx: CheckContext, call: TrainingCall) -> tuple:
        """(reply, wall seconds) of `call`: the one `train_ahead` started when it is the same call, else made now.
        Raises what `ctx.harness` raises (StudentCodeError)."""
        ahead = ctx.session.cache.pop(TrainingAhead.KEY + self.name, None)
        if ahead is not None and ahead.matches(call):
            return ahead.result()
        return timed_call(ctx.harness, call.function, timeout=call.timeout, **call.kwargs)

    def train_ahead(self, ctx: CheckContext) -> bool:
        """Start the student's training now, in `ctx.sandbox` (a second child: engine.py), for `run_training` to
        collect; False when there is nothing to start (a checkpoint is graded instead, no `training_call`)."""
        s = self.settings(ctx.rubric, ctx.session)
        data = self.load_data(s)
        try:
            if self.submitted_weights(ctx, s) is not None:
                return False
        except ModelGradingError:  # an unreadable checkpoint: said by the model checks, in turn
            return False
        call = self.training_call(ctx, s, data)
        if call is None:
            return False
        ctx.session.cache[TrainingAhead.KEY + self.name] = TrainingAhead(ctx, call)
        return True

    def submitted_weights(self, ctx: CheckContext, s) -> dict | None:
        """Weights the student handed in instead of training (None: train). Default: never."""
        return None

    def evaluate(self, ctx: CheckContext, s, data, run: ModelRun, weights: dict) -> None:
        """Set `run.student_metrics` (and `run.extra`) from the student's weights, with reference code."""
        raise NotImplementedError

    def figures(self, ctx: CheckContext, run: ModelRun) -> None:
        """Write figures to `ctx.session.figures_dir` (None: none) and list them in `ctx.session.figures`.
        An exception here is recorded in the metrics ("figures_error"), never charged to the student."""

    def record(self, ctx: CheckContext, run: ModelRun) -> None:
        """Put what the report shows in `ctx.session.metrics` (described by the assignment's METRICS)."""

    # ---- the run -------------------------------------------------------------------------------------
    def run(self, ctx: CheckContext) -> ModelRun:
        """The shared run; re-raises the student's error (StudentCodeError) in every model check it failed."""
        if self.name in ctx.session.cache:
            run = ctx.session.cache[self.name]
            if run.student_error is not None:  # the student's code failed: every model check says so, not just the first
                raise run.student_error
            return run
        s = self.settings(ctx.rubric, ctx.session)
        data = self.load_data(s)
        run = ModelRun(settings=s, data=data, reference=self.reference(ctx, s, data))
        trace.mark("model level: reference ready")
        ctx.session.cache[self.name] = run
        try:
            weights = self.submitted_weights(ctx, s)
            if weights is not None:
                run.source = "checkpoint"
            else:
                weights = self.train_student(ctx, s, data, run)
            trace.mark("model level: the student's model trained")
            self._match_epochs(ctx, s, data, run)
            self.evaluate(ctx, s, data, run, weights)
            trace.mark("model level: evaluated")
            self._figures(ctx, run)
            trace.mark("model level: figures drawn")
        except ModelGradingError as e:
            run.error = str(e)
        except StudentCodeError as e:
            run.student_error = e
            self.record(ctx, run)
            raise
        self.record(ctx, run)
        return run

    def _figures(self, ctx: CheckContext, run: ModelRun) -> None:
        try:
            self.figures(ctx, run)
        except StudentCodeError:
            raise
        except Exception as e:  # a figure must never cost marks
            ctx.session.metrics["figures_error"] = f"{type(e).__name__}: {e}"

    def reference_epochs(self, run: ModelRun, epochs_field: str) -> int:
        """Epochs the reference's loop counted by setting `epochs_field` trained (its history's)."""
        return epochs_done(run.reference.history)

    def _match_epochs(self, ctx: CheckContext, s, data, run: ModelRun) -> None:
        """When the time budget stopped a student's loop before the reference's epochs (and the grader saw it),
        compare with the reference trained for as many epochs: load and speed are not mistakes. One claim
        (`run.claim`, counted by `epochs_field`) or one per loop (`run.claims`); one matched reference for all."""
        claims = {**({self.epochs_field: run.claim} if run.claim else {}), **run.claims}
        matched = {}
        for epochs_field, claim in claims.items():
            done = believed_epochs(ctx, claim, self.reference_epochs(run, epochs_field))
            if done:
                matched[epochs_field] = done
        if matched:
            at_students = dataclasses.replace(s, **matched)
            run.reference = reference_at_students_epochs(ctx, lambda: self.reference(ctx, at_students, data))
            run.epochs_matched = matched
            run.epoch_matched = matched.get(self.epochs_field, 0)

    def claim(self, s, history: dict, seconds: float, what: str = "") -> TrainingClaim:
        """The child's account of its training (`history`) beside the grader's own clock (`seconds`); `what` names
        the loop in the notes (default: the student's model's training)."""
        return TrainingClaim(what or f"{self.student}'s training", epochs_done(history),
                             str(history.get("stopped_because")), seconds, float(getattr(s, self.budget_field)))


# ---- submitted checkpoints (a rubric may allow one instead of training) ---------------------------------

# What to do about a checkpoint that cannot be used, said with every such error.
CHECKPOINT_FIX = ("Save it with torch.save(model.state_dict(), 'model.pt') (or safetensors), or leave it out and the "
                  "grader trains your model itself.")


def _bounded_checkpoint(path: Path) -> None:
    """Refuse a checkpoint whose loading could allocate more than MAX_CHECKPOINT_BYTES in the
    grader: too large a file, or a torch zip archive with compressed (or lying) entries, or the
    legacy non-zip format (its tensor sizes are declared, not stored). Raises ModelGradingError."""
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ModelGradingError(f"the checkpoint {path.name} could not be loaded safely: it is {size / 2**20:.0f} MiB, "
                                f"over the {MAX_CHECKPOINT_BYTES >> 20} MiB limit. {CHECKPOINT_FIX}")
    if path.suffix != ".pt":
        return  # safetensors checks its header's offsets against the file's length before reading
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ModelGradingError(f"the checkpoint {path.name} could not be loaded safely: it is not a torch.save() "
                                f"zip archive (the legacy format is refused). {CHECKPOINT_FIX}") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > size:
        raise ModelGradingError(f"the checkpoint {path.name} could not be loaded safely: it holds compressed "
                                f"entries (torch.save() never writes those, and their unpacked size is unbounded). "
                                f"{CHECKPOINT_FIX}")


def _stored_sizes(name: str, state: dict) -> None:
    """Refuse tensors larger than what the file stores: torch.save keeps a tensor's strides, so a 1.6 kB file
    can hold a zero-stride view of 250 M numbers (1 GB once converted to float32 in the grader), and many
    tensors may view one storage. Each tensor must fit in its own storage, and all of them, as float32, in
    twice MAX_CHECKPOINT_BYTES (a float16 file doubles)."""
    total = 0
    for k, v in state.items():
        stored = v.untyped_storage().nbytes() // max(v.element_size(), 1) if v.layout == torch.strided else -1
        if v.numel() > stored:
            raise ModelGradingError(f"the checkpoint {name} could not be loaded safely: the tensor {str(k)[:80]!r} "
                                    f"has {v.numel():,} numbers but stores only {max(stored, 0):,} (an expanded, "
                                    f"overlapping or sparse view). {CHECKPOINT_FIX}")
        total += v.numel() * 4
    if total > 2 * MAX_CHECKPOINT_BYTES:
        raise ModelGradingError(f"the checkpoint {name} could not be loaded safely: its tensors hold {total / 2**20:,.0f} "
                                f"MiB as float32, over {2 * MAX_CHECKPOINT_BYTES >> 20} MiB (tensors sharing one "
                                f"storage?). {CHECKPOINT_FIX}")


def checkpoint_weights(folder: Path) -> dict | None:
    """The weights of `model.safetensors` or `model.pt` in `folder` (the sandbox's copy of the submission:
    regular files only), as numpy arrays; None when there is neither. Never unpickles code."""
    st = folder / "model.safetensors"
    pt = folder / "model.pt"
    try:
        if st.is_file():
            _bounded_checkpoint(st)
            from safetensors.numpy import load_file

            return dict(load_file(str(st)))
        if pt.is_file():
            _bounded_checkpoint(pt)
            obj = torch.load(pt, map_location="cpu", weights_only=True)  # never unpickles code
            if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
                obj = obj["state_dict"]
            if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
                raise ModelGradingError(f"{pt.name} must hold a state_dict (a dict of tensors), found "
                                        f"{type(obj).__name__}. {CHECKPOINT_FIX}")
            _stored_sizes(pt.name, obj)
            return {k: v.detach().float().cpu().numpy() for k, v in obj.items()}
    except ModelGradingError:
        raise
    except Exception as e:
        name = st.name if st.is_file() else pt.name
        raise ModelGradingError(f"the checkpoint {name} could not be loaded safely ({type(e).__name__}: {e}); "
                                f"pickled objects other than tensors are refused. {CHECKPOINT_FIX}") from None
    return None


__all__ = ["MAX_CHECKPOINT_BYTES", "Metric", "ModelGradingError", "ModelLevel", "ModelRun", "Reference",
           "InThread", "TrainingAhead", "TrainingCall", "checkpoint_weights"]
