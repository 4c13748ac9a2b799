"""`cldyn export`: the base fusion network as an ONNX graph, verified against PyTorch."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Optional

import typer

from cldyn_cli.errors import UserError
from cldyn_cli.export import DEFAULT_OPSET, check_onnx, export_onnx
from cldyn_cli.models.loading import load_vfn
from cldyn_cli.outputs import check_writable
from cldyn_cli.ui import Quiet, user_errors

TOLERANCE = 1e-4


@user_errors
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="The ONNX file to write.")],
    base: Annotated[Optional[Path], typer.Option(help="Base network checkpoint; default: the shipped model.")] = None,
    opset: Annotated[int, typer.Option(min=13, help="ONNX opset version.")] = DEFAULT_OPSET,
    check: Annotated[bool, typer.Option(help="Run the graph with onnxruntime and compare it with PyTorch.")] = True,
    quiet: Quiet = False,
) -> None:
    """Export the base network to ONNX: inputs `ir` (B,1,H,W) and `vis` (B,3,H,W) RGB in [0, 1],
    output `fused` (B,3,H,W) RGB; batch, height and width are dynamic.

    Colour is handled inside the graph as `cldyn fuse` does (BT.601 luminance fused, visible chroma
    kept). Task-compensated networks are not exportable yet: their kernel-type grouping depends on
    the data.
    """
    if output.is_dir():
        raise UserError(f"output {output} is a folder; give a file name such as {output / 'cldyn.onnx'}")
    check_writable(output, "--output")
    missing = [m for m in ("onnx",) + (("onnxruntime",) if check else ()) if find_spec(m) is None]
    if missing:
        raise UserError(f"export needs {', '.join(missing)}: pip install 'cldyn[export]'")
    model, _ = load_vfn(base)
    export_onnx(model, output, opset)
    if check:
        diff = check_onnx(model, output)
        if diff > TOLERANCE:
            output.unlink()
            raise UserError(f"the exported graph differs from PyTorch by {diff:.2e} (> {TOLERANCE}); "
                            "try another --opset")
        if not quiet:
            typer.echo(f"checked with onnxruntime: max difference {diff:.1e}", err=True)
    if not quiet:
        typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export)
