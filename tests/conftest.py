"""Shared fixtures: submissions built from the reference with one known mistake planted."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBMISSIONS = REPO / "submissions"
HOSTILE = REPO / "tests" / "submissions"


def mutant_source(mutant) -> str:
    """Python source that, appended to a copy of reference/vae.py, plants `mutant` in it."""
    src = textwrap.dedent(inspect.getsource(mutant.fn))
    lines = [l for l in src.splitlines() if not l.lstrip().startswith("@")]
    body = re.sub(r"def \w+\(", "def _planted(", "\n".join(lines), count=1)
    owner, _, attr = mutant.component.rpartition(".")
    if not owner:
        install = f"{attr} = _planted"
    elif attr == "reparameterization":
        install = f"{owner}.{attr} = staticmethod(_planted)"
    else:
        install = f"{owner}.{attr} = _planted"
    # The mutants module refers to the reference as `vae` and keeps the unpatched decode around.
    prelude = "import sys as _sys\nimport torch.nn.functional as F\nvae = _sys.modules[__name__]\n_ref_decode = Decoder.decode\n"
    return f"\n\n# --- planted mistake: {mutant.id} ---\n{prelude}{_helpers(mutant)}{body}\n{install}\n"


def _helpers(mutant) -> str:
    """Source of the mutants module's private helper functions (mutants may call them)."""
    module = inspect.getmodule(mutant.fn)
    registered = {m.fn for m in module.MUTANTS.values()}
    out = []
    for name, obj in vars(module).items():
        if inspect.isfunction(obj) and obj.__module__ == module.__name__ and obj not in registered and name != "mutant":
            out.append(textwrap.dedent(inspect.getsource(obj)))
    return "\n".join(out) + "\n"


def make_submission(tmp_path: Path, name: str, extra: str = "", base: Path = REPO / "reference" / "vae.py") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "vae.py").write_text(base.read_text() + extra)
    return folder


TEST_MODEL_CACHE = REPO / ".pytest_cache" / "gradekit-models"


@pytest.fixture(scope="session", autouse=True)
def isolated_model_cache(tmp_path_factory):
    """Tests never read or fill the user's reference-model cache. They share their own across sessions
    (.pytest_cache/gradekit-models, or $GRADEKIT_TEST_CACHE; "fresh": a new one per session): entries are
    keyed by content (settings, data, device and the code they depend on, grader/model_cache.py), so a change
    of any of these trains anew, and the references are not retrained in every session."""
    import os

    old = os.environ.get("GRADEKIT_CACHE")
    chosen = os.environ.get("GRADEKIT_TEST_CACHE", str(TEST_MODEL_CACHE))
    os.environ["GRADEKIT_CACHE"] = str(tmp_path_factory.mktemp("gradekit-cache")) if chosen == "fresh" else chosen
    yield
    if old is None:
        os.environ.pop("GRADEKIT_CACHE", None)
    else:
        os.environ["GRADEKIT_CACHE"] = old


def lost_points(result) -> dict[str, float]:
    """Points lost per component (components that lost nothing are absent)."""
    out: dict[str, float] = {}
    for t in result.tests:
        if t.score < t.max_score:
            out[t.component] = out.get(t.component, 0.0) + t.max_score - t.score
    return out


def named_mistakes(result) -> set[str]:
    """Ids of every mistake the feedback names."""
    return {m["id"] for t in result.tests for m in t.mistakes}


def unit_tags(rubric) -> list[str]:
    """Every component except the model-level one (which trains a model: slow, tested on its own)."""
    return [c for c in rubric.components if c != "model"]


@pytest.fixture(scope="session")
def vae_rubric():
    from grader.rubric import available_rubrics

    return available_rubrics()["vae"]
