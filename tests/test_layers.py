"""Layering: data flows one way (submission -> sandboxed run -> plain arrays -> comparison -> results ->
report), and so do imports. A module may import its own layer and the layers below it, never above,
read from the source (imports inside functions included), so a lazy import cannot hide a cycle.

    0 core     pure data and helpers: rubric and check kinds, results, metrics, signatures, roles, data,
               model cache, trace, redact (no torch needed by most; nothing about grading runs)
    1 run      the sandbox (parent and child), reading submissions, the harnesses run in the child
    2 judge    the check framework and the assignments' checks, the reference implementations
    3 engine   grading one submission (grader.engine)
    4 apps     batch, reports, hand-entered grades, Gradescope, LMS, mutation testing, authoring (release bundles)
    5 front    the command line and the web app
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS = [
    ("core", ["grader", "grader.kinds", "grader.rubric", "grader.results", "grader.redact", "grader.trace",
              "grader.metrics", "grader.signatures", "grader.roles", "grader.data", "grader.figures",
              "grader.model_cache", "grader.history", "grader.glossary", "grader.resources", "grader.charging",
              "grader.fileio", "grader.figure_offload"]),
    ("run", ["grader.sandbox", "grader.submission", "grader.harnesses"]),
    ("judge", ["grader.checks", "reference"]),
    ("engine", ["grader.engine"]),
    ("apps", ["grader.batch", "grader.report", "grader.gradescope", "grader.lms", "grader.mutation", "grader.authoring",
              "grader.similarity", "grader.remote", "grader.manual_grades"]),
    ("front", ["grader.cli", "grader.commands", "grader.serve"]),
]

# Upward imports not yet removed (each names the work that removes it). The test fails when one is gone
# too, so that this list only shrinks.
KNOWN: set[tuple[str, str]] = set()


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            # the package itself ("grader") names only grader/__init__.py: a new module must be placed
            if (module == p or (p != "grader" and module.startswith(p + "."))) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it where it belongs")
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Absolute imports of grader/reference modules anywhere in `path` (relative imports stay in a package)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return {m for m in out if m.split(".")[0] in ("grader", "reference")}


def upward_imports() -> set[tuple[str, str]]:
    found = set()
    for path in sorted([*(REPO / "grader").rglob("*.py"), *(REPO / "reference").rglob("*.py")]):
        importer = module_name(path)
        for imported in imports(path):
            if layer_of(imported) > layer_of(importer):
                found.add((importer, imported))
    return found


def test_no_module_imports_a_layer_above_its_own():
    new = upward_imports() - KNOWN
    assert not new, "upward imports (see the layers in tests/test_layers.py): " + ", ".join(
        f"{a} imports {b} ({LAYERS[layer_of(a)][0]} -> {LAYERS[layer_of(b)][0]})" for a, b in sorted(new))


def test_known_exceptions_still_exist():
    gone = KNOWN - upward_imports()
    assert not gone, f"no longer imported: remove from KNOWN in tests/test_layers.py: {sorted(gone)}"


@pytest.mark.parametrize("low", ["grader.sandbox", "grader.rubric", "grader.kinds", "grader.submission"])
def test_low_layers_never_reach_checks_or_engine(low):
    """The examples the layering exists for: the sandbox and the rubric loader know no check and no engine."""
    for path in sorted((REPO / "grader").rglob("*.py")):
        name = module_name(path)
        if name == low or name.startswith(low + "."):
            bad = {m for m in imports(path) if m.startswith(("grader.checks", "grader.engine"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_layer_of_is_most_specific():
    assert layer_of("grader.checks.runners") == 2
    assert layer_of("grader.engine") == 3
    assert layer_of("grader.rubric") == 0
    with pytest.raises(AssertionError):
        layer_of("grader_other")
