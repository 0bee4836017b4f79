"""``gliofit models`` (the known STU-Net checkpoints) and ``gliofit models fetch NAME`` (download once)."""

from __future__ import annotations

import json

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["models_app", "list_models", "fetch"]

models_app = typer.Typer(
    help="List (no command) and download known STU-Net checkpoints.",
    invoke_without_command=True,
    subcommand_metavar="[COMMAND [ARGS]...]",
)


@models_app.callback()
@cli_errors
def list_models(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
) -> None:
    """List the known checkpoints: name, kind, variant, licence, SHA-256, expected input, cache state."""
    if ctx.invoked_subcommand is not None:
        return
    from gliofit.segmentation.registry import model_path, registry

    rows = []
    for e in registry().values():
        path = model_path(e)
        rows.append(
            {
                "name": e.name,
                "kind": e.kind,
                "variant": e.variant,
                "source": e.source,
                "licence": e.licence,
                "sha256": e.sha256 or "unknown (not published)",
                "expected_input": e.expected_input,
                "url": e.url,
                "path": str(path),
                "downloaded": path.is_file(),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(
            f"{r['name']}  ({r['kind']}, STU-Net {r['variant']}, "
            f"{'downloaded' if r['downloaded'] else 'not downloaded'})"
        )
        for k in ("source", "expected_input", "licence", "sha256", "url", "path"):
            typer.echo(f"    {k.replace('_', ' ')}: {r[k]}")


@models_app.command("fetch")
@cli_errors
def fetch(
    name: str = typer.Argument(..., help="A model name from `gliofit models`, or an http(s) URL."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Download a checkpoint into the user cache once (resumable, checksum verified); print its path."""
    from gliofit.segmentation.registry import fetch_model, resolve_model

    path = (
        resolve_model(name, purpose="pretrained", progress=not quiet)
        if name.startswith(("http://", "https://"))
        else fetch_model(name, progress=not quiet)
    )
    typer.echo(str(path))
