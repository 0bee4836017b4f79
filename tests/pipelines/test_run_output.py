"""What ``gliofit run`` says while it works: stage lines on stderr as they begin, the JSON on stdout, and
``--quiet`` for scripts (stderr keeps warnings only)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gliofit.pipelines.run import STAGES

GLIOFIT = str(Path(sys.executable).with_name("gliofit"))


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([GLIOFIT, "run", *map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # two runs of `gliofit run`
def test_run_shows_its_stages_on_stderr_and_quiet_hides_them(tmp_path, pipeline_db, phantom_cohort) -> None:
    patient = phantom_cohort[1]
    loud = _run(patient, "--db", pipeline_db, "-o", tmp_path / "A", "--registration", "none")
    assert loud.returncode == 0, loud.stderr
    assert json.loads(loud.stdout)["output"] == str(tmp_path / "A")  # stdout: the JSON summary only
    lines = [ln for ln in loud.stderr.splitlines() if ln.startswith(f"gliofit: {patient.name} ")]
    shown = [re.match(r"gliofit: \S+ \d+:\d\d \[(\d)/7\] (\w+)$", ln).group(2) for ln in lines]
    assert shown == ["registration", "query", "density", "plan", "report"]  # given segmentation; load: no line
    assert all(s in STAGES for s in shown)
    quiet = _run(patient, "--db", pipeline_db, "-o", tmp_path / "B", "--registration", "none", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert all(ln.startswith("gliofit: warning:") for ln in quiet.stderr.splitlines())
    assert json.loads(quiet.stdout)["parameters"] == json.loads(loud.stdout)["parameters"]
