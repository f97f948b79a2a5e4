"""Findings only the fleet can see: a shared cache, versions that drift, a straggler.

fleet-shared-cache
  What: several nodes' FlashInfer cache roots are one directory of one network
  filesystem (same mount source and path inside it, or same fsid and path).
  Why: FlashInfer serialises builds with ``flock`` on ``cached_ops/tmp/*.lock``;
  on NFS ``nolock``/``local_lock``, Lustre ``localflock``, CIFS ``nobrl``, 9p and
  most FUSE filesystems that lock is node-local, so two nodes build one module
  into one dir at once (half-written ``.so``, ``Stale file handle``). Coherent
  locks (NFS lockd, Lustre ``flock``, GPFS) still serialise every node's builds
  behind one lock and leave stuck locks when a client dies.
  Fix: a node-local ``FLASHINFER_WORKSPACE_BASE`` on every node (``fidoctor fix
  --only cache-on-network-fs`` on each); share built modules with
  ``fidoctor cache export``/``import`` instead.

fleet-version-drift
  What: FlashInfer, torch, torch's CUDA, the pip CUDA runtime, the toolkit, the
  driver, the ``cuda_home`` string or the cache's arch dirs differ between nodes.
  Why: each variant builds its own modules (a ``cuda_home`` string or version is
  part of build.ninja and of the cache path), so a job spread across them
  rebuilds, or fails, on some nodes only.
  Fix: install the same image/venv on every node; the odd ones are named.

fleet-straggler
  What: modules warm (a loadable ``.so``) on most nodes are cold on a few.
  Why: those nodes JIT-build at first call while the rest serve; in a
  tensor/expert-parallel job every rank then waits for the slowest node.
  Fix: ``fidoctor warmup`` on the named nodes, or ``fidoctor cache import`` of
  a bundle exported from a warm node.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Tuple

from fidoctor.fleet.group import hostlist
from fidoctor.fleet.load import Node

FIELDS = ("flashinfer", "torch", "torch_cuda", "cuda_runtime", "toolkit", "driver",
          "cuda_home", "arch_dirs")
LABEL = {"flashinfer": "FlashInfer", "torch": "torch", "torch_cuda": "torch's CUDA",
         "cuda_runtime": "pip CUDA runtime", "toolkit": "CUDA toolkit", "driver": "driver",
         "cuda_home": "cuda_home", "arch_dirs": "cache arch dirs"}
IDS = ("fleet-shared-cache", "fleet-version-drift", "fleet-straggler")
NODE_LOCAL = ("local to this", "local only", "does not exclude", "fails")
STRAGGLER_SHARE = 0.25  # at most this share of the nodes may be cold for it to be a straggler


def _finding(id_: str, severity: str, subject: str, title: str, evidence: List[str],
             nodes: List[str], data: Dict[str, Any], fix: str) -> Dict[str, Any]:
    from fidoctor.findingdocs import doc_ref

    return {"id": id_, "severity": severity, "subject": subject, "title": title,
            "evidence": evidence, "nodes": sorted(nodes), "data": data, "fix": fix,
            "doc": doc_ref(id_)}


def shared_cache(nodes: List[Node]) -> List[Dict[str, Any]]:
    from fidoctor.probes._fsfacts import lock_semantics

    by: Dict[Tuple, List[Tuple[Node, Dict[str, Any]]]] = defaultdict(list)
    for n in nodes:
        c = n.facts.get("cache")
        if not isinstance(c, dict) or not c.get("network"):
            continue
        by[("src", c.get("source"), c.get("root_in_fs"))].append((n, c))
    if any(c.get("fsid") for cs in by.values() for _, c in cs):
        # one export spelled two ways (server name vs address): the fsid still matches
        merged: Dict[Tuple, List[Tuple[Node, Dict[str, Any]]]] = defaultdict(list)
        for key, members in by.items():
            fsid = members[0][1].get("fsid")
            merged[("fsid", fsid, key[2]) if fsid else key].extend(members)
        by = merged
    out = []
    for members in by.values():
        if len({n.name for n, _ in members}) < 2:
            continue
        c = members[0][1]
        locks = lock_semantics(str(c.get("fstype") or ""), list(c.get("options") or []))
        local = any(w in locks for w in NODE_LOCAL)
        names = [n.name for n, _ in members]
        sources = sorted({str(cc.get("source")) for _, cc in members})
        out.append(_finding(
            "fleet-shared-cache", "error" if local else "warning", str(c.get("root_in_fs")),
            f"{len(names)} nodes share one FlashInfer cache on {c.get('fstype')} "
            f"({', '.join(sources)}:{c.get('root_in_fs')})" +
            (": build locks do not hold across nodes" if local else
             ": every node's builds queue behind one lock"),
            [f"{hostlist(names, 200)}: cache root {c.get('root')} on {c.get('mount_point')} "
             f"({c.get('fstype')} from {', '.join(sources)}, options "
             f"{','.join(c.get('options') or [])})", f"lock semantics: {locks}"],
            names, {"fstype": c.get("fstype"), "sources": sources,
                    "path": c.get("root_in_fs"), "fsid": c.get("fsid"), "locks": locks,
                    "node_local_locks": local},
            "a node-local FLASHINFER_WORKSPACE_BASE on every node (fidoctor fix --only "
            "cache-on-network-fs); share built modules with fidoctor cache export/import"))
    return out


def _value(n: Node, fld: str) -> Optional[str]:
    v = (n.facts.get("versions") or {}).get(fld) if isinstance(n.facts.get("versions"), dict) \
        else None
    if isinstance(v, list):
        return ",".join(str(x) for x in v) if v else None
    return v if isinstance(v, str) and v else None


def version_drift(nodes: List[Node]) -> List[Dict[str, Any]]:
    out = []
    for fld in FIELDS:
        vals: Dict[str, List[str]] = defaultdict(list)
        for n in nodes:
            v = _value(n, fld)
            if v is not None:
                vals[v].append(n.name)
        if len(vals) < 2:
            continue
        ranked = sorted(vals.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        odd = [name for _, names in ranked[1:] for name in names]
        out.append(_finding(
            "fleet-version-drift", "warning", fld,
            f"{LABEL[fld]} differs between nodes: " + "; ".join(
                f"{v} on {len(names)}" for v, names in ranked[:4]),
            [f"{LABEL[fld]} {v}: {hostlist(names, 160)}" for v, names in ranked[:8]],
            odd, {"field": fld, "values": {v: sorted(names) for v, names in ranked},
                  "majority": ranked[0][0]},
            "install one image/venv on every node; the odd nodes are listed"))
    return out


def stragglers(nodes: List[Node]) -> List[Dict[str, Any]]:
    eligible = [n for n in nodes if isinstance(n.facts.get("modules"), dict)]
    if len(eligible) < 3:
        return []
    warm_count: Counter = Counter()
    warm_sets: Dict[str, set] = {}
    for n in eligible:
        s = set(n.facts["modules"].get("warm") or [])
        warm_sets[n.name] = s
        warm_count.update(s)
    total = len(eligible)
    popular = {m for m, k in warm_count.items()
               if k >= 2 and total - k <= STRAGGLER_SHARE * total}
    by_set: Dict[Tuple[str, ...], List[str]] = defaultdict(list)
    for n in eligible:
        fi = _value(n, "flashinfer")
        cold = [m for m in popular - warm_sets[n.name] if not fi or m.startswith(fi + "/")]
        if cold and not n.facts["modules"].get("truncated"):
            by_set[tuple(sorted(cold))].append(n.name)
    out = []
    for cold_t, names in sorted(by_set.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        cold = list(cold_t)
        who = hostlist(names, 120)
        out.append(_finding(
            "fleet-straggler", "warning", who,
            f"{who}: {len(cold)} module(s) cold there but warm on most nodes: "
            f"{'they JIT-build' if len(names) > 1 else 'it JIT-builds'} at first call while "
            "the rest serve",
            [f"cold on {len(names)}, warm on {warm_count[m]} of {total} nodes: {m}"
             for m in cold[:3]] + ([f"… and {len(cold) - 3} more"] if len(cold) > 3 else []),
            names, {"modules": cold[:200], "count": len(cold)},
            "fidoctor warmup on these nodes, or fidoctor cache import of a bundle exported "
            "from a warm node"))
    return out


def cross_findings(nodes: List[Node]) -> List[Dict[str, Any]]:
    return shared_cache(nodes) + version_drift(nodes) + stragglers(nodes)
