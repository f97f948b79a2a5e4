"""``fidoctor fix``: plan the smallest change per finding, apply it as a transaction, prove it.

Exit codes: 0 every addressed finding is gone (or nothing needed fixing);
1 a plan was shown but not applied (no terminal and no ``--yes``, declined,
``--dry-run`` with something to do) or a finding survived the fix; 2 fidoctor
could not do its job (the change was reverted, or ``fidoctor undo`` recovers it).
"""

from __future__ import annotations

import sys
from typing import List, Tuple

import click

from fidoctor.commands._common import PID, PID_HELP, make_context


def _echo(s: str = "") -> None:
    from fidoctor.textsafe import terminal

    click.echo(terminal(s))  # paths in plans and proofs: no raw control characters


@click.command("fix")
@click.option("--python", "python", metavar="PATH",
              help="Interpreter of the serving environment (as in diagnose).")
@click.option("--pid", type=PID, metavar="PID|auto", help=PID_HELP)
@click.option("--deep", is_flag=True, help="Also import torch in the target to confirm.")
@click.option("-y", "--yes", is_flag=True, help="Apply without asking (needed without a TTY).")
@click.option("--dry-run", is_flag=True, help="Show the plan only; change nothing.")
@click.option("--only", multiple=True, metavar="ID", help="Fix only findings with this id.")
@click.option("--skip", multiple=True, metavar="ID", help="Leave findings with this id alone.")
@click.option("--use", "prefer", multiple=True, metavar="FIX",
              help="Prefer this fix id where a finding offers it (e.g. replace-pip-cudart).")
@click.option("--no-warmup", is_flag=True,
              help="Prove by re-diagnosing only; skip the guarded warmup of affected modules.")
def command(python, pid, deep, yes, dry_run, only, skip, prefer, no_warmup) -> int:
    """Fix what diagnose found: show a plan, apply it (journalled, undoable), prove it."""
    from fidoctor.diagnosis import diagnose
    from fidoctor.errors import FidoctorError
    from fidoctor.fixes import FixContext
    from fidoctor.fixes import _planner as planner
    from fidoctor.fixes import _proof as proof_mod
    from fidoctor.fixes._envfile import apply_env, env_path
    from fidoctor.paths import state_dir
    from fidoctor.snapshot.runner import gather_snapshot
    from fidoctor.txn import FixLock, apply_steps, interrupted
    from fidoctor.txn.journal import new_txid

    state = state_dir()
    ctx = make_context(python, pid, deep)
    with FixLock(state, "fidoctor fix"):
        stuck = interrupted(state)
        if stuck:
            raise FidoctorError(
                f"fix {stuck[-1].txid} was interrupted before it finished",
                "recover it first with: fidoctor undo   (then run fidoctor fix again)")
        diag = diagnose(gather_snapshot(ctx))
        chosen = planner.select(diag.findings, only, skip)
        if not chosen:
            _echo("Nothing to fix: no matching problem findings.")
            return 0
        txid = new_txid()
        fctx = FixContext(txid=txid, state=state, env=dict(ctx.env), python=ctx.python,
                          snapshot=diag.snapshot, pid=ctx.pid, flashinfer_root=ctx.flashinfer_root,
                          requested=tuple(prefer))
        fp = planner.make_plans(chosen, fctx, prefer)
        _echo(f"fidoctor fix — plan {txid} for {ctx.python}")
        _echo(planner.render(fp, state))
        if not fp.steps:
            _echo("\nNothing fidoctor can change automatically; see the advice above.")
            return 1
        if dry_run:
            _echo("\n--dry-run: nothing was changed.")
            return 1
        if not yes:
            if not sys.stdin.isatty():
                _echo("\nNot applied: no terminal to confirm on. Re-run with --yes to apply.")
                return 1
            if not click.confirm("\nApply this plan?", default=False):
                _echo("Not applied.")
                return 1
        header = {"argv": sys.argv[1:], "python": ctx.python, "pid": ctx.pid,
                  "plans": [p.to_dict() for p in fp.plans]}
        out = apply_steps(state, fp.steps, header, txid=txid)
        _echo(f"\napplied fix {txid} ({len(out.done)} change(s)); undo with: fidoctor undo")
        for n in dict.fromkeys(n for p in fp.to_apply for n in p.notes):
            _echo(f"note: {n}")
        if fp.env_lines:
            _echo(f"\nStart the server with this environment:  . {env_path(state)}")
            for line in fp.env_lines:
                _echo(f"    {line}")
        try:
            return _prove(ctx, diag, fp, no_warmup, apply_env, gather_snapshot, diagnose,
                          proof_mod)
        except FidoctorError as e:
            _echo(f"\nproof failed: {e.message}. The fix stays applied; revert it with: "
                  "fidoctor undo")
            return 1


def _prove(ctx, before, fp, no_warmup, apply_env, gather_snapshot, diagnose, proof_mod) -> int:
    """Re-diagnose with the environment the fix asks for, warm up, compare; the exit code."""
    from fidoctor.snapshot.context import GatherContext

    env = apply_env(ctx.env, fp.env)
    ctx2 = GatherContext(env=env, python=ctx.python, python_source=ctx.python_source,
                         pid=ctx.pid, deep=ctx.deep)
    after = diagnose(gather_snapshot(ctx2))
    addressed: List[Tuple[str, str]] = [(p.finding_id, p.subject) for p in fp.to_apply]
    proof = proof_mod.compare(before.findings, after.findings, addressed)
    modules = sorted({m for p in fp.to_apply for m in p.modules})
    if no_warmup:
        proof.warmup = "skipped (--no-warmup)"
    elif modules:
        proof.warmup, proof.warmup_ok = proof_mod.run_warmup(ctx.python, env, modules)
    _echo("")
    _echo(proof_mod.render(proof))
    if proof.ok:
        _echo("\nfixed: every addressed finding is gone.")
        return 0
    left = ", ".join(f"{i} {s}".strip() for i, s in proof.remaining) or "warmup failed"
    _echo(f"\nnot fixed: {left}. The change stays applied; revert it with: fidoctor undo")
    return 1
