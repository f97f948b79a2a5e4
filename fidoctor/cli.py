"""The ``fidoctor`` command: a click group whose commands live one per file.

Commands are discovered from ``fidoctor/commands/*.py`` (file ``foo_bar.py`` →
command ``foo-bar``, object ``command``) and imported only when run, so
``fidoctor --help`` stays instant and adding a command is adding a file.

Exit codes: 0 healthy, 1 problems found, 2 fidoctor could not do its job.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback
from typing import List, Optional

import click

from fidoctor import __version__
from fidoctor.errors import FidoctorError

EXIT_FAILED = 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class _StdoutGone(Exception):
    """stdout was closed under us (``| head -1``): click would turn EPIPE into exit 1."""


def _stdout_gone() -> None:
    """Exit 2 (the output was not delivered), silently: fd 1 is pointed at /dev/null so the
    interpreter's own flush at exit cannot fail again ("Exception ignored", exit 120)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_FAILED)


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError as e:
            raise _StdoutGone() from e

    def list_commands(self, ctx: click.Context) -> List[str]:
        from fidoctor import commands

        return sorted(
            info.name.replace("_", "-")
            for info in pkgutil.iter_modules(commands.__path__)
            if not info.name.startswith("_")
        )

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in self.list_commands(ctx):
            return None
        mod = importlib.import_module(f"fidoctor.commands.{name.replace('-', '_')}")
        return mod.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fidoctor")
def cli() -> None:
    """A doctor for FlashInfer JIT hangs.

    \b
    Exit codes: 0 healthy · 1 problems found · 2 fidoctor could not do its job ·
    130 interrupted (Ctrl-C).
    Start with:  fidoctor diagnose   (or: fidoctor diagnose --pid <hung server pid>)
    """


def main(argv: Optional[List[str]] = None) -> None:
    from fidoctor import selfprocs

    selfprocs.claim_cli()
    _reserve_std_fds()
    try:
        rc = cli.main(args=argv, prog_name="fidoctor", standalone_mode=False)
    except FidoctorError as e:
        from fidoctor.textsafe import shown  # a message can quote a hostile name

        click.echo(f"fidoctor: error: {shown(e.message)}", err=True)
        if e.hint:
            click.echo(f"hint: {shown(e.hint)}", err=True)
        sys.exit(EXIT_FAILED)
    except click.exceptions.Abort as e:
        if isinstance(e.__context__, KeyboardInterrupt):  # Ctrl-C at a prompt
            click.echo("fidoctor: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo("fidoctor: aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:  # everything that holds a resource cleans up on the way out
        click.echo("fidoctor: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (BrokenPipeError, _StdoutGone):
        _stdout_gone()
    except Exception as e:  # noqa: BLE001 - a bug must still exit 2, readably
        click.echo(f"fidoctor: internal error: {type(e).__name__}: {e}", err=True)
        if os.environ.get("FIDOCTOR_DEBUG"):
            traceback.print_exc()
        else:
            click.echo("this is a fidoctor bug; rerun with FIDOCTOR_DEBUG=1 for the traceback",
                       err=True)
        sys.exit(EXIT_FAILED)
    try:
        if sys.stdout is not None:   # None: started with stdout closed (`>&-`)
            sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()
    sys.exit(rc if isinstance(rc, int) else 0)


def _reserve_std_fds() -> None:
    """Started with stdin, stdout or stderr closed (`cmd >&-`): hold /dev/null there, so no
    file fidoctor opens (an --events file, a pipe to the server's forwarder) lands on fd 0-2
    and gets the server's or fidoctor's output. `run -- CMD >&-` ended in a traceback from
    flushing a stdout that is None, and lost the server's exit code."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                nfd = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if nfd != fd:
                os.dup2(nfd, fd)
                os.close(nfd)
