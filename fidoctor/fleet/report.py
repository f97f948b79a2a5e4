"""The fleet's verdict: one object, printed as a short text, Markdown, or JSON.

The text is built to stay short however big the fleet: one line for every
healthy node together, one line per fault group (its nodes as a host list),
one per cross-node finding, one for the nodes that did not answer. 100 nodes
with 3 fault classes fit in well under 15 lines.

Exit codes: 0 every node answered healthy and nothing across nodes; 1 a
problem somewhere (a fault group, a cross-node finding, a node not checked
or not answering); 2 no node answered at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from fidoctor import __version__
from fidoctor.fleet.cross import cross_findings
from fidoctor.fleet.group import Group, group_nodes, hostlist, natural
from fidoctor.fleet.load import Loaded
from fidoctor.textsafe import shown

SCHEMA_VERSION = 1
MARK = {"error": "✗", "warning": "!", "": "✓"}


@dataclass
class FleetReport:
    loaded: Loaded
    groups: List[Group] = field(default_factory=list)
    cross: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if not self.loaded.nodes:
            return 2
        if self.loaded.unreachable or self.cross or any(g.status != "healthy"
                                                         for g in self.groups):
            return 1
        return 0

    def counts(self) -> Dict[str, int]:
        c = {"healthy": 0, "problems": 0, "unchecked": 0}
        for n in self.loaded.nodes:
            c[n.status] += 1
        return dict(c, answered=len(self.loaded.nodes), unreachable=len(self.loaded.unreachable),
                    total=len(self.loaded.nodes) + len(self.loaded.unreachable))

    def to_json(self) -> Dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION, "fidoctor_version": __version__,
            "summary": dict(self.counts(), groups=len(self.groups), exit_code=self.exit_code),
            "groups": [g.to_json() for g in self.groups],
            "fleet_findings": self.cross,
            "unreachable": [{"node": u.name, "reason": u.reason, "source": u.source}
                            for u in sorted(self.loaded.unreachable, key=lambda u: natural(u.name))],
            "nodes": [{"name": n.name, "named_by": n.named_by, "source": n.source,
                       "kind": n.kind, "status": n.status}
                      for n in sorted(self.loaded.nodes, key=lambda n: natural(n.name))],
        }


def build(loaded: Loaded) -> FleetReport:
    return FleetReport(loaded, group_nodes(loaded.nodes), cross_findings(loaded.nodes))


def _group_text(g: Group, width: int = 150) -> str:
    if g.status == "unchecked":  # diagnose's own verdict already says "not checked: …"
        v = g.verdict if g.verdict.startswith("not checked") else f"not checked: {g.verdict}"
        return v[:width]
    bits, seen = [], set()
    for i, s in g.signature:
        if i in seen:
            continue
        seen.add(i)
        more = sum(1 for j, _ in g.signature if j == i)
        tail = s.rsplit("/", 1)[-1] if s else ""
        bits.append(f"{i} ({tail[:48]}{', …' if more > 1 else ''})" if tail else i)
    return ", ".join(bits)[:width]


def _unreachable_text(rep: FleetReport) -> str:
    by: Dict[str, List[str]] = {}
    for u in rep.loaded.unreachable:
        by.setdefault(u.reason[:80], []).append(u.name)
    return "; ".join(f"{hostlist(names, 80)} ({reason})" for reason, names in
                     sorted(by.items(), key=lambda kv: -len(kv[1])))[:300]


def text(rep: FleetReport) -> str:
    c = rep.counts()
    bad = [g for g in rep.groups if g.status != "healthy"]
    lines = [f"fidoctor fleet: {c['total']} node(s), {c['answered']} answered · "
             f"{c['healthy']} healthy · {c['problems'] + c['unchecked']} with problems in "
             f"{len(bad)} group(s) · {c['unreachable']} unreachable"]
    for g in rep.groups:
        if g.status == "healthy":
            lines.append(f"✓ healthy ({len(g.nodes)}): {hostlist(g.nodes, 160)}")
    for g in bad[:10]:
        mark = "?" if g.status == "unchecked" else MARK[g.severity]
        lines.append(f"{mark} {len(g.nodes)} node(s) {hostlist(g.nodes, 60)}: {_group_text(g)}")
    if len(bad) > 10:
        lines.append(f"… and {len(bad) - 10} more group(s) (--json lists them all)")
    for f in rep.cross[:5]:
        lines.append(f"{MARK[f['severity']]} {f['id']}: {f['title'][:160]}  "
                     f"(fidoctor explain {f['id']})")
    if len(rep.cross) > 5:
        lines.append(f"… and {len(rep.cross) - 5} more cross-node finding(s) (--json)")
    if rep.loaded.unreachable:
        lines.append(f"unreachable ({c['unreachable']}): {_unreachable_text(rep)}")
    by_file = [n.name for n in rep.loaded.nodes if n.named_by == "file"]
    if by_file:
        lines.append(f"note: {len(by_file)} node(s) named by their file name (the report's "
                     "hostname is missing or redacted)")
    if bad:
        lines.append("next: fidoctor diagnose on one node of each group (its fixes apply to "
                     "the whole group)")
    return "\n".join(shown(line) for line in lines)  # host names, subjects: another box's


def _md(s: str) -> str:
    return shown(s.replace("|", "\\|").replace("\n", " "))


def markdown(rep: FleetReport) -> str:
    c = rep.counts()
    out = [f"## fidoctor fleet: {c['total']} node(s)", "",
           f"{c['answered']} answered · {c['healthy']} healthy · "
           f"{c['problems'] + c['unchecked']} with problems · {c['unreachable']} unreachable "
           f"(fidoctor {__version__})", "",
           "| nodes | count | verdict | findings |", "|---|---:|---|---|"]
    for g in rep.groups:
        finds = "<br>".join(f"`{i}` {_md(s)}" for i, s in g.signature) or "—"
        out.append(f"| `{_md(hostlist(g.nodes, 300))}` | {len(g.nodes)} | {_md(g.verdict)} | "
                   f"{finds} |")
    if rep.cross:
        out += ["", "### Across nodes", ""]
        for f in rep.cross:
            out.append(f"- **`{f['id']}`** ({f['severity']}): {_md(f['title'])}")
            out += [f"  - {_md(e)}" for e in f["evidence"]]
            out.append(f"  - fix: {_md(f['fix'])}")
            out.append(f"  - what it means: `fidoctor explain {f['id']}`")
    if rep.loaded.unreachable:
        out += ["", "### Did not answer", ""]
        out += [f"- `{_md(u.name)}`: {_md(u.reason)}" for u in
                sorted(rep.loaded.unreachable, key=lambda u: natural(u.name))]
    by_file = [n.name for n in rep.loaded.nodes if n.named_by == "file"]
    if by_file:
        out += ["", f"_{len(by_file)} node(s) are named by their report's file name: the "
                "hostname in the report is missing or redacted._"]
    return "\n".join(shown(line) for line in out) + "\n"
