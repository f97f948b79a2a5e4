"""``fidoctor fix``: plan the smallest change per finding, apply it as a transaction, prove it.

Exit codes: 0 every addressed finding is gone (or nothing needed fixing);
1 a plan was shown but not applied (no terminal and no ``--yes``, declined,
``--dry-run`` with something to do) or a finding survived the fix; 2 fidoctor
could not do its job (the change was reverted, or ``fidoctor undo`` recovers it),
or an ``--only``/``--skip``/``--use`` id that does not exist.
With ``--json`` the narrative goes to stderr and stdout holds one object
(``fidoctor/schema/fix.schema.json``): status, plan, steps, proof, txid.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Tuple

import click

from fidoctor.commands._common import live_target_options, make_context
from fidoctor.completion import complete_finding_ids, complete_fix_ids

_JSON: Dict[str, Any] = {}


def _echo(s: str = "") -> None:
    from fidoctor.textsafe import terminal

    # paths in plans and proofs: no raw control characters; with --json, stdout is the object
    click.echo(terminal(s), err=bool(_JSON))


def _done(code: int, status: str, **fields: Any) -> int:
    if _JSON:
        _JSON.update(fields, status=status, exit_code=code)
        click.echo(json.dumps(_JSON, indent=2, default=str))
    return code


@click.command("fix")
@live_target_options
@click.option("-y", "--yes", is_flag=True, help="Apply without asking (needed without a TTY).")
@click.option("--dry-run", is_flag=True, help="Show the plan only; change nothing.")
@click.option("--only", multiple=True, metavar="ID", help="Fix only findings with this id.",
              shell_complete=complete_finding_ids)
@click.option("--skip", multiple=True, metavar="ID", help="Leave findings with this id alone.",
              shell_complete=complete_finding_ids)
@click.option("--use", "prefer", multiple=True, metavar="FIX", shell_complete=complete_fix_ids,
              help="Prefer this fix id where a finding offers it (e.g. replace-pip-cudart).")
@click.option("--no-warmup", is_flag=True,
              help="Prove by re-diagnosing only; skip the guarded warmup of affected modules.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object on stdout (plan, steps, proof, txid); the narrative on stderr.")
def command(python, pid, deep, yes, dry_run, only, skip, prefer, no_warmup, as_json) -> int:
    """Fix what diagnose found: show a plan, apply it (journalled, undoable), prove it."""
    from fidoctor import __version__
    from fidoctor.diagnosis import diagnose
    from fidoctor.errors import FidoctorError
    from fidoctor.fixes import FixContext
    from fidoctor.fixes import _planner as planner
    from fidoctor.fixes import _proof as proof_mod
    from fidoctor.fixes._envfile import apply_env, env_path
    from fidoctor.ids import check_ids, finding_ids, fix_ids
    from fidoctor.paths import state_dir
    from fidoctor.snapshot.runner import gather_snapshot
    from fidoctor.txn import FixLock, apply_steps, interrupted
    from fidoctor.txn.journal import new_txid

    known = finding_ids()
    check_ids("--only", only, known, "finding ids")
    check_ids("--skip", skip, known, "finding ids")
    check_ids("--use", prefer, fix_ids(), "fix ids")
    _JSON.clear()
    if as_json:
        _JSON.update(schema_version=1, fidoctor_version=__version__, txid=None, plan=[],
                     unaddressed=[], steps=[], env_lines=[], notes=[], proof=None)
    state = state_dir()
    ctx = make_context(python, pid, deep)
    _JSON.update(target={"python": ctx.python, "pid": ctx.pid, "source": ctx.python_source}
                 ) if as_json else None
    with FixLock(state, "fidoctor fix"):
        stuck = interrupted(state)
        if stuck:
            raise FidoctorError(
                f"fix {stuck[-1].txid} was interrupted before it finished",
                "recover it first with: fidoctor undo   (then run fidoctor fix again)")
        diag = diagnose(gather_snapshot(ctx))
        chosen = planner.select(diag.findings, only, skip)
        if not chosen and diag.exit_code == 2:
            # diagnose says "not checked": "nothing to fix" would pass an unexamined box
            _echo(f"Not checked: {diag.unchecked}; nothing was changed.")
            return _done(2, "not-checked", notes=[f"not checked: {diag.unchecked}"])
        if not chosen:
            _echo("Nothing to fix: no matching problem findings.")
            return _done(0, "nothing-to-fix")
        txid = new_txid()
        fctx = FixContext(txid=txid, state=state, env=dict(ctx.env), python=ctx.python,
                          snapshot=diag.snapshot, pid=ctx.pid, flashinfer_root=ctx.flashinfer_root,
                          requested=tuple(prefer))
        fp = planner.make_plans(chosen, fctx, prefer)
        _echo(f"fidoctor fix — plan {txid} for {ctx.python}")
        _echo(planner.render(fp, state))
        _JSON.update(txid=txid, plan=[p.to_dict() for p in fp.plans],
                     unaddressed=[{"finding": f.id, "subject": f.subject, "why": why}
                                  for f, why in fp.unaddressed],
                     env_lines=list(fp.env_lines)) if as_json else None
        if not fp.steps:
            _echo("\nNothing fidoctor can change automatically; see the advice above.")
            return _done(1, "advice-only", txid=None)
        if dry_run:
            _echo("\n--dry-run: nothing was changed.")
            return _done(1, "dry-run", txid=None)
        if not yes:
            if not sys.stdin.isatty():
                _echo("\nNot applied: no terminal to confirm on. Re-run with --yes to apply.")
                return _done(1, "not-confirmed", txid=None)
            if not click.confirm("\nApply this plan?", default=False, err=as_json):
                _echo("Not applied.")
                return _done(1, "declined", txid=None)
        header = {"argv": sys.argv[1:], "python": ctx.python, "pid": ctx.pid,
                  "plans": [p.to_dict() for p in fp.plans]}
        out = apply_steps(state, fp.steps, header, txid=txid)
        _echo(f"\napplied fix {txid} ({len(out.done)} change(s)); undo with: fidoctor undo")
        notes = list(dict.fromkeys(n for p in fp.to_apply for n in p.notes))
        for n in notes:
            _echo(f"note: {n}")
        _JSON.update(steps=list(out.done), notes=notes) if as_json else None
        if fp.env_lines:
            _echo(f"\nStart the server with this environment:  . {env_path(state)}")
            for line in fp.env_lines:
                _echo(f"    {line}")
        try:
            code = _prove(ctx, diag, fp, no_warmup, apply_env, gather_snapshot, diagnose,
                          proof_mod)
        except FidoctorError as e:
            _echo(f"\nproof failed: {e.message}. The fix stays applied; revert it with: "
                  "fidoctor undo")
            return _done(1, "proof-failed", proof={"ok": False, "error": e.message})
        return _done(code, "fixed" if code == 0 else "not-fixed")


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
        from fidoctor.targetargs import arch_of

        # the same target as the diagnosis: its interpreter, its environment, its arch
        proof.warmup, proof.warmup_ok = proof_mod.run_warmup(ctx.python, env, modules,
                                                             arch=arch_of(before.snapshot))
    _echo("")
    _echo(proof_mod.render(proof))
    if _JSON:
        _JSON["proof"] = {"ok": proof.ok, "target": {"python": ctx2.python, "pid": ctx2.pid},
                          "rows": [{"finding": r[0], "subject": r[1], "before": r[2],
                                    "after": r[3]} for r in proof.rows],
                          "remaining": [{"finding": i, "subject": s} for i, s in proof.remaining],
                          "warmup": proof.warmup, "warmup_ok": proof.warmup_ok}
    if proof.ok:
        _echo("\nfixed: every addressed finding is gone.")
        return 0
    left = ", ".join(f"{i} {s}".strip() for i, s in proof.remaining) or "warmup failed"
    _echo(f"\nnot fixed: {left}. The change stays applied; revert it with: fidoctor undo")
    return 1
