"""The `grade` command line: outputs, files written, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from grader.cli import main
from tests.conftest import REPO, make_submission


def test_list_shows_assignments_components_and_points():
    r = CliRunner().invoke(main, ["list"])
    assert r.exit_code == 0, r.output
    assert "vae" in r.output and "mog_prior.log_prob" in r.output and "written questions" in r.output


def test_run_writes_gradescope_results_and_exits_0_even_with_low_scores(tmp_path):
    sub = make_submission(tmp_path, "lowscore", "\ndef log_standard_normal(x, reduction=None, dim=None):\n    return -0.5 * x**2\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["run", str(sub), "--out", str(out), "--only", "log_standard_normal,log_bernoulli", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "lowscore" / "results.json").read_text())
    assert {"score", "max_score", "execution_time", "tests"} <= set(data)
    for t in data["tests"]:
        assert {"name", "number", "score", "max_score", "status", "output", "tags", "visibility"} <= set(t)
    by_tag = {}
    for t in data["tests"]:  # each component's first check: its values (its property checks follow)
        by_tag.setdefault(t["tags"][0], t)
    assert by_tag["log_standard_normal"]["status"] == "failed"
    assert "−½·log 2π" in by_tag["log_standard_normal"]["output"]  # the named mistake
    assert by_tag["log_bernoulli"]["status"] == "passed"
    assert data["extra_data"]["gradekit"]["submission_hash"]


def test_check_runs_public_checks_only_and_writes_nothing(tmp_path, monkeypatch):
    sub = make_submission(tmp_path, "selfcheck")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["check", str(sub)])
    assert r.exit_code == 0, r.output
    assert "public checks passed" in r.output
    assert not (tmp_path / "reports").exists()
    assert "statistical test" not in r.output  # hidden checks are not run


def test_bad_usage_exits_2_with_a_message(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["run", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(main, ["run", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "vae.py" in r.output
    sub = make_submission(tmp_path, "s")
    r = runner.invoke(main, ["run", str(sub), "--assignment", "nonexistent"])
    assert r.exit_code == 2 and "unknown assignment" in r.output
    r = runner.invoke(main, ["run", str(sub), "--only", "no_such_tag"])
    assert r.exit_code == 2 and "matches no check" in r.output
    r = runner.invoke(main, ["run", str(sub), "--device", "tpu"])
    assert r.exit_code == 2


def test_installed_entry_point_runs(tmp_path):
    grade = REPO / ".venv" / "bin" / "grade"
    exe = [str(grade)] if grade.exists() else [sys.executable, "-m", "grader.cli"]
    p = subprocess.run(exe + ["--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "gradekit" in p.stdout


def test_run_with_a_missing_data_folder_exits_2_naming_what_was_expected(tmp_path):
    sub = make_submission(tmp_path, "datauser")
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["run", str(sub), "--out", str(out), "--only", "model", "--device", "cpu",
                                  "--data", f"mnist:{tmp_path / 'no-such-folder'}"])
    assert r.exit_code == 2, r.output
    assert "no-such-folder" in r.output and "train-images-idx3-ubyte" in r.output.replace("\n", "")
    assert not (out / "datauser" / "results.json").exists()


def test_run_renders_the_report_from_results_json_in_a_worker_and_no_report_skips_it(tmp_path):
    """A fresh `grade run` (as users start it) forks the report worker; --no-report writes results.json only."""
    sub = make_submission(tmp_path, "cold")
    (sub / "answers.md").write_text("## Q1\nThe ELBO is $\\log p(x) \\geq \\mathbb{E}_q[\\log p(x|z)] - KL$.\n")
    grade = REPO / ".venv" / "bin" / "grade"
    exe = [str(grade)] if grade.exists() else [sys.executable, "-m", "grader.cli"]
    args = ["run", str(sub), "--only", "log_bernoulli", "--device", "cpu"]
    p = subprocess.run(exe + args + ["--out", str(tmp_path / "with")], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    folder = tmp_path / "with" / "cold"
    assert "report:" in p.stdout and (folder / "report.pdf").read_bytes().startswith(b"%PDF")
    html = (folder / "report.html").read_text()
    assert 'class="math"' in html  # the worker drew the formula
    assert json.loads((folder / "results.json").read_text())["extra_data"]["gradekit"]["submission_hash"]
    p = subprocess.run(exe + args + ["--out", str(tmp_path / "without"), "--no-report"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "report:" not in p.stdout
    assert sorted(x.name for x in (tmp_path / "without" / "cold").iterdir()) == ["results.json"]


def test_report_worker_renders_what_render_report_renders(tmp_path):
    """The forked worker and the in-process renderer give the same report (and a dead worker falls back)."""
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from grader.report.background import ReportWorker, background_supported
from grader.results import GradeResult, TestResult, save_result
assert background_supported()
worker = ReportWorker.start(None)
assert worker.pid is not None
result = GradeResult(student="w", assignment="vae", tests=[TestResult(name="t", number="1.1", score=1, max_score=2)])
folder = save_result(result, Path({str(tmp_path)!r})).parent
html, pdf = worker.render(folder)
import os
dead = ReportWorker.start(None)
os.kill(dead.pid, 9)  # a worker that died: the report is rendered in this process instead
os.waitpid(dead.pid, 0)
html2, pdf2 = dead.render(folder)
print(json.dumps([str(html), str(pdf), str(html2)]))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    html, pdf, html2 = json.loads(p.stdout.splitlines()[-1])
    assert pdf.endswith("report.pdf") and html == html2



def test_what_grade_run_imports_before_forking_its_report_worker_starts_no_thread():
    """numpy's import starts a BLAS thread, after which the worker is not forked and every report is rendered in
    the grader's own process (history.py once imported numpy at the top, through the glossary)."""
    script = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
import grader.report.background, grader.results, grader.glossary, grader.history, grader.cli
print(sorted(m for m in ("numpy", "torch", "matplotlib") if m in sys.modules), len(os.listdir("/proc/self/task")))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[]", "1"], p.stdout


def test_a_figure_plan_travels_to_the_report_worker_exactly():
    """What the report worker draws from: arrays keep dtype, shape and bits, scalars stay numpy scalars, tuples
    stay tuples, NaN stays NaN; a value it cannot carry is refused (the grader then draws in a thread)."""
    import numpy as np
    import pytest

    from grader.report.background import decode, pack_plan, unpack_plan

    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    plan = [{"kind": "x", "file": "x.png", "kwargs": {"a": a, "s": np.float64(0.1), "shape": (8, 8), "n": 3,
                                                      "h": {"val_loss": [float("nan"), 1e-310, 2.5], "best": None}}}]
    folder, back = unpack_plan(json.loads(pack_plan(REPO, plan))["draw"])
    kw = back[0]["kwargs"]
    assert folder == REPO and kw["a"].dtype == np.float32 and kw["a"].tobytes() == a.tobytes()
    assert type(kw["s"]) is np.float64 and kw["s"] == 0.1 and kw["shape"] == (8, 8) and type(kw["n"]) is int
    assert np.isnan(kw["h"]["val_loss"][0]) and kw["h"]["val_loss"][1:] == [1e-310, 2.5] and kw["h"]["best"] is None
    assert decode({"__dict__": {"t": {"__tuple__": [1, 2]}}}, {}) == {"t": (1, 2)}
    with pytest.raises(TypeError):
        pack_plan(REPO, [{"kwargs": {"f": object()}}])


def test_report_worker_draws_the_figures_this_process_would_draw(tmp_path):
    """The worker's PNGs are byte for byte the ones `draw_plan` draws here; a plan that fails there, or a dead
    worker, is drawn here instead (`drawn` says None), and the report is still rendered."""
    script = f"""
import json, os, sys, time
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from grader.report.background import ReportWorker, figure_worker
dead = ReportWorker.start(None)  # (forked first: a process with numpy's threads does not fork a worker)
os.kill(dead.pid, 9)
os.waitpid(dead.pid, 0)
worker = ReportWorker.start(None)
import numpy as np
from grader import figures
rng = np.random.default_rng(1)
hist = {{"train_loss": [9.0, 5.0, 4.0, 4.5], "val_loss": [float("nan"), 6.0, 5.0, 5.5], "epochs": [1, 2, 3, 4],
        "best_epoch": 3, "stopped_because": "patience"}}
plan = [{{"kind": "loss_curves", "file": "loss.png", "kwargs": {{"student_hist": hist, "reference_hist": None}}}},
        {{"kind": "image_grid", "file": "rec.png", "kwargs": {{"real": rng.random((16, 8, 8)).astype(np.float32),
          "recon": rng.random((16, 64)).astype(np.float32), "image_shape": (8, 8)}}}},
        {{"kind": "latent_projection", "file": "lat.png", "kwargs": {{"mu": rng.standard_normal((50, 3)),
          "labels": rng.integers(0, 10, 50)}}}}]
deadline = time.time() + 120
while figure_worker() is None and time.time() < deadline:
    time.sleep(0.05)
assert figure_worker() is worker
there, here = Path({str(tmp_path)!r}) / "there", Path({str(tmp_path)!r}) / "here"
assert worker.draw(there, plan) and not worker.idle()  # one request at a time
drawn = worker.drawn()
mine = figures.draw_plan(here, plan)
same = [p.name == q.name and p.read_bytes() == q.read_bytes() for p, q in zip(drawn, mine)]
assert worker.idle() and worker.draw(there, [{{"kind": "sample_grid", "file": "bad.png", "kwargs": {{"samples": [1.0]}}}}])
failed = worker.drawn()  # sample_grid without image_shape raises in the worker: drawn here, raising there
from grader.results import GradeResult, TestResult, save_result
folder = save_result(GradeResult(student="w", assignment="vae", tests=[TestResult(name="t", number="1.1", score=1,
                                                                                  max_score=2)]), there).parent
assert worker.draw(there, plan)  # its reply left uncollected: never taken for the report's
html, pdf = worker.render(folder)
late = [p.name for p in (worker.drawn() or [])]  # the reply `render` collected first is kept: not drawn twice
print(json.dumps({{"same": same, "failed": failed, "pdf": pdf.is_file(), "late": late, "dead_idle": dead.idle(),
                  "dead_draw": dead.draw(there, plan), "dead_pid": dead.pid}}))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    assert out == {"same": [True, True, True], "failed": None, "pdf": True, "late": ["loss.png", "rec.png", "lat.png"],
                   "dead_idle": False, "dead_draw": False, "dead_pid": None}, out

SNOOP = """
import os as _os
print("CMDLINE", open("/proc/self/cmdline", "rb").read().replace(bytes(1), b" ").decode(errors="replace"))
print("SECRET_SEEN", "hunter2" in open("/proc/self/environ", "rb").read().decode(errors="replace")
      or any("hunter2" in v for v in _os.environ.values()))
"""


def test_the_command_forks_the_zygote_off_itself_unless_a_secret_is_in_the_environment(tmp_path):
    """`grade run` imports torch once and forks the zygote off itself; with a GRADEKIT_SECRET* variable
    set it spawns a fresh one instead, whose children never see the secret. Grading is the same."""
    import os

    sub = make_submission(tmp_path, "snoop", SNOOP)
    grade = REPO / ".venv" / "bin" / "grade"
    exe = [str(grade)] if grade.exists() else [sys.executable, "-m", "grader.cli"]
    outputs = {}
    for case, extra_env in (("forked", {}), ("spawned", {"GRADEKIT_SECRET_TOKEN": "hunter2"})):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADEKIT_SECRET")} | extra_env
        out = tmp_path / case
        p = subprocess.run(exe + ["run", str(sub), "--only", "log_bernoulli", "--device", "cpu", "--no-report",
                                  "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        data = json.loads((out / "snoop" / "results.json").read_text())
        assert all(t["status"] == "passed" for t in data["tests"]), data["tests"]
        assert data["extra_data"]["gradekit"]["sandbox"].get("pid_namespace") is not None
        outputs[case] = data["extra_data"]["gradekit"]["student_output"]
    assert "SECRET_SEEN False" in outputs["spawned"] and "grader.sandbox.zygote" in outputs["spawned"]
    assert "grader.sandbox.zygote" not in outputs["forked"] and " run " in outputs["forked"]


def test_grade_check_numbers_each_check_as_the_full_report_does(vae_rubric):
    """`grade check` runs public checks only; a check keeps its report number (6.4 stays 6.4 without 6.3)."""
    from grader.engine import GradeOptions, check_numbers, grade_submission

    result = grade_submission(REPO / "submissions" / "alice", vae_rubric,
                              GradeOptions(device="cpu", only=["reparameterization", "elbo"], public_only=True))
    numbers = {t.check: t.number for t in result.tests}
    assert numbers["reparameterization.stochastic"] == "6.4" and numbers["elbo.gradients"] == "11.2"
    assert numbers == {c: n for c, n in check_numbers(vae_rubric).items() if c in numbers}


def test_the_console_table_is_one_row_per_component_and_a_row_per_check_that_lost_points(monkeypatch):
    """72 checks took 231 lines at 80 columns (bob): a component whose checks all passed is one row, a failing
    check is named without its component's prefix, and a cause shared by several checks is said once."""
    import io

    from rich.console import Console

    import grader.cli as cli
    from grader.results import GradeResult
    from grader.results import TestResult as Check
    from grader.rubric import available_rubrics

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=160, highlight=False))
    diverged = "0/1 case passed.\nDiagnosis: training diverged at epoch 3."
    tests = [Check(f"log_bernoulli: property {i}", f"4.{i}", 0.25, 0.25, component="log_bernoulli") for i in (1, 2, 3)]
    tests += [Check("MoGPrior.sample: shape (batch_size, L)", "10.1", 0.0, 0.5, component="mog_prior.sample",
                    output="0/1 case passed.\n- return value: must return a torch.Tensor")]
    tests += [Check(f"Trained model: measure {i}", f"12.{i}", 0.0, 1.0, component="model", output=diverged)
              for i in (1, 2)]
    tests += [Check("log_normal_diag: reductions", "2.2", 1.0, 1.0, component="log_normal_diag",
                    output="Not applicable to your signature: every case needs a parameter your function lacks.\n"
                           "a case: not judged, `log_normal_diag` takes no `reduction` (charged once in the interface check).")]
    cli._print_table(GradeResult(student="s", assignment="vae", tests=tests), "s", available_rubrics()["vae"])
    text = out.getvalue()
    assert "log_bernoulli — all 3 checks passed" in text and "property 1" not in text
    assert "MoGPrior.sample — its check did not pass" in text and "shape (batch_size, L)" in text
    assert "MoGPrior.sample: shape" not in text and "must return a torch.Tensor" in text
    assert "Trained model — 0 of 2 checks passed" in text
    assert text.count("training diverged") == 1 and "the same as 12.1" in text
    # a check that passed without judging its cases says why: the self-check runs no (hidden) interface check
    assert "Not judged: `log_normal_diag` takes no `reduction`" in text


def test_what_the_childs_code_says_reaches_the_console_as_text(monkeypatch):
    """Feedback quotes the student's exception messages, notes quote their file names, errors their import
    failures: an ESC sequence in any of them would retitle or clear the TA's terminal, rich markup plant a link."""
    import io

    from rich.console import Console

    import grader.cli as cli
    from grader.results import GradeResult
    from grader.results import TestResult as Check
    from grader.rubric import available_rubrics

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=200, highlight=False))
    evil = "\x1b]0;pwned\x07[link=x.example]y\u202e"
    result = GradeResult(student="s", assignment="vae", errors=[f"import failed: {evil}"],
                         submission={"notes": [f"figure {evil}.png left out"]},
                         tests=[Check("log_bernoulli: values", "4.1", 0.0, 1.0, component="log_bernoulli",
                                      output=f"0/1 case passed.\n- a case: ValueError: {evil}")])
    cli._print_table(result, "s", available_rubrics()["vae"])
    cli._print_handed_in(result)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert text.count("\\x1b]0;pwned") >= 3, text
