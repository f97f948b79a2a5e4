"""cuda-toolkit-unusable: the CUDA toolkit FlashInfer would build with cannot build.

What: the directory FlashInfer resolves (CUDA_HOME, CUDA_PATH, ``which nvcc``,
/usr/local/cuda — in that order, with the target's environment) is malformed
(``:/usr/local/cuda-12.8``, a relative path), does not exist, has no runnable
``bin/nvcc`` (absent, not executable, failing, hanging), or lacks
``lib64/libcudart.so`` or ``include/cuda_runtime.h``. A common case: no
CUDA_HOME and ``/usr/local/bin/nvcc`` is a wrapper, so cuda_home becomes
``/usr/local`` and every build gets ``-isystem /usr/local/include``.
Why: the first cold build fails (``Could not find nvcc``, ``cuda_runtime.h: No
such file``, ``cannot find -lcudart``) — often after minutes of silence — and a
malformed value is baked into build.ninja (VLLM#36077, FI#1793).
Fix: ``export CUDA_HOME=<a complete toolkit>`` in the server's environment
(fix id ``cuda-home-advice``, safe, advice only); modules whose build.ninja
recorded the bad cuda_home are rebuilt (``quarantine-module``).

``data`` keys: toolkit_path, source (CUDA_HOME/CUDA_PATH/which nvcc/default),
value (the raw setting), missing (codes: malformed, dir, nvcc, libcudart,
headers), suggested_cuda_home (a usable toolkit here, or null), module_dirs
(modules whose build.ninja recorded this cuda_home), module_dir (the one such
module when there is exactly one, else null).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional

from fidoctor.flashinfer import cudart as rules
from fidoctor.model import Finding, Fix
from fidoctor.probes._facts import iter_modules, quote
from fidoctor.snapshot import Snapshot

ID = "cuda-toolkit-unusable"
REQUIRES = ("toolkit",)
CAUSE = True


def _problems(t: Dict[str, Any]) -> List[tuple]:
    out = []
    bad = [p for p in t.get("problems") or [] if not p.startswith("ends with '/'")]
    if bad:
        out.append(("malformed", f"the value {t['path']!r} " + "; ".join(bad)))
    if not t.get("exists"):
        out.append(("dir", f"{t['path']} is not a directory ({t.get('kind')})"))
    nv = t.get("nvcc") or {}
    if nv.get("kind") == "absent":
        out.append(("nvcc", f"{nv.get('path')} does not exist"))
    elif nv.get("error"):
        out.append(("nvcc", f"{nv.get('path')}: {nv['error']}"))
    elif nv and (nv.get("timed_out") or not nv.get("ok") or not nv.get("version")):
        why = "hung (killed after the timeout)" if nv.get("timed_out") else nv.get("result")
        out.append(("nvcc", f"{nv.get('path')} --version: {why}"))
    lib = t.get("libcudart") or {}
    if lib.get("kind") == "absent":
        out.append(("libcudart", f"{lib.get('path')} does not exist (the link needs -lcudart)"))
    elif lib.get("error"):
        out.append(("libcudart", f"{lib.get('path')}: {lib['error']}"))
    if not (t.get("headers") or {}).get("cuda_runtime.h"):
        out.append(("headers", f"{os.path.join(t['path'], 'include', 'cuda_runtime.h')} "
                               "does not exist"))
    return out


def _suggest(snap: Snapshot, bad: str) -> Optional[Dict[str, Any]]:
    """A complete toolkit here, preferring torch's CUDA major."""
    tk = snap.data("toolkit")
    torch = rules.major_minor((snap.data("target").get("torch") or {}).get("cuda"))
    good = [t for t in tk.get("installed") or []
            if t.get("has_nvcc") and t.get("has_libcudart") and t["path"] != bad]
    good.sort(key=lambda t: (torch is not None and (rules.major_minor(t.get("version"))
                                                   or (0, 0))[0] != torch[0],
                             t["path"]))
    return good[0] if good else None


def _link_problem(snap: Snapshot) -> Optional[Dict[str, Any]]:
    """The link facts when nothing provides ``-lcuda`` (only judged when the search dirs are
    all known; the toolchain section is absent in snapshots older than this check)."""
    sec = snap.section("toolchain")
    link = (sec.data or {}).get("link") if sec is not None and sec.ok else None
    if not link or link.get("found") or link.get("errors") or not link.get("dirs"):
        return None
    return link


def _link_text(link: Dict[str, Any]) -> str:
    own = [f"{d['dir']} ({d['source']})" for d in link["dirs"]
           if d["source"] not in ("c++ -print-search-dirs", "ld's SEARCH_DIR")]
    dflt = [d["dir"] for d in link["dirs"]
            if d["source"] in ("c++ -print-search-dirs", "ld's SEARCH_DIR")]
    return ("nothing to link -lcuda against (FlashInfer links every module with -lcuda): no "
            f"libcuda.so in {', '.join(own)}, nor in the linker's {len(dflt)} default dirs "
            f"({', '.join(dflt[:6])}{', …' if len(dflt) > 6 else ''})")


def _stub_env(snap: Snapshot, link: Dict[str, Any]) -> Dict[str, str]:
    """FLASHINFER_EXTRA_LDFLAGS with ``-L`` of a stub dir found on this machine, or {}."""
    stubs = link.get("stubs_elsewhere") or []
    if not stubs:
        return {}
    env = snap.context.get("env") or {}
    d = os.path.dirname(stubs[0])
    return {"FLASHINFER_EXTRA_LDFLAGS": (env.get("FLASHINFER_EXTRA_LDFLAGS", "") + f" -L{d}").strip()}


def _libcuda_fixes(snap: Snapshot, link: Dict[str, Any]) -> List[Fix]:
    stubs = link.get("stubs_elsewhere") or []
    out = []
    env = _stub_env(snap, link)
    if env:
        value = env["FLASHINFER_EXTRA_LDFLAGS"]
        out.append(Fix(id="link-libcuda-stub", safety="safe",
                       description=f"Link against the CUDA stub library {stubs[0]} (link time "
                       "only: at run time the driver's libcuda.so.1 is used)",
                       commands=[f"export FLASHINFER_EXTRA_LDFLAGS={quote(value)}"]))
    out.append(Fix(description="Install the NVIDIA driver's libcuda.so (or a CUDA toolkit "
                   "with lib64/stubs/libcuda.so), or point FLASHINFER_EXTRA_LDFLAGS=-L<dir> at a "
                   "dir holding one", safety="caution"))
    return out


def check(snap: Snapshot) -> Iterable[Finding]:
    tk = snap.data("toolkit")
    t, res = tk.get("toolkit"), tk.get("resolution") or {}
    if not t:
        return
    problems = _problems(t)
    link = _link_problem(snap) if t.get("exists") else None
    if link:
        problems.append(("libcuda", _link_text(link)))
    if not problems:
        return
    if [code for code, _ in problems] == ["libcuda"]:
        assert link is not None
        yield Finding(
            id=ID, severity="error", subject=t["path"], fixes=_libcuda_fixes(snap, link),
            evidence=["FlashInfer's CUDA_HOME resolution: " + "; ".join(res.get("steps") or []),
                      _link_text(link)],
            title=f"the CUDA toolkit FlashInfer would use ({t['path']}) cannot link: nothing "
                  "provides -lcuda (builds end in 'cannot find -lcuda')",
            data={"toolkit_path": t["path"], "source": res.get("source"),
                  "value": res.get("value"), "missing": ["libcuda"],
                  "suggested_cuda_home": None, "module_dirs": [], "module_dir": None,
                  "libcuda_searched": [d["dir"] for d in link["dirs"]],
                  "stub": (link.get("stubs_elsewhere") or [None])[0],
                  "env": _stub_env(snap, link), "affects": ["*"]})
        return
    evidence = ["FlashInfer's CUDA_HOME resolution: " + "; ".join(res.get("steps") or [])]
    evidence += [msg for _, msg in problems]
    evidence += [f"note: {p}" for p in t.get("problems") or [] if p.startswith("ends with")]
    sug = _suggest(snap, t["path"])
    mods = [m["path"] for _, m in iter_modules(snap)
            if (m.get("ninja_vars") or {}).get("cuda_home") == t["path"]]
    fixes = []
    if sug:
        cmds = [f"export CUDA_HOME={quote(sug['path'])}"]
        if res.get("source") in ("CUDA_HOME", "CUDA_PATH"):
            cmds.insert(0, f"# replace {res['source']}={res.get('value')!r} in the server's "
                           "environment with:")
        fixes.append(Fix(id="cuda-home-advice", safety="safe", commands=cmds,
                         description=f"Point FlashInfer at the complete toolkit {sug['path']} "
                         f"(CUDA {sug.get('version') or '?'}) in the server's environment"))
    else:
        fixes.append(Fix(id="cuda-home-advice", safety="safe",
                         commands=["apt-get install cuda-toolkit",
                                                  "export CUDA_HOME=/usr/local/cuda"],
                         description="Install a full CUDA toolkit (nvcc, headers, libcudart) "
                         "or use prebuilt kernels (flashinfer-jit-cache) so nothing is compiled"))
    if link:
        fixes += _libcuda_fixes(snap, link)
    for m in mods:
        fixes.append(Fix(id="quarantine-module", safety="safe",
                         description=f"Rebuild {os.path.basename(m)}: its build.ninja "
                         f"recorded cuda_home = {t['path']}",
                         commands=[f"fidoctor fix --only {ID}"]))
    missing = [code for code, _ in problems]
    yield Finding(
        id=ID, severity="error", subject=t["path"], evidence=evidence, fixes=fixes,
        title=f"the CUDA toolkit FlashInfer would use ({t['path']}, from "
        f"{res.get('source')}) is unusable: {', '.join(missing)}",
        data={"toolkit_path": t["path"], "source": res.get("source"), "value": res.get("value"),
              "missing": missing, "suggested_cuda_home": sug["path"] if sug else None,
              "module_dirs": mods, "module_dir": mods[0] if len(mods) == 1 else None,
              "affects": ["*"]})
