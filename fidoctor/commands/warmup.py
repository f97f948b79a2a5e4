"""``fidoctor warmup``: compile FlashInfer's usual modules in the target, guarded.

Exit codes: 0 all modules compiled (or already cached); 1 some failed,
stalled or timed out; 2 could not start (no FlashInfer in the target, bad
arguments); 130 interrupted (after the same clean-up).
"""

from __future__ import annotations

import json
import os
import time

import click

from fidoctor.commands._common import ArchList, Seconds, arch_list_problem
from fidoctor.completion import complete_module_kinds
from fidoctor.textsafe import shown

FA3_ADVICE = (
    "FA3 is FlashInfer's choice, not a switch: its prefill wrappers default to backend='auto', "
    "and {fn} picks 'fa3' on compute capability 9.x with torch CUDA >= 12.3. It reads "
    "{envs}; {mentions}. What keeps a server off FA3: the wrapper argument backend='fa2' "
    "(code), or a non-FlashInfer prefill/attention backend in the serving stack "
    "(SGLang --attention-backend, vLLM --attention-backend / VLLM_ATTENTION_BACKEND).")


def fa3_advice(target: dict) -> str:
    f = target.get("fa3") or {}
    envs = ", ".join(f.get("env_vars_read") or []) or "no environment variable"
    m = f.get("disable_sm90_mentions")
    mentions = ("FLASHINFER_DISABLE_SM90 appears nowhere in flashinfer " + str(target.get("version"))
                if m == [] else f"DISABLE_SM90 appears in {', '.join(m or ['?'])}")
    return FA3_ADVICE.format(fn=f.get("function") or "determine_attention_backend()",
                             envs=envs, mentions=mentions)


@click.command("warmup")
@click.option("--python", "python", metavar="PATH",
              help="Interpreter of the serving environment (default: active venv/conda).")
@click.option("--modules", metavar="SPECS", shell_complete=complete_module_kinds,
              help="Comma list: KIND[:DTYPE[:HEAD_DIM]] or full module names; '+spec' adds "
              "to the default set. KIND: decode, prefill-fa2, prefill-fa3, single-decode, "
              "single-prefill-fa2, single-prefill-fa3.")
@click.option("--list", "list_only", is_flag=True, help="Show the module set and exit.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Ask the target what it would compile here (cached, prebuilt, to build) and "
              "how long it would take; build nothing.")
@click.option("--arch", metavar="LIST", type=ArchList(),
              help="FLASHINFER_CUDA_ARCH_LIST for the build, e.g. 9.0a: lets a box without a "
              "GPU build (modules are loaded only where a GPU is).")
@click.option("--jobs", type=click.IntRange(1, 256),
              help="Compile jobs in all, shared by the modules built at once (default: cores, "
              "lowered when memory is short).")
@click.option("--sequential", is_flag=True,
              help="One module at a time, in one process (the order of FlashInfer's own use).")
@click.option("--rebuild", is_flag=True,
              help="Rebuild cached modules that this environment would rebuild (the old one "
              "is moved aside first: fidoctor undo brings it back).")
@click.option("--timeout", type=Seconds(min=0, min_open=True), metavar="S",
              help="Hard limit per module (default: 900 decode, 1800 FA2, 3600 FA3).")
@click.option("--stall-after", type=Seconds(min=0, min_open=True), default=60.0, show_default=True,
              metavar="S",
              help="Stop a module when its compiler tree shows no CPU and no new files this long.")
@click.option("--orphans", type=click.Choice(["end", "wait"]), default="end", show_default=True,
              help="Compilers of the same module left by a killed server: end or wait for them.")
@click.option("--no-load", is_flag=True, help="Build only, even on a GPU box.")
@click.option("--check", is_flag=True, help="List compiled and incomplete modules; build nothing.")
@click.option("--clear-incomplete", is_flag=True,
              help="Move incomplete module dirs aside (undoable) and exit.")
@click.option("--disable-sm90", is_flag=True,
              help="Skip FA3 modules and say what really keeps the server off FA3.")
@click.option("--once", "once", metavar="FLAG_FILE",
              help="Skip when FLAG_FILE exists and the modules are cached; write it on success.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def command(python, modules, list_only, plan_only, arch, jobs, sequential, rebuild, timeout, stall_after,
            orphans, no_load, check, clear_incomplete, disable_sm90, once, as_json) -> int:
    """Pre-compile FlashInfer's usual kernels in the target, safely (stall/timeout guarded)."""
    from fidoctor.errors import FidoctorError
    from fidoctor.warmup import cache

    if sum(bool(x) for x in (list_only, plan_only, check, clear_incomplete)) > 1:
        raise FidoctorError("--list, --plan, --check and --clear-incomplete are exclusive")
    if list_only:
        return _list(modules, arch, disable_sm90, as_json)
    if python:
        from fidoctor import pyexe

        pyexe.check(python)  # warmup runs `<python> child.py …`: never a shell or a program
    if check or clear_incomplete:
        env = dict(os.environ)
        if clear_incomplete:
            from fidoctor.fixes._clear import clear_incomplete as clear
            from fidoctor.paths import state_dir

            out = clear(env, state_dir(env))
            click.echo(json.dumps(out) if as_json else "\n".join(map(shown, out["actions"])))
            return 0
        res = cache.check(env, python=python)
        if as_json:
            click.echo(json.dumps(res.to_dict(), indent=2))
        else:
            click.echo("\n".join(cache.render_check(res, time.time())))
        return res.exit_code
    env_arch = os.environ.get("FLASHINFER_CUDA_ARCH_LIST")
    if not arch and env_arch is not None and arch_list_problem(env_arch):
        raise FidoctorError(
            f"FLASHINFER_CUDA_ARCH_LIST={env_arch!r} is not a list FlashInfer can read: "
            f"{arch_list_problem(env_arch)}; a server started with it fails the same way",
            "set it like FLASHINFER_CUDA_ARCH_LIST='8.0 9.0a' (or pass --arch 9.0a)")
    from fidoctor.snapshot.context import default_python
    from fidoctor.warmup.progress import LineProgress
    from fidoctor.warmup.runner import run_warmup

    py = python or default_python(dict(os.environ))[0]
    if plan_only:
        from fidoctor.warmup.plan import make_plan, render
        from fidoctor.warmup.supervisor import Interrupted, install_sigterm

        restore = install_sigterm()  # docker stop / timeout(1): the Ctrl-C clean-up, exit 130
        try:
            doc = make_plan(py, modules, arch, disable_sm90, jobs)
        except Interrupted:
            raise KeyboardInterrupt from None
        finally:
            restore()
        click.echo(json.dumps(doc, indent=2) if as_json else "\n".join(render(doc)))
        return 0
    expect = {"python": os.path.abspath(py), "modules": modules or "",
              "arch": arch or os.environ.get("FLASHINFER_CUDA_ARCH_LIST") or "",
              "disable_sm90": bool(disable_sm90),
              "workspace_base": os.environ.get("FLASHINFER_WORKSPACE_BASE")
              or os.environ.get("HOME") or "",
              "build_env": cache.build_env(os.environ)}
    if once:
        from fidoctor.safeio import check_writable_target

        if os.path.isdir(os.path.dirname(os.path.abspath(once))):  # else made on success
            check_writable_target(once, "--once flag")  # a FIFO, dir or device: exit 2 now
        msg = cache.once_satisfied(once, expect)
        if msg:
            click.echo(json.dumps({"skipped": True, "reason": msg}) if as_json else msg)
            return 0
    progress = LineProgress(tty=False if as_json else None)
    result = run_warmup(python=py, modules=modules, arch=arch, jobs=jobs, timeout=timeout,
                        stall_after=stall_after, disable_sm90=disable_sm90, load=not no_load,
                        orphans=orphans, progress=progress, sequential=sequential,
                        rebuild=rebuild)
    from fidoctor.targetargs import args_for, carry_target

    # the commands its verdicts print act on this same interpreter (and arch, if given)
    carry_target(list(result.findings) + [m.verdict for m in result.modules if m.verdict], None,
                 args_for(py, arch=arch))
    doc = result.to_dict()
    if disable_sm90:
        doc["fa3_advice"] = fa3_advice(result.target)
    pending = [m.key for m in result.modules if m.info.get("rebuild_pending")]
    if once and result.exit_code == 0 and pending:
        # Not warm: the next server start in this environment rebuilds them (and a failed
        # relink leaves no .so). The flag would say "nothing to do" from now on. Found by QA.
        click.echo(f"fidoctor: --once flag {shown(once)} not written: this environment would "
                   f"rebuild {', '.join(pending)} (see above; --rebuild rebuilds it)", err=True)
    elif once and result.exit_code == 0:
        try:
            cache.write_flag(once, doc, expect)
        except FidoctorError as e:  # the kernels are ready; only the shortcut is lost
            click.echo(f"fidoctor: warning: {shown(e.message)}; the next --once run checks "
                       "the cache again", err=True)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        _summary(result, doc)
    return result.exit_code


def _sm90_hint(arch) -> bool:
    a = arch or os.environ.get("FLASHINFER_CUDA_ARCH_LIST", "")
    return any(x.startswith("9.") for x in a.split()) if a else True


def _list(modules, arch, disable_sm90, as_json) -> int:
    from fidoctor.warmup import specs

    known = bool(arch or os.environ.get("FLASHINFER_CUDA_ARCH_LIST"))
    chosen = specs.select(modules, sm90=_sm90_hint(arch), disable_sm90=disable_sm90)
    if as_json:
        click.echo(json.dumps({"modules": [s.to_dict() for s in chosen]}, indent=2))
        return 0
    for s in chosen:
        note = " (Hopper/sm90 only)" if s.is_sm90 and not known else ""
        click.echo(f"{s.key:<26} {s.mem_class:<6} timeout {s.default_timeout:>4} s{note}\n"
                   f"    {s.expected_name()}")
    return 0


def _summary(result, doc) -> None:
    for n in result.notes:
        if "moved aside" in n or "left in place" in n:
            click.echo(n)
    if result.findings:
        from fidoctor.render.style import Styler, use_colour
        from fidoctor.render.text import finding_lines

        styler = Styler(use_colour())
        for f in result.findings:
            click.echo("\n" + "\n".join(finding_lines(f, styler)))
    if "fa3_advice" in doc:
        click.echo("\n--disable-sm90: " + doc["fa3_advice"])
    ok = sum(m.status in ("done", "cached") for m in result.modules)
    click.echo(f"\nwarmup: {ok}/{len(result.modules)} modules ready in {result.seconds:.0f} s")
