"""Rubric files: the shipped ones load; malformed ones fail with messages that say what to fix."""

import pytest

from grader.checks import vae as vae_checks
from grader.rubric import RubricError, available_rubrics, load_rubric

COMPONENT_TAGS = {"log_normal_diag", "log_standard_normal", "log_bernoulli", "log_categorical", "reparameterization",
                  "encoder", "decoder", "mog_prior.sample", "mog_prior.log_prob", "elbo", "model", "interface"}


def test_shipped_rubrics_load_and_reference_existing_checks():
    rubrics = available_rubrics()
    assert "vae" in rubrics
    vae = rubrics["vae"]
    assert set(vae.components) == COMPONENT_TAGS
    for spec in vae.checks:
        assert callable(vae.check_function(spec)), spec.id
    assert any(c.public for c in vae.checks) and any(not c.public for c in vae.checks)


def test_every_mistake_has_a_mutant_and_every_mutant_a_message():
    from reference.vae_mistakes import MUTANTS

    vae = available_rubrics()["vae"]
    declared = {m.id for m in vae.mistakes}
    assert declared <= set(MUTANTS), f"mistakes without a mutant: {declared - set(MUTANTS)}"
    assert set(MUTANTS) <= declared, f"mutants without a message in the rubric: {set(MUTANTS) - declared}"


def test_every_check_function_is_used():
    vae = available_rubrics()["vae"]
    used = {c.check for c in vae.checks if c.kind != "property"}  # (properties: grader/checks/properties.py)
    defined = {n[len("check_"):] for n in dir(vae_checks) if n.startswith("check_")}
    assert defined == used


@pytest.mark.parametrize("text, message", [
    ("[assignment]\nid = 'x'\n", "missing required key 'module'"),
    ("not toml [", "not valid TOML"),
    ("[assignment]\nid='x'\nmodule='m.py'\nreference='r'\nchecks='c'\n", "no [[checks]]"),
    ("[assignment]\nid='x'\nmodule='m.py'\nreference='r'\nchecks='c'\n[[checks]]\nid='a'\ncomponent='c'\ncheck='f'\npoints='two'\n",
     "'points' must be a number"),
    ("[assignment]\nid='x'\nmodule='m.py'\nreference='r'\nchecks='c'\n[[checks]]\nid='a'\ncomponent='c'\ncheck='f'\npoints=1\nvisibility='secret'\n",
     "visibility must be one of"),
    ("[assignment]\nid='x'\nmodule='m.py'\nreference='r'\nchecks='c'\n[[checks]]\nid='a'\ncomponent='c'\ncheck='f'\npoints=1\npionts=2\n",
     "unknown key"),
])
def test_bad_rubrics_are_reported_clearly(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(RubricError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        load_rubric(p)
    assert str(p) in str(e.value)


def test_shipped_rubrics_lint_clean():
    from grader.rubric import lint_rubric

    for r in available_rubrics().values():
        assert lint_rubric(r) == [], r.id


def test_lint_catches_dangling_references(tmp_path):
    from grader.rubric import RUBRICS_DIR, lint_rubric

    text = (RUBRICS_DIR / "vae.toml").read_text()
    text = text.replace('elbo = "VAE.forward"', 'elbo = "VAE.fwd"')
    text = text.replace('check = "elbo_gradients"', 'check = "elbo_gradientz"')
    text += '\n[[mistakes]]\nid = "made_up"\ncomponent = "nonexistent"\nmessage = "x"\n'
    p = tmp_path / "vae.toml"
    p.write_text(text)
    problems = "\n".join(lint_rubric(load_rubric(p)))
    assert "'VAE.fwd'" in problems
    assert "check_elbo_gradientz" in problems
    assert "'made_up'" in problems and "no mutant" in problems and "'nonexistent'" in problems


# ---- check kinds (grader/kinds.py) ----------------------------------------------------------------

HEAD = "[assignment]\nid='x'\nmodule='m.py'\nreference='reference.vae'\nchecks='grader.checks.vae'\n"


def _check(id, component, check, kind=None):
    return (f"[[checks]]\nid='{id}'\ncomponent='{component}'\ncheck='{check}'\npoints=1\n"
            + (f"kind='{kind}'\n" if kind else ""))


def test_kind_is_inferred_for_rubrics_that_declare_none():
    kinds = {c.component: c.kind for r in available_rubrics().values() for c in r.checks if c.kind != "property"}
    assert kinds["model"] == "model" and kinds["interface"] == "interface" and kinds["elbo"] == "unit"
    vae = available_rubrics()["vae"]
    assert vae.kind_of("model").trains and not vae.kind_of("model").isolated and not vae.kind_of("model").mutable
    assert vae.kind_of("elbo").isolated and vae.kind_of("elbo").mutable and not vae.kind_of("elbo").trains
    assert "model" not in vae.components_where(lambda k: k.mutable)
    assert "model" not in vae.code_targets and vae.code_targets["elbo"] == "VAE.forward"


def test_a_declared_kind_wins_over_the_inferred_one(tmp_path):
    p = tmp_path / "k.toml"
    p.write_text(HEAD + _check("a", "model", "model_nll", "unit") + _check("b", "causality", "elbo_value", "property"))
    r = load_rubric(p)
    assert [c.kind for c in r.checks] == ["unit", "property"]
    assert r.kind_of("causality").isolated and not r.kind_of("model").trains


@pytest.mark.parametrize("body, message", [
    (_check("a", "c", "f", "magic"), "kind must be one of unit, interface, model, property, got 'magic'"),
    (_check("a", "c", "f") + _check("b", "c", "g", "model"), "give one component one kind"),
])
def test_bad_kinds_are_reported_clearly(tmp_path, body, message):
    p = tmp_path / "k.toml"
    p.write_text(HEAD + body)
    with pytest.raises(RubricError, match=message) as e:
        load_rubric(p)
    assert str(p) in str(e.value)


def test_the_interface_kind_brings_its_own_check_function(tmp_path):
    """`check = "interface"` of kind interface needs no code in the checks module: the interface runner
    supplies `judge_signatures`; the rubric loader itself knows nothing of it (no upward import)."""
    from grader.checks.interface import judge_signatures
    from grader.checks.runners import runner_for
    from grader.rubric import lint_rubric

    p = tmp_path / "k.toml"
    p.write_text(HEAD.replace("grader.checks.vae", "grader.checks.kmeans_autoencoder")
                 + _check("i", "interface", "interface") + _check("u", "confusion", "interface", "unit"))
    r = load_rubric(p)
    shared = type(runner_for(r.checks[0])).shared_function
    assert shared is judge_signatures
    assert r.check_function(r.checks[0], shared=shared) is judge_signatures
    with pytest.raises(RubricError, match="check_interface"):  # a unit check gets no shared function
        r.check_function(r.checks[1])
    assert not any("check_interface" in p and "'i'" in p for p in lint_rubric(r))
