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
    used = {c.check for c in vae.checks}
    defined = {n[len("check_"):] for n in dir(vae_checks) if n.startswith("check_")}
    assert defined == used


@pytest.mark.parametrize("text, message", [
    ("[assignment]\nid = 'x'\n", "missing required key 'module'"),
    ("not toml [", "not valid TOML"),
    ("[assignment]\nid='x'\nmodule='m.py'\nreference='r'\nchecks='c'\n", "no [[checks]]"),
    ("[assignment]\nid='x'\nmodule='m.py'\nreference='r'\nchecks='c'\n[[checks]]\nid='a'\ncomponent='c'\ncheck='f'\npoints='two'\n",
     "'points' must be a float"),
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
