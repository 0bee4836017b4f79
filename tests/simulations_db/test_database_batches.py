"""Build tasks as solver batches: the device flag, and how CUDA tasks group their simulations."""

from __future__ import annotations

import pytest
import torch
from dbhelpers import cli_build_args
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.growth.solver import SolverConfig
from gliofit.simulations_db.worker import _group

runner = CliRunner()


def _sims(rhos):
    return [{"id": i, "rho_per_day": r, "D_mm2_per_day": 0.1 * (i + 1)} for i, r in enumerate(rhos)]


def test_cuda_tasks_group_similar_rho_and_cpu_tasks_run_whole():
    sims = _sims([0.1, 0.002, 0.05, 0.003, 0.09])
    groups = _group(sims, "cuda", 2, SolverConfig())
    assert [[s["id"] for s in g] for g in groups] == [[1, 3], [2, 4], [0]]
    assert _group(sims, "cpu", None, SolverConfig()) == [sims]
    assert _group(sims, "cpu", None, SolverConfig(compile=False)) == [[s] for s in sims]  # eager: one at a time


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    result = runner.invoke(app, cli_build_args(tmp_path / "DB", 2, "--device", "cuda"))
    assert result.exit_code == 2
    assert "no CUDA device" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "DB").exists()


def test_unknown_device_is_refused(tmp_path):
    result = runner.invoke(app, cli_build_args(tmp_path / "DB", 2, "--device", "tpu"))
    assert result.exit_code == 2 and "--device must be cpu or cuda" in result.output
