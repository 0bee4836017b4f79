"""The command line's one error path: exit codes, flags for parameters, the missing-extra hint."""

from __future__ import annotations

import pickle

import pytest
import typer
from typer.testing import CliRunner

from gliofit.cli.errors import cli_errors, flag_of, install_hint
from gliofit.common.errors import InputError, check_positive


def _command(exc: BaseException):
    app = typer.Typer()

    @app.command()
    @cli_errors
    def cmd() -> None:
        raise exc

    return app


def test_input_error_exits_2_and_names_the_flag():
    r = CliRunner().invoke(_command(InputError("top_k must be >= 1, got 0", parameter="top_k")), [])
    assert r.exit_code == 2
    assert r.output.strip() == "gliofit: error: --top-k must be >= 1, got 0"


def test_parameter_names_map_to_flags():
    assert flag_of("top_k") == "--top-k" and flag_of("n_simulations") == "--simulations"
    with pytest.raises(InputError) as info:
        check_positive(-1, "margin_mm")
    assert info.value.parameter == "margin_mm" and str(info.value).startswith("margin_mm must")
    err = pickle.loads(pickle.dumps(InputError("workers and scheduler", parameter=("workers", "scheduler"))))
    r = CliRunner().invoke(_command(err), [])
    assert r.exit_code == 2 and "--workers and --scheduler" in r.output


def test_a_bug_is_an_internal_error():
    r = CliRunner().invoke(_command(TypeError("unsupported operand")), [])
    assert r.exit_code == 1
    assert "internal error: TypeError" in r.output and "--debug" in r.output


def test_missing_extra_names_the_install_command():
    exc = ModuleNotFoundError("No module named 'faiss'", name="faiss")
    assert install_hint(exc) == "faiss is not installed: pip install 'gliofit[database]'"
    r = CliRunner().invoke(_command(exc), [])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "pip install 'gliofit[database]'" in r.output
