"""`grade release ASSIGNMENT`: what students receive.

    release/<id>/
      <module>.py          starter code: the reference with every `# BEGIN SOLUTION` … `# END SOLUTION`
                           block replaced by `raise NotImplementedError("TODO: …")` (in a function) or
                           `pass` (elsewhere); signatures, docstrings, imports and classes are kept
      answers.md           the written questions, one `## Q<n>` heading each
      README.md            what to do, how to run the self-check
      selfcheck.py         `python selfcheck.py [path/to/<module>.py]`: the public checks, offline
      _selfcheck/          the self-check's code and data:
        grader/…           the grading engine (engine, rubric, checks framework, request handler,
                           networks, wire format); the student's code runs in-process here
        <module>_public_checks.py   the public `check_*` functions and what they use (hidden checks
                           and their helpers removed by AST)
        rubric.json        public checks only: id, name, component, points, tolerances, hint
        recordings.json/.npz   the reference's answers to the public checks' questions
                           (see grader/authoring/replay.py), no reference code

How the recordings are made: each public check runs, with the grader's own engine and sandbox, on
the reference (copied as a submission) and on the example submissions under `submissions/`, with
`ctx.ref` recording (no mistakes module: no diagnosis offline). The bundle replays them. A check
whose question to the reference was not recorded (it depends on the student's output) reports
"cannot be checked offline", never a pass. The release is verified before it is returned: the
bundle is run on the reference copy in a fresh process and must pass every public check, and no
solution line may appear in any bundled file.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grader.rubric import Rubric

REPO_ROOT = Path(__file__).resolve().parents[2]
GRADER = REPO_ROOT / "grader"

BEGIN = re.compile(r"^(\s*)#+\s*BEGIN SOLUTION\b.*$")
END = re.compile(r"^(\s*)#+\s*END SOLUTION\b.*$")

# Engine files copied into the bundle as they are (none holds solution code).
SHIPPED = ["__init__.py", "charging.py", "engine.py", "fileio.py", "glossary.py", "history.py", "kinds.py", "resources.py", "metrics.py", "redact.py", "results.py", "rubric.py", "roles.py", "trace.py",
           "checks/__init__.py", "checks/inputs.py", "checks/interface.py", "checks/runners.py", "checks/standins.py", "signatures.py",
           "sandbox/__init__.py", "sandbox/standins.py",
           "sandbox/child.py", "sandbox/errors.py", "sandbox/nets.py", "sandbox/protocol.py", "sandbox/values.py",
           "submission/__init__.py", "submission/notebook.py", "submission/answers.py", "submission/images.py"]
SHIPPED_MODULES = {"grader", "grader.charging", "grader.engine", "grader.fileio", "grader.glossary", "grader.history", "grader.kinds", "grader.resources", "grader.metrics", "grader.redact", "grader.results", "grader.rubric", "grader.trace",
                   "grader.roles", "grader.checks", "grader.checks.inputs", "grader.checks.interface", "grader.checks.runners", "grader.signatures",
                   "grader.sandbox",
                   "grader.sandbox.child", "grader.sandbox.errors", "grader.sandbox.nets", "grader.sandbox.protocol", "grader.sandbox.values",
                   "grader.sandbox.client", "grader.checks.standins", "grader.sandbox.standins",
                   "grader.submission", "grader.submission.notebook",
                   "grader.submission.answers", "grader.submission.images",
                   "grader.authoring", "grader.authoring.replay"}
ISOLATION_STUB = '"""Not used by the self-check (the student\'s code runs in-process on their own machine)."""\n'
MIN_LEAK_LINE = 8  # solution lines at least this long (stripped) must appear in no bundled file


class ReleaseError(Exception):
    """The assignment cannot be released as it is; the message says what to fix."""


@dataclass
class Release:
    out: Path
    starter: Path
    selfcheck: Path
    public_checks: list[str]
    recorded_with: list[str]
    records: int
    files: list[Path] = field(default_factory=list)
    not_offline: dict[str, str] = field(default_factory=dict)  # public check id -> why it is not in the self-check
    student_dependent: list[str] = field(default_factory=list)  # checks whose questions depend on the student's output


# ---- starter code -------------------------------------------------------------------------------

def solution_blocks(source: str, where: str = "the reference") -> list[tuple[int, int, str]]:
    """(begin line, end line, indentation) of each marked block, 1-based, markers included."""
    blocks, start = [], None
    for i, line in enumerate(source.splitlines(), 1):
        if BEGIN.match(line):
            if start is not None:
                raise ReleaseError(f"{where}, line {i}: `# BEGIN SOLUTION` inside the block opened at line {start[0]}")
            start = (i, BEGIN.match(line).group(1))
        elif END.match(line):
            if start is None:
                raise ReleaseError(f"{where}, line {i}: `# END SOLUTION` without a `# BEGIN SOLUTION` before it")
            blocks.append((start[0], i, start[1]))
            start = None
    if start is not None:
        raise ReleaseError(f"{where}, line {start[0]}: `# BEGIN SOLUTION` is never closed by `# END SOLUTION`")
    return blocks


def solution_lines(source: str) -> list[str]:
    lines = source.splitlines()
    out = []
    for b, e, _ in solution_blocks(source):
        out += [l.strip() for l in lines[b:e - 1] if l.strip() and not l.strip().startswith("#")]
    return out


def _functions(tree: ast.AST) -> list[tuple[int, int, str]]:
    """(first line, last line, qualified name) of every function, outermost first."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((child.lineno, child.end_lineno, prefix + child.name))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)
    visit(tree, "")
    return out


def make_starter(source: str, where: str = "the reference") -> str:
    """The reference with each solution block replaced by a TODO at the block's indentation."""
    blocks = solution_blocks(source, where)
    if not blocks:
        raise ReleaseError(f"{where} has no `# BEGIN SOLUTION` / `# END SOLUTION` blocks, so there is nothing to "
                           "strip: mark the solution lines inside each function body (docs/authoring.md, "
                           "'Releasing an assignment')")
    try:
        functions = _functions(ast.parse(source))
    except SyntaxError as e:
        raise ReleaseError(f"{where} is not valid Python: {e}") from None
    lines = source.splitlines()
    out, pos = [], 0
    for b, e, indent in blocks:
        out += lines[pos:b - 1]
        inside = [name for first, last, name in functions if first < b <= last]
        if inside:
            out.append(f'{indent}raise NotImplementedError("TODO: implement {inside[-1]}")')
        else:
            out.append(f"{indent}pass  # TODO")
        pos = e
    out += lines[pos:]
    text = "\n".join(out) + "\n"
    try:
        ast.parse(text)
    except SyntaxError as e:
        raise ReleaseError(f"the starter code made from {where} is not valid Python (line {e.lineno}: {e.msg}); "
                           "a solution block must hold whole statements") from None
    return text


def check_starter_imports(path: Path) -> None:
    name = f"_gradekit_starter_{os.getpid()}_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        raise ReleaseError(f"the starter code {path} does not import: {type(e).__name__}: {e} (a solution block "
                           "outside a function must not define what the rest of the module needs)") from None
    finally:
        sys.modules.pop(name, None)


# ---- public checks ------------------------------------------------------------------------------

def _bound(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    names = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def _used(stmt: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _is_docstring(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def public_checks_source(rubric: Rubric, functions: set[str] | None = None) -> str:
    """The checks module reduced to the public `check_*` functions (or `functions`) and what they use.

    Raises ReleaseError when what they use cannot be shipped (reference code, grader modules the
    bundle does not hold, hidden checks)."""
    spec = importlib.util.find_spec(rubric.checks_module)
    if spec is None or not spec.origin:
        raise ReleaseError(f"checks module {rubric.checks_module} not found")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    all_public = {"check_" + c.check for c in rubric.checks if c.public}
    public = all_public if functions is None else set(functions)
    hidden = {"check_" + c.check for c in rubric.checks if not c.public} - all_public
    stmts = [s for s in tree.body if not _is_docstring(s)]
    future = [s for s in stmts if isinstance(s, ast.ImportFrom) and s.module == "__future__"]
    stmts = [s for s in stmts if s not in future]
    defs: dict[str, list[int]] = {}
    for i, s in enumerate(stmts):
        for n in _bound(s):
            defs.setdefault(n, []).append(i)
    missing = sorted(public - defs.keys())
    if missing:
        raise ReleaseError(f"{rubric.checks_module} defines no {', '.join(missing)} (named by public checks)")
    needed, keep, todo = set(), set(), list(public)
    while todo:
        n = todo.pop()
        if n in needed:
            continue
        needed.add(n)
        for i in defs.get(n, []):
            if i not in keep:
                keep.add(i)
                if not isinstance(stmts[i], (ast.Import, ast.ImportFrom)):
                    todo += _used(stmts[i])
    body = []
    for i in sorted(keep):
        s = stmts[i]
        if isinstance(s, (ast.Import, ast.ImportFrom)):
            s.names = [a for a in s.names if (a.asname or a.name).split(".")[0] in needed]
        for node in ast.walk(s):  # function-level imports too
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                _check_import(node, rubric)
        leaked = _bound(s) & hidden
        if leaked:
            raise ReleaseError(f"public checks of {rubric.id} use the hidden check(s) {', '.join(sorted(leaked))}; "
                               "move the shared code into a helper function")
        body.append(s)
    module = ast.Module(body=future + body, type_ignores=[])
    header = (f'"""Public checks of the `{rubric.id}` assignment, as shipped in its self-check bundle.\n\n'
              'Generated by `grade release` from the course\'s checks: hidden checks and the code only they use\n'
              'are removed. `ctx.ref` answers from recordings of the reference (see grader/authoring/replay.py).\n"""\n')
    return header + ast.unparse(module) + "\n"


def _check_import(stmt, rubric: Rubric) -> None:
    if isinstance(stmt, ast.ImportFrom):
        if stmt.level:
            raise ReleaseError(f"public checks of {rubric.id} use a relative import (from {'.' * stmt.level}"
                               f"{stmt.module or ''} import ...); use absolute imports")
        modules = [stmt.module]
        for a in stmt.names:
            full = f"{stmt.module}.{a.name}"
            if full.startswith("grader.") and full not in SHIPPED_MODULES and _is_module(full):
                modules.append(full)
    else:
        modules = [a.name for a in stmt.names]
    for m in modules:
        forbidden = {rubric.reference, rubric.mistakes_module} - {""}
        if m.split(".")[0] == "reference" or m in forbidden:
            raise ReleaseError(f"public checks of {rubric.id} import {m}: the bundle cannot ship reference code; "
                               "reach the reference through ctx.ref")
        if m.split(".")[0] == "grader" and m not in SHIPPED_MODULES:
            raise ReleaseError(f"public checks of {rubric.id} use {m}, which the self-check bundle does not ship "
                               f"(it ships {', '.join(sorted(SHIPPED_MODULES))}); make those checks hidden or "
                               "move what they need into the checks module")


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def release_rubric_json(rubric: Rubric, checks_module: str, not_offline: dict | None = None) -> dict:
    not_offline = not_offline or {}
    return {
        "format": 1,
        "assignment": {"id": rubric.id, "title": rubric.title, "course": rubric.course, "module": rubric.module,
                       "answers": rubric.answers, "checks": checks_module},
        "limits": dataclasses.asdict(rubric.limits),
        "checks": [{"id": c.id, "name": c.name, "component": c.component, "check": c.check, "kind": c.kind, "points": c.points,
                    "visibility": "public", "rtol": c.rtol, "atol": c.atol, "rtol64": c.rtol64, "atol64": c.atol64, "hint": c.hint, "tags": list(c.tags),
                    "offline": c.id not in not_offline}
                   for c in rubric.checks if c.public],
    }


# ---- recording --------------------------------------------------------------------------------

def _import_from_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def record(rubric: Rubric, checks_file: Path, subjects: list[Path]) -> tuple[dict, dict, dict, dict]:
    """Run the public checks on each subject with a recording ctx.ref.

    Returns (records {check id: {key: answer}}, arrays {name: array}, results {subject: GradeResult},
    asked {subject: {check id: set of keys asked}})."""
    from grader import engine
    from grader.authoring.replay import Recorder, merge
    from grader.checks import CheckContext

    mod_name = f"_gradekit_release_{re.sub(r'[^A-Za-z0-9_]', '_', rubric.id)}_public_checks"
    _import_from_file(mod_name, checks_file)
    public = tuple(c for c in rubric.checks if c.public)
    rec_rubric = dataclasses.replace(rubric, checks=public, mistakes=(), mistakes_module="", checks_module=mod_name)
    runs: list[tuple[str, Recorder]] = []

    class RecordingContext(CheckContext):
        def __init__(self, spec, *args, **kwargs):
            super().__init__(spec, *args, **kwargs)
            recorder = Recorder(self.ref)
            runs.append((spec.id, recorder))
            self.ref = recorder.ref()

    records: dict[str, dict] = {c.id: {} for c in public}
    arrays: dict[str, np.ndarray] = {}
    results, asked = {}, {}
    try:
        for subject in subjects:
            runs.clear()
            options = engine.GradeOptions(public_only=True, device="cpu", write_figures=False,
                                          secret="")  # the published inputs: the bundle replays them
            results[str(subject)] = engine.grade_submission(subject, rec_rubric, options, context=RecordingContext)
            asked[str(subject)] = {}
            for check_id, recorder in runs:
                merge(records[check_id], recorder.export())
                arrays.update(recorder.arrays)
                asked[str(subject)].setdefault(check_id, set()).update(recorder.records)
    finally:
        sys.modules.pop(mod_name, None)
    return records, arrays, results, asked


def student_dependent(results: dict, asked: dict, reference: str) -> list[str]:
    """Public checks that asked the reference other questions for a passing example than for the
    reference itself: their questions depend on the submission's output, so for students whose output
    differs they will read "not checked offline"."""
    out = []
    for subject, result in results.items():
        if subject == reference:
            continue
        for t in result.tests:
            if t.status == "passed" and asked[subject].get(t.check, set()) - asked[reference].get(t.check, set()):
                if t.check not in out:
                    out.append(t.check)
    return out


# ---- the bundle -------------------------------------------------------------------------------

def _module_name(rubric: Rubric) -> str:
    return Path(rubric.module).stem


def reference_file(rubric: Rubric) -> Path:
    spec = importlib.util.find_spec(rubric.reference)
    if spec is None or not spec.origin:
        raise ReleaseError(f"reference module {rubric.reference} not found")
    return Path(spec.origin)


def example_submissions(rubric: Rubric, root: Path = REPO_ROOT / "submissions") -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / rubric.module).is_file())


def build_release(rubric: Rubric, out: Path, record_with: list[Path] | None = None, verify: bool = True,
                  force: bool = False) -> Release:
    """Write the student release of `rubric` to `out` (see the module docstring).

    A public check that cannot be replayed offline (it needs code the bundle cannot ship, or it does
    not pass on the reference while recorded) is left out of the self-check and listed in
    `Release.not_offline` with the reason; the bundle reports it as checked by the course's grader."""
    out = Path(out).resolve()
    ref_path = reference_file(rubric)
    ref_source = ref_path.read_text(encoding="utf-8")
    starter = make_starter(ref_source, str(ref_path.relative_to(REPO_ROOT) if ref_path.is_relative_to(REPO_ROOT) else ref_path))
    public = [c for c in rubric.checks if c.public]
    if not public:
        raise ReleaseError(f"{rubric.id} has no public check: the self-check would have nothing to run")
    not_offline: dict[str, str] = {}
    for c in public:
        try:
            public_checks_source(rubric, {"check_" + c.check})
        except ReleaseError as e:
            not_offline[c.id] = str(e)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ReleaseError(f"{out} exists and is not empty: remove it, pick another --out, or pass --force")
        if not (out / "selfcheck.py").is_file():
            raise ReleaseError(f"{out} is not a release folder (no selfcheck.py): refusing to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    mod = _module_name(rubric)
    bundle = out / "_selfcheck"
    checks_module = f"{mod}_public_checks"
    checks_file = bundle / f"{checks_module}.py"

    def write_checks() -> list:
        offline = [c for c in public if c.id not in not_offline]
        if not offline:
            raise ReleaseError(f"no public check of {rubric.id} can run offline:\n  "
                               + "\n  ".join(f"{k}: {v}" for k, v in not_offline.items()))
        checks_file.write_text(public_checks_source(rubric, {"check_" + c.check for c in offline}), encoding="utf-8")
        return offline

    try:
        (out / rubric.module).write_text(starter, encoding="utf-8")
        check_starter_imports(out / rubric.module)
        bundle.mkdir()
        offline = write_checks()
        for rel in SHIPPED:
            dst = bundle / "grader" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(_for_bundle(rel, (GRADER / rel).read_text(encoding="utf-8")), encoding="utf-8")
        here = Path(__file__).resolve().parent
        shutil.copyfile(here / "bundle_client.py", bundle / "grader" / "sandbox" / "client.py")
        (bundle / "grader" / "sandbox" / "isolation.py").write_text(ISOLATION_STUB)
        (bundle / "grader" / "authoring").mkdir()
        (bundle / "grader" / "authoring" / "__init__.py").write_text('"""Replay of recorded reference answers."""\n')
        shutil.copyfile(here / "replay.py", bundle / "grader" / "authoring" / "replay.py")
        shutil.copyfile(here / "selfcheck_runtime.py", bundle / "selfcheck_runtime.py")

        with tempfile.TemporaryDirectory(prefix="gradekit-release-") as tmp:
            refcopy = Path(tmp) / "reference-solution"
            refcopy.mkdir()
            shutil.copyfile(ref_path, refcopy / rubric.module)
            subjects = [refcopy] + list(example_submissions(rubric) if record_with is None else record_with)
            offline_rubric = dataclasses.replace(rubric, checks=tuple(offline))
            records, arrays, results, asked = record(offline_rubric, checks_file, subjects)
            dependent = student_dependent(results, asked, str(refcopy))
            ref_result = results[str(refcopy)]
            if ref_result.errors and any(not e.startswith("internal error") for e in ref_result.errors):
                raise ReleaseError("the reference itself could not be graded as a submission:\n  "
                                   + "\n  ".join(ref_result.errors))
            for t in ref_result.tests:
                if t.status != "passed":
                    first = next((l for l in t.output.splitlines() if l.startswith(("- ", "Internal"))), t.output)
                    not_offline[t.check] = f"does not pass on the reference while recorded ({first.strip()[:300]})"
            if any(c.id in not_offline for c in offline):
                offline = write_checks()
                records = {k: v for k, v in records.items() if k not in not_offline}

            def write_data() -> None:
                kept = {k: v for k, v in records.items() if k not in not_offline}
                used = {name for v in kept.values() for name in _array_names(v)}
                (bundle / "rubric.json").write_text(json.dumps(release_rubric_json(rubric, checks_module, not_offline),
                                                               indent=1), encoding="utf-8")
                (bundle / "recordings.json").write_text(json.dumps(kept), encoding="utf-8")
                np.savez_compressed(bundle / "recordings.npz", **{k: a for k, a in arrays.items() if k in used})
                (out / "README.md").write_text(_readme(rubric, not_offline), encoding="utf-8")

            write_data()
            (out / "selfcheck.py").write_text(_SELFCHECK_PY.format(id=rubric.id, module=rubric.module), encoding="utf-8")
            (out / "answers.md").write_text(_answers_template(rubric), encoding="utf-8")
            check_no_leaks(rubric, out, ref_source)
            if verify:
                # A check the bundle cannot replay even on the reference (its answers varied between the
                # recorded runs, e.g. an unseeded random initialisation) is left to the course's grader.
                report = run_selfcheck(out, refcopy / rubric.module)
                for t in report["checks"]:
                    if t["status"] == "not checked offline" and t["id"] not in not_offline:
                        varied = any(v.get("ambiguous") for v in records.get(t["id"], {}).values())
                        not_offline[t["id"]] = ("cannot be replayed on the reference" + (
                            " (the reference's answers varied between the recorded runs: seed what is random "
                            "in the check, e.g. torch.manual_seed before building a reference model)" if varied else
                            f": {t['output'][:300]}"))
                if any(c.id in not_offline for c in offline):
                    offline = write_checks()
                    write_data()
                verify_release(out, refcopy, rubric, not_offline)
                check_no_leaks(rubric, out, ref_source)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return Release(out=out, starter=out / rubric.module, selfcheck=out / "selfcheck.py",
                   public_checks=[c.id for c in public], recorded_with=[s.name for s in subjects],
                   records=sum(len(v) for k, v in records.items() if k not in not_offline), files=files,
                   not_offline=dict(not_offline), student_dependent=[c for c in dependent if c not in not_offline])


def _for_bundle(rel: str, text: str) -> str:
    """Engine files as shipped: the self-check reads no TOML, so tomli is optional on Python 3.10."""
    if rel == "rubric.py":
        text = text.replace("    import tomli as tomllib\n",
                            "    try:\n        import tomli as tomllib\n    except ImportError:  # the self-check reads no TOML\n"
                            "        tomllib = None\n", 1)
    return text


def _array_names(enc):
    """Names of the arrays an encoded answer refers to."""
    if isinstance(enc, dict):
        for k, v in enc.items():
            if k in ("tensor", "array") and isinstance(v, str):
                yield v
            elif k == "jacobians" and isinstance(v, list):
                yield from (x for x in v if isinstance(x, str))
            elif k in ("param_jacobians", "param_values") and isinstance(v, dict):
                yield from v.values()
            else:
                yield from _array_names(v)
    elif isinstance(enc, list):
        for x in enc:
            yield from _array_names(x)


def check_no_leaks(rubric: Rubric, out: Path, ref_source: str) -> None:
    """No solution line, reference/mistakes module or hidden check function in any bundled file."""
    public_lines = {l.strip() for l in make_starter(ref_source).splitlines()}  # what students get anyway
    secret = {l for l in solution_lines(ref_source) if len(l) >= MIN_LEAK_LINE} - public_lines
    hidden = {"check_" + c.check for c in rubric.checks if not c.public} - {"check_" + c.check for c in rubric.checks if c.public}
    texts = [(f"the name of hidden check {c.id}", c.name) for c in rubric.checks if not c.public and len(c.name) >= 12]
    texts += [(f"the message of mistake {m.id}", m.message) for m in rubric.mistakes if len(m.message) >= 12]
    problems = []
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        if p.suffix not in (".py", ".md", ".json", ".txt", ".toml"):
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        lines = {l.strip() for l in text.splitlines()}
        for l in sorted(secret & lines):
            problems.append(f"{p.relative_to(out)} holds the solution line {l!r}")
        for what, t in texts:
            if t in text:
                problems.append(f"{p.relative_to(out)} holds {what}")
        for name in hidden:
            if re.search(rf"\b{re.escape(name)}\b", text):
                problems.append(f"{p.relative_to(out)} names the hidden check function {name}")
        if p.suffix == ".py" and p.name != rubric.module:
            for m in {rubric.reference, rubric.mistakes_module} - {""}:
                if re.search(rf"^\s*(from|import)\s+{re.escape(m)}\b", text, re.M):
                    problems.append(f"{p.relative_to(out)} imports {m}")
    if problems:
        raise ReleaseError("the release would leak what students must not see:\n  " + "\n  ".join(problems))


def run_selfcheck(release_dir: Path, target: Path, timeout: float = 300) -> dict:
    """Run a release's self-check in a fresh process; its --json report."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    script, target = Path(release_dir).resolve() / "selfcheck.py", Path(target).resolve()
    proc = subprocess.run([sys.executable, str(script), str(target), "--json"],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tempfile.gettempdir())
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ReleaseError(f"the self-check did not run (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}") from None
    report["returncode"] = proc.returncode
    return report


def verify_release(out: Path, refcopy: Path, rubric: Rubric, not_offline: dict) -> None:
    report = run_selfcheck(out, refcopy / rubric.module)
    want = {c.id: ("not checked offline" if c.id in not_offline else "passed") for c in rubric.checks if c.public}
    bad = [f"{t['id']}: {t['status']}: {t['output']}" for t in report["checks"] if t["status"] != want.get(t["id"])]
    if report.get("outside_modules"):
        bad.append(f"the self-check loaded modules from outside the bundle: {report['outside_modules']}")
    if [t["id"] for t in report["checks"]] != list(want):
        bad.append(f"the self-check ran {[t['id'] for t in report['checks']]}, expected {list(want)}")
    if bad or report.get("bundle_root") != str((out / "_selfcheck").resolve()):
        raise ReleaseError("the self-check bundle does not pass the reference itself:\n  " + "\n  ".join(bad)
                           + f"\n(bundle root: {report.get('bundle_root')})")


_SELFCHECK_PY = '''\
"""Self-check for the `{id}` assignment: runs the public checks on your {module}, offline.

    python selfcheck.py                 # checks ./{module}
    python selfcheck.py path/to/{module}
    python selfcheck.py --only TAG      # some components only

Needs Python >= 3.10 with torch and numpy. Hidden checks, the model-level checks and the written
answers are graded by the course's grader after the deadline.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_selfcheck"))

from selfcheck_runtime import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
'''


def _answers_template(rubric: Rubric) -> str:
    lines = [f"# {rubric.title}: written answers", "",
             "Write each answer under its heading (Markdown; math between $…$ or $$…$$).", ""]
    for q in rubric.questions:
        title = " ".join(q.title.split())  # the heading's text after `Q<n>` is not part of the answer
        lines += [f"## {q.id}. {title} ({q.points:g} point{'s' if q.points != 1 else ''})", "", "", ""]
    return "\n".join(lines)


def _readme(rubric: Rubric, not_offline: dict | None = None) -> str:
    not_offline = not_offline or {}
    public = [c for c in rubric.checks if c.public]
    course = f" ({rubric.course})" if rubric.course else ""
    lines = [
        f"# {rubric.title}{course}", "",
        f"Implement every `TODO` in `{rubric.module}` (each one raises `NotImplementedError` until you do) and answer",
        f"the written questions in `{rubric.answers}`. Keep the names, signatures and return types: the grader calls",
        f"them. Hand in `{rubric.module}` and `{rubric.answers}`.", "",
        "## Self-check", "",
        f"    python selfcheck.py {rubric.module}", "",
        "runs the public checks below on your file, offline (Python >= 3.10 with torch and numpy). The expected",
        "values were computed by the course on fixed inputs; your code runs on your machine, in this process. A",
        "check reported as \"not checked offline\" needed an answer that depends on your own output: the course's",
        "grader checks it. Passing the self-check does not guarantee full marks: hidden checks and the written",
        "answers are graded after the deadline.", "",
        "| component | public check | points |", "|---|---|---|",
        *[f"| {c.component} | {c.name}{' (course grader only)' if c.id in not_offline else ''} | {c.points:g} |"
          for c in public], "",
        "## Written questions", "",
        *([f"- **{q.id}** ({q.points:g} pt) {q.title}" for q in rubric.questions] or ["(none)"]), "",
    ]
    return "\n".join(lines)
