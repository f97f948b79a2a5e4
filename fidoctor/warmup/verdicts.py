"""Finding-shaped verdicts for a module that failed, stalled or timed out.

They speak the probes' vocabulary (model.Finding: id, evidence, fixes, data)
so ``fidoctor fix`` and ``--json`` consumers read them like any diagnosis.
Ids: ``warmup-stalled`` (data.cause: ``lock-held`` | ``process-blocked``),
``warmup-timed-out``, ``warmup-build-failed``.
"""

from __future__ import annotations

from typing import List

from fidoctor.flashinfer.builds import COMPILERS
from fidoctor.model import Finding, Fix
from fidoctor.warmup.result import ModuleResult


def _data(res: ModuleResult, **kw) -> dict:
    d = {"module": res.name, "module_dir": res.module_dir, "key": res.key}
    d.update(kw)
    return d


def stalled_on_lock(res: ModuleResult, after: float, lock: str, holder: str,
                    tree: List[str]) -> Finding:
    pid = holder.split()[1] if holder.startswith("pid ") else "?"
    return Finding(
        id="warmup-stalled", severity="error", subject=res.name or res.key,
        title=f"{res.key}: waited {after:.0f} s on the module lock held by another process "
              "that is doing nothing",
        evidence=[f"lock {lock} is held (flock, /proc/locks) by {holder}",
                  f"no CPU and no new files for {after:.0f} s in our tree or the holder's",
                  *[f"our tree: {t}" for t in tree]],
        fixes=[Fix("see what the holder is; if it is a dead or stuck server, stop it — the "
                   "kernel drops the flock when it exits — then warm up again",
                   [f"ps -o pid,stat,etime,wchan:30,cmd -p {pid}", f"kill {pid}",
                    "fidoctor warmup"], safety="caution")],
        data=_data(res, cause="lock-held", lock_path=lock, holder_pid=_int(pid)),
    )


def stalled_blocked(res: ModuleResult, after: float, leaf: str, tree: List[str]) -> Finding:
    what = leaf or "the target interpreter"
    words = {w.rsplit("/", 1)[-1] for w in leaf.replace("`", " ").split()}
    compiler = bool(words & COMPILERS)
    return Finding(
        id="warmup-stalled", severity="error", subject=res.name or res.key,
        title=f"{res.key}: {'the compiler' if compiler else 'the build'} made no progress for "
              f"{after:.0f} s (no CPU, no new files); stopped",
        evidence=[f"blocked: {what}", *[f"tree: {t}" for t in tree]],
        fixes=[Fix("look at where it blocks (wchan above; a dead NFS mount, a full disk or a "
                   "broken toolkit are usual); `fidoctor diagnose` checks them", ["fidoctor diagnose"]),
               Fix("if the machine is merely overloaded, allow a longer quiet period",
                   [f"fidoctor warmup --stall-after {int(after * 4)}"])],
        data=_data(res, cause="process-blocked", blocked=leaf),
    )


def timed_out(res: ModuleResult, timeout: float, tree: List[str]) -> Finding:
    return Finding(
        id="warmup-timed-out", severity="error", subject=res.name or res.key,
        title=f"{res.key}: still compiling after {timeout:.0f} s (--timeout); stopped",
        evidence=[f"busy for {timeout:.0f} s; peak tree RSS {res.peak_rss / 2**30:.1f} GiB",
                  *[f"tree: {t}" for t in tree]],
        fixes=[Fix("give it more time, or fewer parallel jobs if memory was short",
                   [f"fidoctor warmup --modules {res.key} --timeout {int(timeout * 3)}"])],
        data=_data(res, cause="timeout"),
    )


# The line a failed build quotes (child.ERROR_PATTERNS picks it), and the cause probe that
# judges the same thing before any build; named only when this fidoctor has that probe.
CAUSE_FINDINGS = (
    ("No space left on device", "disk-space-low"),
    ("Read-only file system", "cache-not-writable"),
    ("Permission denied", "cache-not-writable"),
    ("unsupported GNU version", "host-compiler-unsupported"),
    ("cannot find -lcuda", "libcuda-missing"),
    ("Unsupported gpu architecture", "nvcc-arch-unsupported"),
    ("Unknown option", "nvcc-flag-unsupported"),
)


def cause_finding(error: str) -> str:
    """The registered cause probe that names what this error line says ('' when none)."""
    from fidoctor.probes import all_probes

    known = {p.id for p in all_probes()}
    return next((fid for pat, fid in CAUSE_FINDINGS if pat in error and fid in known), "")


def failed(res: ModuleResult) -> Finding:
    cause = cause_finding(res.error)
    look = (f"`fidoctor diagnose` checks this cause first ({cause})" if cause else
            "`fidoctor diagnose` names the usual causes (toolkit, headers, libcuda, "
            "permissions, disk)")
    return Finding(
        id="warmup-build-failed", severity="error", subject=res.name or res.key,
        title=f"{res.key}: build failed: {res.error[:200]}",
        evidence=[f"the line naming the cause: {res.error}"],
        fixes=[Fix(look, ["fidoctor diagnose"])],
        data=_data(res, cause="build-failed", error=res.error, cause_finding=cause or None),
    )


def _int(s: str):
    try:
        return int(s)
    except ValueError:
        return None
