"""`grade new NAME`: scaffold an assignment that lints and grades its own example at full marks.

    reference/<mod>.py                 one example component, solution lines marked for `grade release`
    reference/<mod>_mistakes.py        one mutant (a classic mistake) of it
    rubrics/<NAME>.toml                a public and a hidden check, the mistake's message, a question
    grader/checks/<mod>.py             the two checks (ctx.call / ctx.expect_close / ctx.diagnose)
    submissions/<NAME>-example/        a correct submission written unlike the reference
    tests/test_grading_<mod>.py        lint, full marks for the example, each mutant costs points

NAME is the assignment id (lower case, digits, '-' or '_'); <mod> is NAME with '-' replaced by '_',
the file students hand in (<mod>.py). Nothing is overwritten: if any target exists, nothing is written.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
RESERVED = {"grader", "reference", "rubrics", "submissions", "tests", "conftest", "answers", "selfcheck",
            "selfcheck_runtime", "release", "setup", "main", "test"}


class ScaffoldError(Exception):
    """The assignment cannot be scaffolded; the message says why."""


@dataclass
class Scaffold:
    name: str
    module: str
    files: list[Path]


def module_name(name: str) -> str:
    return name.replace("-", "_")


def validate_name(name: str) -> str:
    """The module name for assignment `name`, or ScaffoldError saying what is wrong with it."""
    if not isinstance(name, str) or not NAME_RE.match(name) or not 2 <= len(name) <= 40:
        raise ScaffoldError(f"bad assignment name {name!r}: use 2-40 characters, lower-case letters and digits, "
                            "words separated by '-' or '_', starting with a letter (e.g. flows-1d)")
    mod = module_name(name)
    if keyword.iskeyword(mod) or mod in RESERVED or mod in sys.stdlib_module_names or mod in sys.builtin_module_names:
        raise ScaffoldError(f"{name!r} would make the students' module {mod}.py, a name Python or gradekit already uses; "
                            "choose another name")
    if mod.startswith("test") or mod.endswith("_mistakes"):
        raise ScaffoldError(f"{name!r}: module names starting with 'test' or ending in '_mistakes' are reserved")
    try:
        taken = importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        taken = True
    if taken:
        raise ScaffoldError(f"{name!r} would make the students' module {mod}.py, which shadows the installed module "
                            f"{mod!r}; choose another name")
    return mod


def check_unused(name: str, mod: str, root: Path) -> None:
    """No rubric under root/rubrics already has this id or module."""
    rubrics = Path(root) / "rubrics"
    for p in sorted(rubrics.glob("*.toml")) if rubrics.is_dir() else []:
        text = p.read_text(encoding="utf-8", errors="replace")
        if re.search(rf'^\s*id\s*=\s*"{re.escape(name)}"\s*$', text, re.M) or re.search(
                rf'^\s*module\s*=\s*"{re.escape(mod)}\.py"\s*$', text, re.M):
            raise ScaffoldError(f"{p} already defines assignment {name!r} or module {mod}.py")


def plan(name: str, root: Path = REPO_ROOT) -> dict[Path, str]:
    """Target path -> template name."""
    mod = module_name(name)
    root = Path(root)
    example = root / "submissions" / f"{name}-example"
    return {
        root / "reference" / f"{mod}.py": "reference.py.tmpl",
        root / "reference" / f"{mod}_mistakes.py": "mistakes.py.tmpl",
        root / "rubrics" / f"{name}.toml": "rubric.toml.tmpl",
        root / "grader" / "checks" / f"{mod}.py": "checks.py.tmpl",
        root / "grader" / "checks" / f"{mod}_model.py": "model.py.tmpl",
        root / "grader" / "harnesses" / f"{mod}.py": "harness.py.tmpl",
        example / f"{mod}.py": "example.py.tmpl",
        example / "answers.md": "example_answers.md.tmpl",
        example / "README.md": "example_README.md.tmpl",
        root / "tests" / f"test_grading_{mod}.py": "test.py.tmpl",
    }


def scaffold(name: str, root: Path = REPO_ROOT, title: str | None = None, tests: bool = True) -> Scaffold:
    root = Path(root)
    mod = validate_name(name)
    title = title or f"{name} (scaffolded assignment)"
    if any(c in title for c in '"\\\n\r') or len(title) > 120:
        raise ScaffoldError("the title must be one line of at most 120 characters without quotes or backslashes")
    if not (root / "reference").is_dir() or not (root / "grader" / "checks").is_dir():
        raise ScaffoldError(f"{root} does not look like a gradekit repository (no reference/ or grader/checks/)")
    targets = plan(name, root)
    if not tests:
        targets = {p: t for p, t in targets.items() if t != "test.py.tmpl"}
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if (root / "submissions" / f"{name}-example").exists():
        existing.append(root / "submissions" / f"{name}-example")
    if existing:
        raise ScaffoldError("refusing to overwrite: " + ", ".join(str(p) for p in existing)
                            + " (remove them, or choose another name)")
    check_unused(name, mod, root)
    values = {"{{name}}": name, "{{mod}}": mod, "{{title}}": title}
    written: list[Path] = []
    try:
        for path, template in targets.items():
            text = (TEMPLATES / template).read_text(encoding="utf-8")
            for k, v in values.items():
                text = text.replace(k, json.dumps(v)[1:-1] if template.endswith(".toml.tmpl") else v)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", encoding="utf-8") as f:  # "x": never overwrite, even in a race
                f.write(text)
            written.append(path)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return Scaffold(name=name, module=mod, files=written)
