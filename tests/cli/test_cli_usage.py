"""How the command line reads: --version, plain usage lines and flags, one-line usage errors, the
`db info` of a file, no blank line before an error, and torch's CUDA-toolkit warning kept quiet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import gliofit
from gliofit.cli import app

runner = CliRunner()
GLIOFIT = str(Path(sys.executable).with_name("gliofit"))


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([GLIOFIT, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_version_prints_the_package_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.stdout.strip() == f"gliofit {gliofit.__version__}"


def test_usage_names_arguments_as_typed_and_flags_take_no_placeholder():
    res = runner.invoke(app, ["run", "--help"])
    assert res.exit_code == 0
    assert "Usage: gliofit run [OPTIONS] PATIENT_DIR" in res.stdout
    assert "<bool>" not in res.stdout and "{" not in res.stdout.splitlines()[0]
    refine = next(line for line in res.stdout.splitlines() if "--refine" in line)
    assert "<" not in refine
    db = runner.invoke(app, ["db", "info", "--help"]).stdout
    assert "Usage: gliofit db info [OPTIONS] DB" in db


def test_options_taking_several_values_name_them():
    assert "--origin X Y Z " in runner.invoke(app, ["simulate", "--help"]).stdout
    assert "--weights WT CORE " in runner.invoke(app, ["infer", "--help"]).stdout


def test_missing_required_option_is_one_line_exit_2():
    res = _run(["run", "somewhere"])
    assert res.returncode == 2
    assert res.stderr.strip() == "gliofit: error: missing option '--db' (see 'gliofit run --help')"
    assert res.stdout == ""


def test_unknown_option_and_bad_value_are_one_line_exit_2():
    for args, word in ((["db", "info", "x", "--bogus"], "--bogus"), (["simulate", "--D", "abc"], "--D")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gliofit: error:") and word in lines[0]


def test_db_info_on_a_file_says_not_a_directory(tmp_path):
    f = tmp_path / "db.sqlite"
    f.write_bytes(b"")
    res = runner.invoke(app, ["db", "info", str(f)])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"gliofit: error: {f}: not a directory (a gliofit database is a directory)"


def test_simulate_error_has_no_blank_line_before_it(tmp_path):
    res = _run(
        [
            "simulate",
            "--D",
            "0.5",
            "--rho",
            "0.05",
            "--T",
            "10",
            "--origin",
            "500",
            "0",
            "0",
            "--resolution",
            "6",
            "-o",
            str(tmp_path / "d.nii.gz"),
        ]
    )
    assert res.returncode == 2
    assert res.stderr.startswith("gliofit: error: origin"), repr(res.stderr)
    assert res.stderr.count("\n") == 1


def test_torch_cuda_toolkit_warning_is_quiet_on_cpu(tmp_path):
    """torch logs "No CUDA runtime is found" when a CUDA toolkit folder exists but no GPU does."""
    code = "import gliofit.cli, torch, torch.utils.cpp_extension as c; print(torch.cuda.is_available())"
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_HOME": str(tmp_path)},
    )
    assert res.returncode == 0, res.stderr
    if res.stdout.strip() == "False":
        assert "No CUDA runtime" not in res.stderr
    bare = subprocess.run(
        [sys.executable, "-c", code.replace("import gliofit.cli, ", "import ")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_HOME": str(tmp_path)},
    )
    if bare.stdout.strip() == "False":
        assert "No CUDA runtime" in bare.stderr  # the warning exists without gliofit's CLI
