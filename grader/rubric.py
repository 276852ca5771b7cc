"""Assignments as data: a rubric TOML file per assignment under `rubrics/`.

    [assignment]  id, title, course, module (file a submission must hold), reference (module),
                  checks (module with check_<name> functions), mistakes (module with MUTANTS), answers,
                  examples (folders under submissions/ that get full marks: the tests and benches use them),
                  probe ("module.function" that runs every component in process: mutation testing)
    [components]  tag = "dotted name in the reference" (what each component grades)
    [model]       model-level grading: data, training budget, scoring thresholds (grader/checks/model_level.py)
    [limits]      call_timeout_s, submission_timeout_s, memory_mb
    [[checks]]    id, name, component, check (function name), points, visibility (public|hidden),
                  kind (unit|interface|model|property, grader/kinds.py; default inferred),
                  rtol, atol, rtol64, atol64 (float64 cases), hint, tags (extra tags)
    [[mistakes]]  id, component (as tagged in checks), message, hint
    [[questions]] id ("Q1"), title, points, key (optional reference answer shown to graders in `grade serve`)
    [interface]   "dotted.name" = { required = [...], optional = [...] }: the template's parameters
                  (by the reference's names) a student's function must have / may lack
    [properties]  component = { differentiable = ["x", "params"], stochastic = true, pure = true, dtype = true,
                  batch = true, range = true } (or { none = "why" }): what every check-free property the
                  component has; each becomes a check `<component>.property.<property>` (grader/checks/properties.py).
                  Every graded component must declare its properties (`grade lint-rubric`).
    [property_points]  points per property check (default: PROPERTY_POINTS)

`load_rubric` validates everything it reads and raises `RubricError` naming the file, the entry
and what to fix. See docs/authoring.md.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grader.kinds import KINDS, Kind, infer_kind
from grader.resources import data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUBRICS_DIR = data_dir("rubrics")  # the checkout's rubrics/, or the installed package's
VISIBILITIES = ("public", "hidden")
# The properties a component can declare (grader/checks/properties.py runs them), their default points
# and what the check's name says.
PROPERTY_POINTS = {"differentiable": 0.25, "stochastic": 0.25, "pure": 0.25, "dtype": 0.1, "batch": 0.1, "range": 0.25}
PROPERTY_TITLES = {
    "differentiable": "correct gradients reach {wrt}",
    "stochastic": "fresh, independent draws on every call; the RNG is not reseeded",
    "pure": "inputs unchanged after the call; backward through the result works",
    "dtype": "float32 in, float32 out; float64 in, float64 out",
    "batch": "a batch of one, and non-square shapes",
    "range": "extreme but legal inputs give finite values",
}


class RubricError(ValueError):
    """A rubric file is malformed; the message says where and what to fix."""


@dataclass(frozen=True)
class CheckSpec:
    id: str
    name: str
    component: str
    check: str
    points: float
    visibility: str = "public"
    rtol: float = 1e-4
    atol: float = 1e-5
    hint: str = ""
    rtol64: float | None = None  # float64 cases (default: rtol)
    atol64: float | None = None  # float64 cases (default: atol)
    tags: tuple[str, ...] = ()
    kind: str = ""  # grader/kinds.py; "" (built in code): inferred from component and check

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", infer_kind(self.component, self.check))

    @property
    def public(self) -> bool:
        return self.visibility == "public"

    @property
    def kind_info(self) -> Kind:
        return KINDS[self.kind]

    @property
    def all_tags(self) -> list[str]:
        return [self.component, *[t for t in self.tags if t != self.component]]


@dataclass(frozen=True)
class Mistake:
    id: str
    component: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class Question:
    id: str
    title: str
    points: float
    key: str = ""  # reference answer / marking key shown to graders (`grade serve`), never to students


@dataclass(frozen=True)
class Limits:
    call_timeout_s: float = 20.0
    submission_timeout_s: float = 600.0
    memory_mb: int = 4096


@dataclass(frozen=True)
class Rubric:
    id: str
    title: str
    course: str
    module: str
    reference: str
    checks_module: str
    mistakes_module: str
    answers: str
    limits: Limits
    checks: tuple[CheckSpec, ...]
    mistakes: tuple[Mistake, ...]
    questions: tuple[Question, ...]
    component_targets: dict = field(default_factory=dict, compare=False)  # tag -> reference dotted name
    model: dict = field(default_factory=dict, compare=False)  # [model]: data, training budget, thresholds
    # [interface]: dotted name -> {"required": [...], "optional": [...]} parameter names of the
    # template's signatures; a missing required one is charged once, by the `interface` check.
    interface: dict = field(default_factory=dict, compare=False)
    # [properties]: component -> {property: declaration}; their checks are in `checks` (kind "property")
    properties: dict = field(default_factory=dict, compare=False)
    path: Path = field(default=Path("."), compare=False)
    examples: tuple[str, ...] = ()  # submissions/<name> folders that get full marks (the first: "the" example)
    probe: str = ""  # "module.function": runs every component of a module in process (grader/mutation/probes.py)

    def example_paths(self, root: Path | None = None) -> list[Path]:
        """The example submissions' folders (under `root`/submissions, default: this repository's)."""
        base = Path(root) if root is not None else RUBRICS_DIR.parent
        return [base / "submissions" / name for name in self.examples]

    def probe_function(self):
        """The probe named by [assignment] probe (ImportError/AttributeError when it does not exist)."""
        module, _, name = self.probe.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def components(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.checks:
            seen.setdefault(c.component, None)
        return list(seen)

    def components_where(self, predicate) -> list[str]:
        """Components (tags, in order) whose checks' kind satisfies `predicate(Kind)`, e.g.
        `rubric.components_where(lambda k: k.mutable)`: the ones a mistake can be planted in."""
        kinds = {c.component: c.kind_info for c in self.checks}
        return [t for t in self.components if predicate(kinds[t])]

    @property
    def code_targets(self) -> dict[str, str]:
        """[components] entries graded as code, i.e. of a `mutable` kind (not the model level, which grades
        trained models): what stands in for the other components, where a mutant can be planted."""
        return {tag: t for tag, t in self.component_targets.items()
                if (k := self.kind_of(tag)) is None or k.mutable}

    def kind_of(self, component: str) -> Kind | None:
        """The kind of `component`'s first check; None if unknown. A component's unit and property checks
        run alike (isolated, not training, mutable: tests/test_assignments.py holds that)."""
        return next((c.kind_info for c in self.checks if c.component == component), None)

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.checks)

    def select(self, only: list[str] | None = None, public_only: bool = False) -> list[CheckSpec]:
        """Checks whose tags (or id) match any of `only`; all when `only` is empty."""
        out = []
        for c in self.checks:
            if public_only and not c.public:
                continue
            if only and not any(t in c.all_tags or c.id == t or c.id.startswith(t + ".") for t in only):
                continue
            out.append(c)
        return out

    def check_function(self, spec: CheckSpec, shared=None):
        """The checks module's `check_<spec.check>`; else `shared` (the function a kind provides, e.g.
        the interface runner's `judge_signatures`); else, for a check of kind "property",
        grader/checks/properties.py's `check_<property>` ([properties]); else RubricError."""
        module = importlib.import_module(self.checks_module)
        fn = getattr(module, "check_" + spec.check, None) or shared
        if fn is None and spec.kind == "property":  # a [properties] declaration: one check for every component
            fn = getattr(importlib.import_module("grader.checks.properties"), "check_" + spec.check, None)
        if fn is None:
            raise RubricError(f"{self.path}: check {spec.id!r} names check_{spec.check}, which {self.checks_module} does not define")
        return fn


_KIND_WORDS = {float: "a number", str: "a string in quotes", int: "a whole number"}


def _req(table: dict, key: str, where: str, kind=str):
    if key not in table:
        raise RubricError(f"{where}: missing required key {key!r}")
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise RubricError(f"{where}: {key!r} must be {_KIND_WORDS.get(kind, 'a ' + kind.__name__)}, got {value!r}")
    return value


def load_rubric(path: Path) -> Rubric:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RubricError(f"rubric file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise RubricError(f"{path}: not valid TOML ({e}); fix the syntax at that line") from None
    a = data.get("assignment")
    if not isinstance(a, dict):
        raise RubricError(f"{path}: missing the [assignment] table")
    where = f"{path} [assignment]"
    for key in ("id", "module", "reference", "checks"):
        _req(a, key, where)
    lim = data.get("limits", {})
    try:
        limits = Limits(**{k: lim[k] for k in lim})
    except TypeError as e:
        raise RubricError(f"{path} [limits]: {e}; known keys: call_timeout_s, submission_timeout_s, memory_mb") from None
    checks, ids = [], set()
    for i, c in enumerate(data.get("checks", [])):
        w = f"{path} [[checks]] #{i + 1}" + (f" ({c.get('id')})" if isinstance(c, dict) and "id" in c else "")
        unknown = set(c) - {"id", "name", "component", "check", "points", "visibility", "kind", "rtol", "atol", "rtol64",
                            "atol64", "hint", "tags"}
        if unknown:
            raise RubricError(f"{w}: unknown key(s) {sorted(unknown)}")
        spec = CheckSpec(
            id=_req(c, "id", w), name=c.get("name", c.get("id", "")), component=_req(c, "component", w),
            check=_req(c, "check", w), points=_req(c, "points", w, float),
            visibility=c.get("visibility", "public"), rtol=float(c.get("rtol", 1e-4)), atol=float(c.get("atol", 1e-5)),
            hint=c.get("hint", ""), tags=tuple(c.get("tags", ())),
            rtol64=None if "rtol64" not in c else float(c["rtol64"]),
            atol64=None if "atol64" not in c else float(c["atol64"]), kind=str(c.get("kind", "")),
        )
        if spec.kind not in KINDS:
            raise RubricError(f"{w}: kind must be one of {', '.join(KINDS)}, got {spec.kind!r}")
        if spec.visibility not in VISIBILITIES:
            raise RubricError(f"{w}: visibility must be one of {VISIBILITIES}, got {spec.visibility!r}")
        if spec.points < 0:
            raise RubricError(f"{w}: points must be >= 0")
        if spec.id in ids:
            raise RubricError(f"{w}: duplicate check id {spec.id!r}")
        ids.add(spec.id)
        checks.append(spec)
    if not checks:
        raise RubricError(f"{path}: no [[checks]] defined")
    kinds: dict[str, str] = {}
    for spec in checks:  # a component is one kind of judgement (its checks run, and are skipped, together)
        if kinds.setdefault(spec.component, spec.kind) != spec.kind:
            raise RubricError(f"{path} [[checks]] {spec.id!r}: kind {spec.kind!r}, but other checks of component "
                              f"{spec.component!r} are {kinds[spec.component]!r}; give one component one kind")
    # (a declared property's check has kind "property" whatever its component's kind: it judges the same code)
    properties = _properties(data.get("properties", {}), data.get("property_points", {}), path)
    checks = _with_property_checks(checks, properties, data.get("property_points", {}), path,
                                   dict(data.get("components", {})))
    mistakes = []
    for i, m in enumerate(data.get("mistakes", [])):
        w = f"{path} [[mistakes]] #{i + 1}"
        mistakes.append(Mistake(id=_req(m, "id", w), component=_req(m, "component", w), message=_req(m, "message", w), hint=m.get("hint", "")))
    questions = []
    for i, q in enumerate(data.get("questions", [])):
        w = f"{path} [[questions]] #{i + 1}"
        questions.append(Question(id=_req(q, "id", w), title=_req(q, "title", w), points=_req(q, "points", w, float),
                                  key=str(q.get("key", ""))))
    return Rubric(
        id=_req(a, "id", where), title=a.get("title", a["id"]), course=a.get("course", ""),
        module=_req(a, "module", where), reference=_req(a, "reference", where), checks_module=_req(a, "checks", where),
        mistakes_module=a.get("mistakes", ""), answers=a.get("answers", "answers.md"), limits=limits,
        checks=tuple(checks), mistakes=tuple(mistakes), questions=tuple(questions),
        component_targets=dict(data.get("components", {})), model=dict(data.get("model", {})),
        interface=_interface(data.get("interface", {}), path), properties=properties, path=path,
        examples=_names(a, "examples", where), probe=a.get("probe", ""),
    )


def _properties(table: dict, points: dict, path) -> dict:
    """[properties]: component -> {property: True | [names]} (`none = "why"`: declares that it has none)."""
    for k, v in points.items():
        if k not in PROPERTY_POINTS or not isinstance(v, (int, float)) or v < 0:
            raise RubricError(f"{path} [property_points]: {k!r} = {v!r}; known properties: {', '.join(PROPERTY_POINTS)}, "
                              "each a number >= 0")
    out = {}
    for component, entry in table.items():
        w = f"{path} [properties] {component!r}"
        if not isinstance(entry, dict):
            raise RubricError(f"{w}: expected an inline table, e.g. {{ pure = true, dtype = true }}")
        unknown = set(entry) - set(PROPERTY_POINTS) - {"none"}
        if unknown:
            raise RubricError(f"{w}: unknown propert(ies) {sorted(unknown)}; known: {', '.join(PROPERTY_POINTS)}, none")
        if "none" in entry and (len(entry) > 1 or not isinstance(entry["none"], str) or not entry["none"].strip()):
            raise RubricError(f"{w}: `none` (no property applies) takes a reason and no other key")
        decl = {}
        for prop, v in entry.items():
            if prop == "none":
                continue
            if prop == "differentiable":
                if not (isinstance(v, list) and v and all(isinstance(n, str) and n.isidentifier() for n in v)):
                    raise RubricError(f"{w}: differentiable = [...] lists the inputs (template names) and/or "
                                      "\"params\" (the component's own parameters) that gradients must reach")
                decl[prop] = list(v)
            elif v is True:
                decl[prop] = True
            elif v is not False:
                raise RubricError(f"{w}: {prop} = true or false, got {v!r}")
        out[component] = decl
    return out


def _gradient_targets(decl: list) -> str:
    """["x", "mu", "params"] -> 'x, mu and every parameter' (the words of a differentiable check's name)."""
    words = [n for n in decl if n != "params"] + (["every parameter"] if "params" in decl else [])
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def _with_property_checks(checks: list, properties: dict, points: dict, path, targets: dict | None = None) -> list:
    """The [[checks]] with one hidden check per declared property, after its component's last check, each named
    after the component as the student's code names it (`targets`: the rubric's [components])."""
    known = {c.component for c in checks}
    for component in properties:
        if component not in known:
            raise RubricError(f"{path} [properties]: {component!r} is no component of any [[checks]] entry")
    out = []
    last = {c.component: i for i, c in enumerate(checks)}
    for i, c in enumerate(checks):
        out.append(c)
        if last[c.component] != i:
            continue
        for prop, decl in properties.get(c.component, {}).items():
            wrt = _gradient_targets(decl) if isinstance(decl, list) else ""
            title = str((targets or {}).get(c.component) or c.component)  # `MoGPrior.sample`, not `mog_prior.sample`
            out.append(CheckSpec(id=f"{c.component}.property.{prop}", component=c.component, check=prop, kind="property",
                                 name=f"{title}: {PROPERTY_TITLES[prop].format(wrt=wrt)}",
                                 points=float(points.get(prop, PROPERTY_POINTS[prop])), visibility="hidden",
                                 tags=("properties",)))
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise RubricError(f"{path}: check id(s) {dup} given twice (a [[checks]] entry and a declared property)")
    return out


def _names(table: dict, key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v and "/" not in v and v not in (".", "..")
                                              for v in value):
        raise RubricError(f"{where}: {key!r} must be a list of folder names under submissions/, got {value!r}")
    return tuple(value)


def _interface(table: dict, path) -> dict:
    out = {}
    for target, entry in table.items():
        w = f"{path} [interface] {target!r}"
        if not isinstance(entry, dict) or set(entry) - {"required", "optional"}:
            raise RubricError(f"{w}: expected {{ required = [...], optional = [...] }} (parameter names)")
        req, opt = list(entry.get("required", [])), list(entry.get("optional", []))
        if not all(isinstance(n, str) and n.isidentifier() for n in req + opt):
            raise RubricError(f"{w}: parameter names must be identifiers")
        out[target] = {"required": req, "optional": opt}
    return out


def available_rubrics(directory: Path = RUBRICS_DIR) -> dict[str, Rubric]:
    """Every rubric under `directory`, keyed by assignment id."""
    out = {}
    for p in sorted(Path(directory).glob("*.toml")):
        r = load_rubric(p)
        out[r.id] = r
    return out


def lint_rubric(rubric: Rubric) -> list[str]:
    """Problems that loading alone does not catch: every entry must point at something real."""
    problems = []
    try:
        ref = importlib.import_module(rubric.reference)
    except Exception as e:
        return [f"reference module {rubric.reference!r} cannot be imported: {e}"]
    for tag in rubric.components:
        target = rubric.component_targets.get(tag)
        if rubric.kind_of(tag).shared_check and target is None:
            continue  # e.g. grades the signatures of the [interface] table, not one reference function
        if target is None:
            problems.append(f"component {tag!r} has checks but no entry in [components] naming what it grades")
            continue
        obj = ref
        for part in target.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            problems.append(f"component {tag!r} names {target!r}, which {rubric.reference} does not define")
    for target, entry in rubric.interface.items():
        obj = ref
        for part in target.split("."):
            obj = getattr(obj, part, None)
        try:
            names = set(inspect.signature(obj).parameters) if obj is not None else None
        except (TypeError, ValueError):
            names = None
        if names is None:
            problems.append(f"[interface] names {target!r}, which {rubric.reference} does not define as a function or method")
            continue
        for p in entry["required"] + entry["optional"]:
            if p not in names:
                problems.append(f"[interface] {target!r}: {p!r} is not a parameter of the reference's {target}")
    if rubric.interface and not any(c.kind == "interface" for c in rubric.checks):
        problems.append("[interface] is set but no check of kind `interface` charges missing required parameters")
    for tag in rubric.component_targets:
        if tag not in rubric.components:
            problems.append(f"[components] lists {tag!r}, but no check is tagged with it")
        elif tag != "model" and tag not in rubric.properties:
            problems.append(f"component {tag!r} declares no properties: add it to [properties] (e.g. "
                            f'"{tag}" = {{ pure = true, dtype = true }}, or {{ none = "why" }})')
    if rubric.properties:
        try:
            examples = getattr(importlib.import_module(rubric.checks_module), "EXAMPLES", {})
        except Exception:
            examples = {}
        for tag, decl in rubric.properties.items():
            if decl and tag not in examples:
                problems.append(f"component {tag!r} declares properties but {rubric.checks_module}.EXAMPLES has no "
                                "builder of an example call for it")
    for spec in rubric.checks:
        try:
            if not (spec.kind_info.shared_check and spec.check == spec.kind):  # the kind's own function
                rubric.check_function(spec)
        except (RubricError, ImportError) as e:
            problems.append(str(e))
        if spec.points == 0:
            problems.append(f"check {spec.id!r} is worth 0 points")
    mutants = {}
    if rubric.mistakes_module:
        try:
            mutants = getattr(importlib.import_module(rubric.mistakes_module), "MUTANTS", {})
        except Exception as e:
            problems.append(f"mistakes module {rubric.mistakes_module!r} cannot be imported: {e}")
    for m in rubric.mistakes:
        if m.component not in rubric.components:
            problems.append(f"mistake {m.id!r} is tagged {m.component!r}, which no check grades (known: {', '.join(rubric.components)})")
        if mutants and m.id not in mutants:
            problems.append(f"mistake {m.id!r} has no mutant in {rubric.mistakes_module} (it can never be diagnosed)")
    for mid in set(mutants) - {m.id for m in rubric.mistakes}:
        problems.append(f"mutant {mid!r} in {rubric.mistakes_module} has no [[mistakes]] entry with its message")
    qids = [q.id for q in rubric.questions]
    for q in set(qids):
        if qids.count(q) > 1:
            problems.append(f"question {q!r} is declared twice")
    if not any(c.public for c in rubric.checks):
        problems.append("no check is public: `grade check` would have nothing to run")
    root = Path(rubric.path).resolve().parent.parent
    if not rubric.examples:
        problems.append("[assignment] examples names no correct example submission (tests/test_assignments.py "
                        "and the benches grade it)")
    for folder in rubric.example_paths(root):
        if not (folder / rubric.module).is_file() and not any(folder.glob("*.ipynb")):
            problems.append(f"example {folder.name!r}: {folder} holds no {rubric.module} (nor a notebook)")
    if rubric.probe:
        try:
            rubric.probe_function()
        except Exception as e:
            problems.append(f"probe {rubric.probe!r} cannot be imported: {type(e).__name__}: {e}")
    return problems
