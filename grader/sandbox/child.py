"""What runs inside the sandboxed child: load the submission and answer requests.

Imports only torch, numpy and the other `grader.sandbox` modules (never `reference`, the rubric
or the checks). Student code runs here and can tamper with anything in this process; that is
why results leave as plain arrays and all judging happens in the grader.

Requests (see `client.Sandbox`):
  {"op": "load"}                                   import the submission's module
  {"op": "new", "name": N, "value": V}            build an object (e.g. a student class) and keep it as N
  {"op": "call", "target": T, "args": [...], "kwargs": {...}, "seed": s, "grad": {...}}
  {"op": "params", "name": N}                      the named object's parameters as arrays
  {"op": "layers", "name": N}                      the named object's layers (modules holding parameters)
  {"op": "assign", "name": N, "state": {...}}      copy arrays into the named object's tensors where they fit
  {"op": "harness", "function": F, "kwargs": {...}} run grader.harnesses.F(module, device, **kwargs)
Values V are arrays (-> tensors), numbers, strings, or {"__net__": spec}, {"__new__": {...}}, {"__ref__": N}.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import os
import socket
import sys
import time
import traceback

import numpy as np
import torch

from grader.sandbox import isolation, nets, protocol
from grader.sandbox.standins import StandIns, layers
from grader.sandbox.values import NET, NEW, REF, TUPLE, export
from grader.sandbox.values import to_numpy as _to_numpy

MAX_TEXT = 4000


class RequestError(Exception):
    """The request cannot be served because of how the student's code is shaped (not a crash)."""


class Child:
    def __init__(self, config: dict):
        self.config = config
        self.device = torch.device(config.get("device", "cpu"))
        self.module = None
        self.objects: dict[str, object] = {}
        self.scratch = config["scratch"]
        self.sock = None  # set by `serve`: stand-ins ask the grader through it (grader/sandbox/standins.py)
        self.handles: dict[int, tuple[str, object]] = {}  # id(obj) -> (handle, obj) of objects the grader built
        self.unassigned: list[list[str]] = []  # [name, why] of state entries of a `partial_state` object that did not fit
        self.constructor_error: str | None = None  # a constructor that failed while its layers stand in (op_new)

    # ---- values -------------------------------------------------------------------------
    def materialize(self, v):
        if isinstance(v, np.ndarray):
            return torch.from_numpy(v.copy()).to(self.device)
        if isinstance(v, list):
            return [self.materialize(x) for x in v]
        if isinstance(v, dict):
            if NET in v:
                return nets.build(v[NET], self.device, _dtype(v.get("dtype", "float32")))
            if REF in v:
                return self.objects[v[REF]]
            if NEW in v:
                return self.construct(v[NEW])
            if TUPLE in v:
                return tuple(self.materialize(x) for x in v[TUPLE])
            return {k: self.materialize(x) for k, x in v.items()}
        return v

    def construct(self, spec: dict):
        cls = self.resolve(spec["class"])
        args, kwargs = self.materialize(spec.get("args", [])), self.materialize(spec.get("kwargs", {}))
        try:
            obj = cls(*args, **kwargs)
        except Exception as e:
            if not spec.get("layers") or not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
                raise
            obj = self._rebuild(cls, args, kwargs, spec["layers"], e)
        if isinstance(obj, torch.nn.Module):
            obj = obj.to(self.device)
            if spec.get("dtype"):  # a dtype check: the object's own tensors in float64 (before the state goes in)
                obj = obj.to(_dtype(str(spec["dtype"])))
        for name, value in (spec.get("state") or {}).items():
            try:
                self.assign(obj, spec["class"], name, value)
            except RequestError as e:
                # a constructor that built other layers: where those layers stand in (grader/sandbox/
                # standins.py) the object can still be checked; the grader is told what did not fit
                if not spec.get("partial_state"):
                    raise
                self.unassigned.append([name[:MAX_TEXT], str(e)[:MAX_TEXT]])
        if spec.get("handle"):
            self.register(obj, str(spec["handle"]))
        return obj

    def _rebuild(self, cls, args, kwargs, specified: dict, error: Exception):
        """A module whose constructor fails, for checking its *methods* while its constructor stands
        in: what the student's `__init__` built before failing, plus the specified layers it did not
        build (`specified`: {path: [torch.nn class name, kwargs]}, plain data from the grader). The
        failure is reported (`constructor_error`); the constructor's own check charges it."""
        obj = cls.__new__(cls)
        torch.nn.Module.__init__(obj)
        try:
            cls.__init__(obj, *args, **kwargs)
        except Exception:
            pass  # keep what it built before failing
        for path, (kind, layer_kwargs) in specified.items():
            parent, _, leaf = str(path).rpartition(".")
            owner = obj.get_submodule(parent) if parent else obj
            if kind in nets.LAYER_KINDS and not isinstance(getattr(owner, leaf, None), torch.nn.Module):
                setattr(owner, leaf, getattr(torch.nn, kind)(**layer_kwargs))
        self.constructor_error = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
        return obj

    def register(self, obj, handle: str) -> None:
        """Remember that the grader knows `obj` as `handle` (and its submodules as handle/path)."""
        self.handles[id(obj)] = (handle, obj)
        if isinstance(obj, torch.nn.Module):
            for path, sub in obj.named_modules():
                if path and id(sub) not in self.handles:
                    self.handles[id(sub)] = (f"{handle}/{path}", sub)

    def handle_of(self, obj) -> str | None:
        entry = self.handles.get(id(obj))
        return entry[0] if entry is not None and entry[1] is obj else None

    def assign(self, obj, cls_name: str, name: str, value: np.ndarray) -> None:
        target = obj
        *path, leaf = name.split(".")
        for part in path:
            target = getattr(target, part, None)
        current = getattr(target, leaf, None)
        if not isinstance(current, torch.Tensor):
            raise RequestError(f"{cls_name} has no tensor attribute `{name}` (the assignment asks for one)")
        if tuple(current.shape) != tuple(value.shape):
            raise RequestError(
                f"{cls_name}.{name} has shape {tuple(current.shape)}, but the assignment specifies {tuple(value.shape)}"
            )
        with torch.no_grad():
            current.copy_(torch.from_numpy(value.copy()).to(current.device, current.dtype))

    def resolve(self, dotted: str):
        if self.module is None:
            raise RequestError("the submission's module is not loaded")
        obj = self.module
        for part in dotted.split("."):
            if not hasattr(obj, part):
                where = "the module" if obj is self.module else dotted.rsplit(".", 1)[0]
                raise RequestError(f"`{dotted}` is missing: {where} defines no `{part}`")
            obj = getattr(obj, part)
        return obj

    # ---- ops ----------------------------------------------------------------------------
    def op_load(self, req):
        path = os.path.join(self.scratch, self.config.get("module_file", "vae.py"))
        if not os.path.exists(path):
            raise RequestError(f"the submission has no `{os.path.basename(path)}`")
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        self.module = module
        return {"names": sorted(n for n in vars(module) if not n.startswith("_"))}

    def op_new(self, req):
        if req.get("seed") is not None:  # the student's random initialisation: the same at every grading
            _manual_seed(int(req["seed"]), self.device)
        self.unassigned, self.constructor_error = [], None
        self.objects[req["name"]] = self.materialize(req["value"])
        return {"unassigned": list(self.unassigned), "constructor_error": self.constructor_error}

    def op_assign(self, req):
        """Copy `state` ({dotted name: array}) into the named object where it fits (the grader's
        weights for layers it found by role under other names); returns what did not fit."""
        obj, unassigned = self.objects[req["name"]], []
        for name, value in (req.get("state") or {}).items():
            try:
                self.assign(obj, type(obj).__name__, name, value)
            except RequestError as e:
                unassigned.append([name, str(e)])
        return {"unassigned": unassigned}

    def op_params(self, req):
        obj = self.objects[req["name"]]
        return {k: _to_numpy(v) for k, v in obj.state_dict().items()}

    def op_layers(self, req):
        """The object's layers: (path, class name, {parameter: shape}) of every submodule holding
        parameters itself, in definition order (what `__init__` built; grader.checks.standins.map_layers)."""
        obj = self.objects[req["name"]]
        if not isinstance(obj, torch.nn.Module):
            return {"layers": []}
        return {"layers": [[path, type(m).__name__, {k: list(p.shape) for k, p in m.named_parameters(recurse=False)}]
                           for path, m in layers(obj)]}

    def op_call(self, req):
        target = req["target"]
        if isinstance(target, dict):
            fn = self.materialize(target["object"])
            for part in str(target["method"]).split("."):  # "encoder.0": a submodule, called as a layer
                fn = getattr(fn, part, None)
            if fn is None:
                raise RequestError(f"`{target.get('label', target['method'])}` is missing")
        else:
            fn = self.resolve(target)
        args = self.materialize(req.get("args", []))
        kwargs = self.materialize(req.get("kwargs", {}))
        grad = req.get("grad") or {}
        wrt = []
        for path in grad.get("inputs", []):
            kind, key = path.split(".", 1)
            t = args[int(key)] if kind == "args" else kwargs[key]
            t.requires_grad_(True)
            wrt.append((path, t))
        if req.get("seed") is not None:
            _manual_seed(int(req["seed"]), self.device)
        with StandIns(self, req.get("stand_ins") or []):
            return self._call(fn, args, kwargs, wrt, grad, req)

    def _call(self, fn, args, kwargs, wrt, grad, req):
        if req.get("no_grad"):
            with torch.no_grad():
                out = fn(*args, **kwargs)
        else:
            out = fn(*args, **kwargs)
        reply = {"result": export(out)}
        if req.get("inputs_after"):  # the property check `pure`: were the caller's tensors changed in place?
            reply["inputs_after"] = {f"args.{i}": export(a) for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
            reply["inputs_after"].update({f"kwargs.{k}": export(a) for k, a in kwargs.items() if isinstance(a, torch.Tensor)})
        params = []
        if grad.get("params"):
            params = [(n, p) for n, p in self.objects[grad["params"]].named_parameters()]
        # a tuple of tensors (e.g. (mu, log_var)) with grad["outputs"] == "sum": the gradient of the sum of all
        total = None
        if not (wrt or params):
            pass
        elif isinstance(out, torch.Tensor) and out.requires_grad:
            cot = grad.get("cotangent")
            cot = torch.ones_like(out) if cot is None else torch.from_numpy(cot.copy()).to(out.device, out.dtype)
            if tuple(cot.shape) == tuple(out.shape):
                total = (out * cot).sum()
        elif isinstance(out, (tuple, list)) and grad.get("outputs") == "sum":
            parts = [o.sum() for o in out if isinstance(o, torch.Tensor) and o.requires_grad]
            total = sum(parts) if parts else None
        if total is not None:
            tensors = [t for _, t in wrt] + [p for _, p in params]
            grads = torch.autograd.grad(total, tensors, allow_unused=True)
            names = [p for p, _ in wrt] + ["param:" + n for n, _ in params]
            reply["grads"] = {n: (None if g is None else _to_numpy(g)) for n, g in zip(names, grads)}
        return reply

    def op_harness(self, req):
        """Run a grader-side harness (a training loop, an evaluation) on the student's module.

        Harnesses live in `grader.harnesses` (no solution code: they are what students are given)
        and return plain data: dicts/lists of numbers, strings and numpy arrays."""
        name = str(req.get("function", ""))
        mod_name, _, fn_name = name.rpartition(".")
        if not mod_name or not fn_name.isidentifier() or not all(p.isidentifier() for p in mod_name.split(".")):
            raise RequestError(f"bad harness name {name!r}")
        import importlib

        fn = getattr(importlib.import_module("grader.harnesses." + mod_name), fn_name)
        kwargs = {k: (torch.from_numpy(v.copy()).to(self.device) if isinstance(v, np.ndarray) else v)
                  for k, v in (req.get("kwargs") or {}).items()}
        return {"result": fn(self.module, self.device, **kwargs)}

    def handle(self, req):
        op = getattr(self, "op_" + str(req.get("op")), None)
        if op is None:
            raise RequestError(f"unknown op {req.get('op')!r}")
        return op(req)


def _manual_seed(seed: int, device: torch.device) -> None:
    """`torch.manual_seed(seed)`, fast on CPU. While CUDA is not initialised, torch.manual_seed also
    queues the seeding of every CUDA device with a formatted stack trace (1.4 ms a call; a
    submission's unit checks seed ~80 times); on CPU only the default generator matters."""
    if device.type == "cpu" and not torch.cuda.is_initialized():
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[name]


def describe_exception(e: BaseException, scratch: str) -> dict:
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if f.filename.startswith(scratch)]
    where = ""
    if own:
        f = own[-1]
        where = f"{os.path.basename(f.filename)}, line {f.lineno}, in {f.name}"
    tb = "".join(traceback.format_list(own)) if own else ""
    msg = f"{type(e).__name__}: {e}"
    if isinstance(e, SyntaxError):
        where = f"{os.path.basename(e.filename or '')}, line {e.lineno}"
    return {"type": type(e).__name__[:200], "message": msg[:MAX_TEXT], "where": where[:MAX_TEXT], "traceback": tb[-MAX_TEXT:],
            "constructor": failed_constructor(e, scratch)}


def failed_constructor(e: BaseException, scratch: str) -> str:
    """"Class.__init__" of the innermost constructor of the student's own code on the traceback (the
    qualified name, e.g. "MoGPrior.__init__"), or "" when the exception did not pass through one. The
    grader uses it to charge a constructor's mistake on its class's component only (engine._judge)."""
    found, tb = "", e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith(scratch) and code.co_name == "__init__":
            found = getattr(code, "co_qualname", "")
        tb = tb.tb_next
    return found[:200] if found.count(".") == 1 else ""


def serve(sock: socket.socket, config: dict) -> None:
    child = Child(config)
    child.sock = sock
    protocol.send(sock, {"ok": True, "ready": True, "pid": os.getpid()})
    while True:
        try:
            req = protocol.recv(sock)
        except (EOFError, OSError):
            return
        t0 = time.perf_counter()
        try:
            reply = {"ok": True, **child.handle(req)}
        except RequestError as e:
            reply = {"ok": False, "error": {"type": "RequestError", "message": str(e)[:MAX_TEXT], "where": "", "traceback": ""}}
        except BaseException as e:  # SystemExit, KeyboardInterrupt and MemoryError included
            reply = {"ok": False, "error": describe_exception(e, child.scratch)}
            if isinstance(e, MemoryError):
                reply["error"]["message"] = (f"MemoryError: the code tried to use more than the sandbox's memory "
                                             f"limit of {config.get('memory_mb')} MiB")
        reply["seconds"] = time.perf_counter() - t0
        try:
            protocol.send(sock, reply)
        except TypeError as e:  # something unsendable slipped into the reply
            protocol.send(sock, {"ok": False, "error": {"type": "ReplyError", "message": str(e)[:MAX_TEXT], "where": "", "traceback": ""}})
        except OSError:
            return


def run(fds: "int | list[int]", config: dict) -> None:
    """Entry point in the forked child (called by the zygote). Never returns.

    `fds`: the stream socket to the grader, then (optional) the output log opened by the grader
    and the write end of a pipe on which the namespace's parent reports the child's wait status.
    Neither file has a path the child can see: nothing it does there is read back by path."""
    status = 0
    fds = [fds] if isinstance(fds, int) else list(fds)
    sock_fd, log_fd, status_fd = (fds + [None, None])[:3]
    marks: list = []  # (phase, wall-clock end) for bench/bench_startup.py, sent with the protections
    mark = (lambda name: marks.append((name, time.time()))) if config.get("trace") else (lambda name: None)
    try:
        mark("forked")
        os.setsid()  # own process group: the grader kills the whole group
        sock = socket.socket(fileno=sock_fd)
        protections = {"process_group": True}
        if config.get("namespaces", True):
            sockets = isolation.host_socket_paths()  # /proc/net/unix of the namespace about to be left
            protections.update(isolation.enter_namespaces())
        else:
            protections.update(network_isolated=False, filesystem_masking=False, pid_namespace=False)
        mark("namespaces entered")
        if protections.get("filesystem_masking"):
            protections.update(isolation.lock_down_filesystem(config["scratch"], config["tmp_root"], config.get("needed", []),
                                                             sockets=sockets, hide=config.get("hide", [])))
            mark("file system locked down (tmpfs, overlay, masks, allow-list root, read-only remounts)")
        if protections.get("pid_namespace"):
            # The first process forked in the new PID namespace is its init: when it dies, the
            # kernel kills every process left in the namespace (orphans, daemons, double forks).
            r, w = os.pipe()
            pid = os.fork()
            if pid:
                os.close(r)
                protocol.send(sock, {"ok": True, "init_pid": pid})
                os.close(w)
                sock.close()
                if log_fd is not None:
                    os.close(log_fd)
                _, st = os.waitpid(pid, 0)
                _write_status(status_fd, st)
                os._exit(0)
            os.close(w)
            os.read(r, 1)  # wait until the parent announced our pid
            os.close(r)
            protections["fresh_proc"] = isolation.mount_proc()
            mark("init forked, /proc mounted")
        if status_fd is not None:
            os.close(status_fd)  # only the namespace's parent may report a status
        threads = max(1, int(config.get("threads", 1)))
        full = protections.get("filesystem_masking") and protections.get("pid_namespace")
        protections.update(isolation.drop_privileges(max(isolation.MAX_TASKS, 4 * threads + 16), switch_user=bool(full)))
        mark("privileges dropped (user namespace, capabilities, seccomp)")
        protections.update(isolation.apply_limits(int(config.get("memory_mb", 4096))))
        _scrub_environment(config.get("tmp_root") or "/tmp")
        _enter_scratch(config, log_fd)
        torch.set_num_threads(threads)
        mark("limits, environment, scratch")
        protocol.send(sock, {"ok": True, "protections": protections, "trace": marks})
        serve(sock, config)
    except BaseException:
        status = 70
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        os._exit(status)


KEPT_ENV = ("PATH", "LANG", "LANGUAGE", "LC_", "TZ", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
            "OMP_", "MKL_", "OPENBLAS_", "CUDA_", "NVIDIA_", "TORCH_", "CUBLAS_")


def _scrub_environment(tmp: str) -> None:
    """The grader's environment minus anything not needed to run torch (tokens, keys, paths)."""
    for key in list(os.environ):
        if not key.startswith(KEPT_ENV):
            del os.environ[key]
    os.environ.update(HOME=tmp, TMPDIR=tmp)


def _write_status(fd: int | None, status: int) -> None:
    """Report the served process's wait status to the grader (it reads why the child died)."""
    if fd is None:
        return
    try:
        os.write(fd, str(status).encode())
    except OSError:
        pass


class _CappedOutput:
    """The student's `print`s and `sys.stdout.write`s: the first OUTPUT_CAP bytes (stdout and stderr
    together) reach the output log, the rest is dropped without an error. Printing never fails the
    student's code: writing on until the file-size limit would raise OSError (EFBIG) inside their call."""

    written = 0  # shared by stdout and stderr: one log
    notice = b"\n[gradekit: the output went on past this point and was not kept]\n"

    def __init__(self, fd: int):
        self.fd = fd
        self.encoding, self.errors = "utf-8", "replace"

    def write(self, text) -> int:
        data = text.encode(self.encoding, self.errors) if isinstance(text, str) else bytes(text)
        room = OUTPUT_CAP - _CappedOutput.written
        chunk = data[:max(room, 0)]
        if chunk or (room >= 0 and len(data) > len(chunk)):
            try:
                os.write(self.fd, chunk if len(chunk) == len(data) else chunk + _CappedOutput.notice)
            except OSError:
                pass
            _CappedOutput.written += len(chunk) + (0 if len(chunk) == len(data) else len(_CappedOutput.notice) + 1)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def buffer(self):  # code that writes bytes to sys.stdout.buffer
        return self


OUTPUT_CAP = 8 << 20  # bytes of the student's output written to the log (the report shows less)


def _enter_scratch(config: dict, log: int | None) -> None:
    scratch = config["scratch"]
    os.chdir(scratch)
    if log is None:
        log = os.open(os.devnull, os.O_WRONLY)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout, sys.stderr = _CappedOutput(1), _CappedOutput(2)
    faulthandler.enable(file=sys.stderr)  # a segfault leaves "Fatal Python error: ..." in the log
    # The submission imports from its own folder and installed packages only, never from the repo.
    repo = config.get("repo_root")
    sys.path[:] = [scratch] + [p for p in sys.path if p and os.path.realpath(p) != repo]
    # An editable install maps `grader` and `reference` to the repo through import hooks: drop them.
    editable = lambda f: "__editable__" in (getattr(f, "__module__", "") or "") + repr(f)
    sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
    sys.path_importer_cache.clear()
    for name in list(sys.modules):
        if name == "reference" or name.startswith("reference."):
            del sys.modules[name]
