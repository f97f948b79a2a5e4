"""``fidoctor fleet``: many nodes' reports grouped by verdict, plus what only a fleet shows."""

from __future__ import annotations

import json

import click

from fidoctor.commands._common import Seconds


@click.command("fleet")
@click.argument("reports", nargs=-1, metavar="REPORTS…")
@click.option("--json", "as_json", is_flag=True, help="One JSON object (schema fleet, version 1).")
@click.option("--markdown", "as_md", is_flag=True, help="Markdown, to paste into an issue.")
@click.option("--timeout", type=Seconds(0.1, 86400), default=60.0, show_default=True,
              metavar="SECONDS", help="The whole collection (or reading stdin) ends after "
              "this long; nodes still running are listed as unreachable.")
@click.option("--ssh", "hostfile", metavar="HOSTFILE", type=click.Path(dir_okay=False),
              help="Run diagnose on every [user@]host[:port] of HOSTFILE over ssh, in parallel; "
              "args after -- go to ssh.")
@click.option("--slurm", is_flag=True, help="Run diagnose once per node with srun (of the "
              "allocation, or of -N/-w after --).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None,
              metavar="[ADDRESS]", help="Run diagnose on every alive Ray node, pinned to it.")
@click.option("--ray-python", default="python3", show_default=True, metavar="CMD",
              help="The interpreter that has ray (runs the driver); one word is checked to be "
              "a Python interpreter, a command (uv run python) is run as given.")
@click.option("--per-node-timeout", type=Seconds(1, 86400), default=120.0,
              show_default=True, metavar="SECONDS", help="One node's own budget.")
@click.option("--level", type=click.Choice(["full", "quick"]), default="full",
              show_default=True, help="The diagnose level run on each node.")
@click.option("--fidoctor", "remote", default="fidoctor", show_default=True, metavar="CMD",
              help="How fidoctor is run on the nodes.")
@click.option("--python", "node_python", metavar="PATH",
              help="The serving venv's interpreter on each node (passed on: diagnose --python "
              "PATH); without it each node diagnoses fidoctor's own there.")
@click.option("--parallel", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="ssh: at most this many nodes at once.")
def command(reports, as_json, as_md, timeout, hostfile, slurm, ray_address, ray_python,
            per_node_timeout, level, remote, node_python, parallel) -> int:
    """Group many nodes' reports by verdict; find shared caches, drift and stragglers.

    \b
    REPORTS are diagnose --json outputs or snapshots (replayed here): files,
    directories of *.json / *.jsonl, or - for stdin (JSON lines, or reports
    one after another: cat reports/*.json | fidoctor fleet -). A line
    {"node": NAME, "unreachable": REASON} lists a node that did not answer.
    --ssh HOSTFILE / --slurm / --ray [ADDRESS] collect the reports instead
    (fidoctor installed on the nodes); the slowest node never holds the summary
    back past --timeout.
    Exit codes: 0 every node healthy · 1 a problem somewhere (or a node that
    did not answer) · 2 no node answered.
    """
    from fidoctor.fleet.load import load
    from fidoctor.fleet.report import build, markdown, text

    if as_json and as_md:
        raise click.UsageError("--json and --markdown contradict each other; pick one")
    if sum(bool(x) for x in (hostfile, slurm, ray_address)) > 1:
        raise click.UsageError("--ssh, --slurm and --ray each collect a fleet; pick one")
    if ray_address and len(ray_python.split()) == 1:
        # one word: an interpreter, run as `<it> -c <driver>`: never a shell or a program (a
        # command such as `uv run python` is the user's own composition and is run as given)
        import shutil

        from fidoctor import pyexe

        found = ray_python if "/" in ray_python else shutil.which(ray_python)
        pyexe.check(found or ray_python, what="--ray-python",
                    hint="pass the Python that has ray, e.g. --ray-python /opt/ray/bin/python")
    if node_python and not (hostfile or slurm or ray_address):
        raise click.UsageError("--python names the nodes' interpreter for --ssh, --slurm or "
                               "--ray; reports already say which they diagnosed")
    if hostfile or slurm or ray_address:
        from fidoctor.fleet.collect import collect

        loaded = collect(hostfile, slurm, ray_address, ray_python, list(reports), timeout,
                         per_node_timeout, level, remote, parallel, node_python)
    else:
        loaded = load(list(reports), stdin_timeout=timeout)
    rep = build(loaded)
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=1))
    elif as_md:
        click.echo(markdown(rep), nl=False)
    else:
        click.echo(text(rep))
    return rep.exit_code
