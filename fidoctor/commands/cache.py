"""``fidoctor cache export | import | verify``: build once, check and reuse everywhere.

A cache baked into an image often rebuilds anyway or fails on the target: a
``cuda_home`` spelled through another symlink, a reinstall that leaves sources
newer than the objects, another CUDA or arch. ``export`` writes the target's
compiled modules and a manifest (versions, arch, ``cuda_home``, per-module
digests, ``.ninja_log`` entries, the digest of every source and header);
``import`` refuses anything that does not fit (exit 2, nothing written) and
otherwise installs through the transaction layer (``fidoctor undo`` takes it
out), rewriting what ninja keys on for the target; ``verify`` asks the
target's ninja and diagnose's probes whether each module would be rebuilt or
would fail to load. Exit codes: 0 · 1 problems (verify) · 2 could not / refused.
"""

from __future__ import annotations

import json
import os
from typing import Callable, List, Optional

import click

from fidoctor.commands._common import Seconds, make_context, python_pid_options
from fidoctor.textsafe import shown


def _target(f: Callable) -> Callable:
    return python_pid_options(click.option(
        "--arch", metavar="LIST", help="The target's arch list, e.g. 9.0a (default: "
        "FLASHINFER_CUDA_ARCH_LIST, else the GPUs').")(f))


def _modules(spec: Optional[str]) -> Optional[List[str]]:
    return [m.strip() for m in spec.split(",") if m.strip()] if spec else None


@click.group("cache")
def command() -> None:
    """Export, import and verify compiled FlashInfer kernels (build once, verify everywhere)."""


@command.command("export")
@_target
@click.option("-o", "--output", "output", required=True, metavar="BUNDLE",
              help="Where to write the bundle (.tar; .tar.zst when zstd is available).")
@click.option("--modules", metavar="NAMES",
              help="Comma-separated module names or warmup specs (default: every module).")
def export_cmd(python, pid, arch, output, modules) -> int:
    """Write the target's compiled modules and their manifest to BUNDLE."""
    from fidoctor.cachebundle.export import export
    from fidoctor.cachebundle.target import gather_target

    ctx = make_context(python, pid, False)
    t = gather_target(ctx, arch)
    res = export(t, output, _modules(modules), ctx.env)
    click.echo(f"wrote {res.path}: {len(res.modules)} module(s), {res.bytes_written:,} bytes"
               f"{' (zstd)' if res.compressed else ''}")
    for n in res.modules:
        click.echo(f"  {shown(n)}")
    for n, why in res.skipped.items():
        click.echo(shown(f"  skipped {n}: {why}"))
    return 0


@command.command("import")
@_target
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--replace", is_flag=True,
              help="Move modules already in the target's cache aside (undoable) instead of "
              "refusing.")
def import_cmd(python, pid, arch, bundle, replace) -> int:
    """Install BUNDLE into the target's cache, or refuse it (exit 2, nothing written)."""
    from fidoctor.cachebundle.importer import import_bundle
    from fidoctor.cachebundle.target import gather_target

    if not os.path.exists(bundle):
        from fidoctor.errors import FidoctorError

        raise FidoctorError(f"{bundle}: no such file")
    t = gather_target(make_context(python, pid, False), arch)
    res = import_bundle(t, bundle, replace=replace)
    click.echo(f"imported {len(res.modules)} module(s) into {res.workspace} "
               f"(transaction {res.txid}; fidoctor undo takes them out)")
    for n in res.modules:
        aside = " (replaced; the old one is in fidoctor-quarantine)" if n in res.replaced else ""
        click.echo(f"  {shown(n)}{aside}")
    click.echo("next: fidoctor cache verify" + (f" --python {python}" if python else ""))
    return 0


@command.command("verify")
@_target
@click.option("--modules", metavar="NAMES", help="Only these modules (default: every module).")
@click.option("--budget", type=Seconds(min=0, min_open=True), default=60.0, show_default=True,
              metavar="S",
              help="Seconds for all the ninja dry runs together.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (schema_version 1).")
def verify_cmd(python, pid, arch, modules, budget, as_json) -> int:
    """Would the target rebuild each module, and would it load? Exit 0 / 1 / 2."""
    from fidoctor.cachebundle.verify import render, verify

    res = verify(make_context(python, pid, False), arch, _modules(modules), budget)
    click.echo(json.dumps(res.to_json(), indent=2) if as_json else render(res))
    return res.exit_code
