"""Group nodes by verdict fingerprint, and write node lists the way cluster tools do.

Why a fingerprint and not the text: two nodes with the same fault print
different paths, pids and host names. The fingerprint is the node's status
plus its problem findings as (id, normalised subject) pairs (``load.normalise``
takes out the cache root, home, host name and pids), so the same fault on 60
nodes is one group, and two different modules broken are two groups. Healthy
nodes are one group whatever they print. Like ``dshbak -c``, a group lists its
nodes once, as a compressed host list (``node[001-088,090]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from fidoctor.fleet.load import Node

RANK = {"problems": 0, "unchecked": 1, "healthy": 2}
_NUM = re.compile(r"^(.*?)(\d+)(\D*)$")


@dataclass
class Group:
    status: str  # healthy, problems, unchecked
    signature: Tuple[Tuple[str, str], ...]  # (id, normalised subject), sorted
    severity: str  # worst severity of its findings ("" when healthy)
    verdict: str
    nodes: List[str] = field(default_factory=list)

    @property
    def ids(self) -> List[str]:
        return sorted({i for i, _ in self.signature})

    def to_json(self) -> Dict:
        return {"status": self.status, "ids": self.ids, "severity": self.severity or None,
                "findings": [{"id": i, "subject": s} for i, s in self.signature],
                "verdict": self.verdict, "count": len(self.nodes),
                "nodes": sorted(self.nodes, key=natural)}


def natural(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def group_nodes(nodes: List[Node]) -> List[Group]:
    """Nodes with one fingerprint share a group; problem groups first, biggest first."""
    groups: Dict[tuple, Group] = {}
    for n in nodes:
        if n.status == "healthy":
            key: tuple = ("healthy",)
            sig: Tuple[Tuple[str, str], ...] = ()
        else:
            sig = tuple(sorted({(i, s) for i, s, _ in n.problems}))
            key = (n.status, sig, n.verdict if n.status == "unchecked" else "")
        g = groups.get(key)
        if g is None:
            sev = "error" if any(sv == "error" for _, _, sv in n.problems) else \
                "warning" if n.problems else ""
            g = groups[key] = Group(n.status, sig, sev if n.status != "healthy" else "",
                                    "healthy" if n.status == "healthy" else n.verdict)
        g.nodes.append(n.name)
    return sorted(groups.values(), key=lambda g: (RANK[g.status], g.severity != "error",
                                                  -len(g.nodes), g.ids))


def hostlist(names: List[str], limit: int = 0) -> str:
    """``a01,a02,a03,b7`` → ``a[01-03],b7`` (pdsh/Slurm style); ``limit`` cuts the text."""
    by: Dict[Tuple[str, str, int], List[int]] = {}
    plain: List[str] = []
    for name in names:
        m = _NUM.match(name)
        if not m:
            plain.append(name)
            continue
        pre, digits, suf = m.groups()
        width = len(digits) if digits.startswith("0") and len(digits) > 1 else 0
        by.setdefault((pre, suf, width), []).append(int(digits))
    parts: List[Tuple[tuple, str]] = [((n,), n) for n in plain]
    for (pre, suf, width), nums in by.items():
        nums = sorted(set(nums))
        if len(nums) == 1:
            parts.append((natural(pre + str(nums[0]).zfill(width) + suf),
                          pre + str(nums[0]).zfill(width) + suf))
            continue
        runs: List[str] = []
        start = prev = nums[0]
        for x in [*nums[1:], None]:
            if x is not None and x == prev + 1:
                prev = x
                continue
            a, b = str(start).zfill(width), str(prev).zfill(width)
            runs.append(a if start == prev else f"{a}-{b}")
            if x is not None:
                start = prev = x
        parts.append((natural(pre), f"{pre}[{','.join(runs)}]{suf}"))
    text = ",".join(p for _, p in sorted(parts, key=lambda t: t[0]))
    if limit and len(text) > limit:
        cut = text[: limit - 1].rsplit(",", 1)[0]
        return f"{cut},… ({len(names)} in all)"
    return text
