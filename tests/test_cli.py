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
    by_tag = {t["tags"][0]: t for t in data["tests"]}
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
    assert r.exit_code == 2 and "not a folder" in r.output
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
