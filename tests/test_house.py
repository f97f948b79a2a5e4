"""One house: the import structure the issue-17 clean-up promised, checked on the real source.

Read with ``ast`` (nothing is mocked): every ``import`` in fidoctor/, including
those under ``if TYPE_CHECKING`` (a circle there is still a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parent.parent / "fidoctor"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> Set[str]:
    """fidoctor modules imported by ``path`` (``from a import b`` counts a.b when it is one)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("fidoctor")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if not base.startswith("fidoctor"):
                continue
            for a in node.names:
                cand = f"{base}.{a.name}"
                if (ROOT.parent / Path(*cand.split("."))).with_suffix(".py").exists():
                    out.add(cand)  # a submodule: the package's __init__ is not what is used
                else:
                    out.add(base)
    return out


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    return {module_name(p): imports_of(p) for p in ROOT.rglob("*.py")}


def cycles(graph: Dict[str, Set[str]], prefix: str) -> List[List[str]]:
    nodes = {n for n in graph if n.startswith(prefix)}
    found: List[List[str]] = []

    def walk(n: str, path: List[str]) -> None:
        for m in sorted(graph.get(n, ())):
            if m not in nodes:
                continue
            if m in path:
                found.append(path[path.index(m):] + [m])
            elif len(path) < 12:
                walk(m, path + [m])

    for n in sorted(nodes):
        walk(n, [n])
    return found


def test_warmup_has_no_import_circle(graph):
    assert cycles(graph, "fidoctor.warmup") == []


def test_warmup_never_imports_fixes(graph):
    """fix's proof step runs warmup: warmup is below the fixes, never above them."""
    up = {m: sorted(i for i in deps if i.startswith("fidoctor.fixes"))
          for m, deps in graph.items() if m.startswith("fidoctor.warmup")}
    assert {m: d for m, d in up.items() if d} == {}


def test_probes_share_helpers_never_import_another_probe(graph):
    probes = {m for m in graph if m.startswith("fidoctor.probes.")
              and not m.rsplit(".", 1)[1].startswith("_")}
    bad = {m: sorted(graph[m] & probes) for m in probes if graph[m] & probes}
    assert bad == {}


def test_no_module_imports_a_plugin(graph):
    """Probe and fix plugins are found by the registry, never imported: what two places
    need lives in a shared module (``probes/_*.py``, ``fixes/_*.py``), so a plugin can be
    retired without breaking fleet, warmup or another plugin."""
    plugins = {m for m in graph if m.startswith(("fidoctor.probes.", "fidoctor.fixes."))
               and not m.rsplit(".", 1)[1].startswith("_")}
    bad = {m: sorted(graph[m] & plugins) for m in graph if graph[m] & plugins}
    # the live watch runs build-process-stuck and build-memory-thrash as probes, by id
    # through the registry (probes.check_by_id)
    assert bad == {}


def test_one_compiler_list_one_lock_reader():
    from fidoctor.flashinfer import builds
    from fidoctor.snapshot.gather import locks, processes
    from fidoctor.warmup import jobs, verdicts

    for mod in (jobs, verdicts, locks, processes):
        assert mod.COMPILERS is builds.COMPILERS, mod.__name__
    src = (ROOT / "warmup").rglob("*.py")
    assert not [p.name for p in src if "open(\"/proc/locks\"" in p.read_text()]


def test_retired_probe_ids_are_refused(monkeypatch):
    import fidoctor.probes as probes

    probes.all_probes.cache_clear()
    monkeypatch.setattr(probes, "RETIRED", ("cache-incomplete-module",))
    try:
        with pytest.raises(RuntimeError, match="cache-incomplete-module"):
            probes.all_probes()
    finally:
        probes.all_probes.cache_clear()


def test_snapshot_section_status_is_enforced():
    from fidoctor.errors import FidoctorError
    from fidoctor.snapshot import Snapshot

    doc = {"schema_version": 1, "context": {}, "taken_at": 0,
           "sections": {"cache": {"status": "sort-of", "data": {}}}}
    with pytest.raises(FidoctorError, match="section 'cache'"):
        Snapshot.from_dict(doc)
    from fidoctor.snapshot import Section

    with pytest.raises(ValueError, match="sort-of"):
        Section("sort-of")  # a gatherer cannot invent one either
