"""The `gliofit atlas info`, `simulate` and `demo` commands, through Typer and through the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.common.nifti import save_volume

runner = CliRunner()
GLIOFIT = str(Path(sys.executable).with_name("gliofit"))


def test_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in ("atlas", "simulate", "demo"):
        assert name in res.output


def test_atlas_info_prints_json():
    res = runner.invoke(app, ["atlas", "info", "--resolution", "3"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["shape"] == [197, 233, 189]
    assert info["grid"]["spacing_mm"] == [3.0, 3.0, 3.0]
    assert info["volumes_cm3"]["wm"] > 400


def test_simulate_writes_density_on_the_atlas_grid(tmp_path):
    out = tmp_path / "density.nii.gz"
    res = runner.invoke(
        app,
        [
            "simulate",
            "--D",
            "0.5",
            "--rho",
            "0.05",
            "--T",
            "120",
            "--origin",
            "-30",
            "-10",
            "20",
            "--resolution",
            "3",
            "-o",
            str(out),
            "--png",
        ],
    )
    assert res.exit_code == 0, res.output
    img = nib.load(out)
    assert img.shape == (197, 233, 189) and img.get_data_dtype() == np.float32
    data = img.get_fdata()
    assert 0 <= data.min() and data.max() <= 1 and data.max() > 0.25
    # the tumour sits at the origin given in world mm
    peak = np.unravel_index(np.argmax(data), data.shape)
    xyz = img.affine[:3, :3] @ np.array(peak) + img.affine[:3, 3]
    assert np.linalg.norm(xyz - [-30, -10, 20]) < 8.0
    assert (tmp_path / "density.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".*part*"))


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([GLIOFIT, *args], capture_output=True, text=True, timeout=300)


BAD = [
    (["--origin", "0", "0", "90"], "outside brain tissue"),
    (["--D", "0"], "--D"),
    (["--rho", "-0.1"], "--rho"),
    (["--T", "0"], "--T"),
    (["--atlas", "/nonexistent/atlas.nii.gz"], "does not exist"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_input_exits_2_with_one_line(tmp_path, override, message):
    args = {
        "--D": ["0.5"],
        "--rho": ["0.05"],
        "--T": ["100"],
        "--origin": ["-30", "-10", "20"],
        "--resolution": ["4"],
        "-o": [str(tmp_path / "d.nii.gz")],
    }
    args[override[0]] = override[1:]
    flat = ["simulate"] + [x for k, v in args.items() for x in (k, *v)]
    res = runner.invoke(app, flat)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "d.nii.gz").exists()


def test_console_script_four_d_atlas_exits_2(tmp_path):
    save_volume(np.zeros((4, 4, 4, 2)), np.eye(4), tmp_path / "atlas.nii.gz")
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
            "0",
            "0",
            "0",
            "--atlas",
            str(tmp_path / "atlas.nii.gz"),
            "-o",
            str(tmp_path / "d.nii.gz"),
        ]
    )
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "3-D" in res.stderr
    assert not (tmp_path / "d.nii.gz").exists()


DEMO_TINY = [
    "--simulations",
    "12",
    "--resolution",
    "6",
    "--patient-resolution",
    "4",
    "--registration",
    "affine",
    "--no-progress",
]
"""Hidden demo options: a tiny database and a coarse patient keep the test in seconds."""


@pytest.mark.slow
def test_console_script_demo_runs_offline(tmp_path):
    cache = tmp_path / "cache"
    res = _run(["demo", "-o", str(tmp_path / "demo"), "--cache", str(cache), *DEMO_TINY])
    assert res.returncode == 0, res.stderr
    table = res.stdout.splitlines()  # the table, the verdict, where the report is; no JSON
    assert table[0].split()[:5] == ["parameter", "unit", "true", "recovered", "95%"]
    assert any(line.startswith("D_mm2_per_day") and "mm²/day" in line for line in table)
    assert table[-3].startswith(("recovered: origin error", "not recovered: origin error"))
    assert table[-2] == f"report: {(tmp_path / 'demo' / 'report.html').resolve()} (open it in a browser)"
    assert table[-1] == f"result: {(tmp_path / 'demo' / 'result.json').resolve()}" and "{" not in res.stdout
    result = json.loads((tmp_path / "demo" / "result.json").read_text())
    truth = json.loads((tmp_path / "demo" / "truth.json").read_text())
    assert 0 < result["fit"]["dice_mean"] <= 1 and (cache / "demo-db-6mm" / "gliofit-db.json").is_file()
    # a second run reuses the cached database and patient; --json puts the summary on stdout, the table on stderr
    again = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo2"), "--cache", str(cache), "--json", *DEMO_TINY])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["seconds"]["patient"] == 0.0 and summary["recovered"] == result["parameters"]
    assert summary["truth"]["D_mm2_per_day"] == truth["D_mm2_per_day"] and summary["whole_tumor_cm3"] > 1.0
    assert summary["verdict"] == table[-3] and summary["verdict"] in again.stderr.splitlines()
    assert summary["database"]["entries"] > 0
    for path in summary["outputs"]:
        assert Path(path).stat().st_size > 0
