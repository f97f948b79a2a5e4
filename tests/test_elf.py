"""ELF facts: real libraries (NVIDIA's wheels, gcc builds), hostile files, the fact cache.

The fast reader is checked against pyelftools (the reference) and against
binutils' own ``nm -D`` / ``readelf -d`` on the same files.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli
from cudart_helpers import BYVERSION_MOD, PLAIN_MOD, WHEEL_12_4, WHEEL_12_9, Seed, extract_cudart

from fidoctor.elf import ElfError, FactCache, read_facts

pytestmark = pytest.mark.timeout(120)
BYV = "cudaGetDriverEntryPointByVersion"


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Seed:
    return Seed(tmp_path_factory.mktemp("elfseed"))


@pytest.fixture(scope="module")
def cudarts(tmp_path_factory):
    d = tmp_path_factory.mktemp("cudarts")
    return {v: extract_cudart(v, d / f"libcudart.so.{v}") for v in (WHEEL_12_4, WHEEL_12_9)}


def nm_defined(path: Path, prefix: str = "cuda") -> set:
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return {ln.split()[-1].split("@")[0] for ln in out.splitlines()
            if ln.split() and ln.split()[-1].startswith((prefix, "__cuda"))}


def test_real_cudart_exports_match_nm_and_pyelftools(cudarts):
    old, new = (read_facts(str(cudarts[v])) for v in (WHEEL_12_4, WHEEL_12_9))
    assert old["soname"] == new["soname"] == "libcudart.so.12"
    assert BYV not in old["exports"]
    assert new["exports"][BYV] == "@@libcudart.so.12"
    for v, facts in ((WHEEL_12_4, old), (WHEEL_12_9, new)):
        assert set(facts["exports"]) == nm_defined(cudarts[v])
        assert facts == read_facts(str(cudarts[v]), reader="pyelftools")


def test_toolkit_13_cudart_agrees_with_pyelftools():
    lib = "/usr/local/cuda/lib64/libcudart.so"
    if not os.path.exists(lib):
        pytest.skip("no CUDA 13 toolkit on this machine")
    f = read_facts(lib)
    assert f["soname"] == "libcudart.so.13" and f["exports"][BYV] == "@@libcudart.so.13"
    assert f == read_facts(lib, reader="pyelftools")


def test_module_undefined_symbols_carry_version_requirements(box):
    f = read_facts(str(box.modules[BYVERSION_MOD]))
    assert "libcudart.so.12" in f["needed"] and f["rpath"] is None and f["runpath"] is None
    assert [BYV, "libcudart.so.12", "libcudart.so.12"] in f["undefined"]
    plain = read_facts(str(box.modules[PLAIN_MOD]))
    assert BYV not in [u[0] for u in plain["undefined"]]
    assert ["cudaGetDeviceCount", "libcudart.so.12", "libcudart.so.12"] in plain["undefined"]
    for so in box.modules.values():
        assert read_facts(str(so)) == read_facts(str(so), reader="pyelftools")


def test_rpath_and_runpath_match_readelf(box, tmp_path):
    f = read_facts(str(box.v["torch_cuda"]), prefixes=())
    out = subprocess.run(["readelf", "-d", str(box.v["torch_cuda"])], capture_output=True,
                         text=True, check=True).stdout
    assert "(RPATH)" in out and f"[{f['rpath']}]" in out and f["runpath"] is None
    assert f["rpath"] == "$ORIGIN/../../nvidia/cuda_runtime/lib"
    assert f["undefined"] == [] and f["exports"] == {}  # nothing asked for, nothing decoded
    src = tmp_path / "r.c"
    src.write_text("int f(void) { return 1; }\n")
    so = tmp_path / "r.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(src), "-Wl,--enable-new-dtags",
                    "-Wl,-rpath,/opt/x:$ORIGIN", "-Wl,-soname,libr.so.7"], check=True)
    f = read_facts(str(so))
    assert f["runpath"] == "/opt/x:$ORIGIN" and f["rpath"] is None and f["soname"] == "libr.so.7"
    assert f == read_facts(str(so), reader="pyelftools")


@pytest.mark.parametrize("kind, message", [
    ("text", "not ELF"),
    ("empty", "empty file"),
    ("truncated_header", "truncated"),
    ("truncated_tail", "truncated"),
    ("garbage_after_magic", "garbage"),
])
def test_hostile_files_give_one_line_errors(box, tmp_path, kind, message):
    good = box.modules[BYVERSION_MOD].read_bytes()
    p = tmp_path / "x.so"
    p.write_bytes({
        "text": b"this is not an ELF file\n",
        "empty": b"",
        "truncated_header": good[:40],
        "truncated_tail": good[: len(good) // 2],
        "garbage_after_magic": b"\x7fELF\x02\x01\x01" + b"\xff" * 200,
    }[kind])
    with pytest.raises(ElfError) as e:
        read_facts(str(p))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_symlink_loop_fifo_and_directory(tmp_path):
    os.symlink("b.so", tmp_path / "a.so")
    os.symlink("a.so", tmp_path / "b.so")
    with pytest.raises(ElfError, match="symlink loop"):
        read_facts(str(tmp_path / "a.so"))
    os.mkfifo(tmp_path / "f.so")  # must not block
    with pytest.raises(ElfError, match="not a regular file"):
        read_facts(str(tmp_path / "f.so"))
    with pytest.raises(ElfError):
        read_facts(str(tmp_path))
    with pytest.raises(ElfError, match="no such file"):
        read_facts(str(tmp_path / "missing.so"))


def test_fact_cache_hits_misses_and_invalidation(box, tmp_path):
    so = tmp_path / "m.so"
    so.write_bytes(box.modules[BYVERSION_MOD].read_bytes())
    cpath = tmp_path / "cache" / "elf.json"
    c = FactCache(str(cpath))
    first = c.facts(str(so))
    assert (c.hits, c.misses) == (0, 1) and c.save() is None
    c2 = FactCache(str(cpath))
    assert c2.facts(str(so)) == first and (c2.hits, c2.misses) == (1, 0)
    so.write_bytes(box.modules[PLAIN_MOD].read_bytes())  # same path, new contents
    os.utime(so, ns=(1, 1))
    c3 = FactCache(str(cpath))
    changed = c3.facts(str(so))
    assert c3.misses == 1 and BYV not in [u[0] for u in changed["undefined"]]


@pytest.mark.parametrize("content", [b"\x00\xff garbage", b"[1, 2, 3]", b'{"version": 1, "entr',
                                     b'{"version": 99, "entries": {}}'])
def test_corrupt_fact_cache_is_ignored_and_rewritten(box, tmp_path, content):
    cpath = tmp_path / "elf.json"
    cpath.write_bytes(content)
    c = FactCache(str(cpath))
    assert c.load_error
    assert "undefined" in c.facts(str(box.modules[BYVERSION_MOD]))
    assert c.save() is None
    assert json.loads(cpath.read_text())["version"] == 1


def test_fact_cache_stores_each_distinct_record_once_and_reads_the_older_form(box, tmp_path):
    """Copies of one module (each its own inode, as on a real box) share one stored record;
    a cache written before the table existed is read, then rewritten in the new form."""
    mods = []
    for i in range(3):
        so = tmp_path / f"m{i}.so"
        so.write_bytes(box.modules[BYVERSION_MOD].read_bytes() if i < 2
                       else box.modules[PLAIN_MOD].read_bytes())
        mods.append(str(so))
    cpath = tmp_path / "elf.json"
    c = FactCache(str(cpath))
    facts = [c.facts(m) for m in mods]
    assert c.save() is None
    raw = json.loads(cpath.read_text())
    assert len(raw["table"]) == 2 and len(raw["entries"]) == 3
    c2 = FactCache(str(cpath))
    assert [c2.facts(m) for m in mods] == facts and (c2.hits, c2.misses) == (3, 0)
    assert not c2.dirty
    old = {"version": 1, "entries": {ck: {"key": e["key"], "facts": e["facts"]}
                                     for ck, e in c2.entries.items()}}
    cpath.write_text(json.dumps(old))  # the form fidoctor wrote before the table
    c3 = FactCache(str(cpath))
    assert [c3.facts(m) for m in mods] == facts and c3.hits == 3 and c3.dirty
    assert c3.save() is None and "table" in json.loads(cpath.read_text())


def test_errors_are_cached_too(tmp_path):
    p = tmp_path / "t.so"
    p.write_text("not elf\n")
    c = FactCache(str(tmp_path / "c.json"))
    assert "not ELF" in c.facts(str(p))["error"]
    c.save()
    c2 = FactCache(str(tmp_path / "c.json"))
    assert "not ELF" in c2.facts(str(p))["error"] and c2.hits == 1


def test_elf_section_records_bad_modules_without_traceback(box, tmp_path):
    ops = box.base / ".cache" / "flashinfer" / "90" / "cached_ops"
    for name, data in (("trunc_mod", box.modules[BYVERSION_MOD].read_bytes()[:300]),
                       ("text_mod", b"hello\n")):
        (ops / name).mkdir(exist_ok=True)
        (ops / name / f"{name}.so").write_bytes(data)
    try:
        snap = tmp_path / "s.json"
        r = run_cli(["snapshot", "--python", str(box.v["python"]), "-o", str(snap)],
                    env=box.env())
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        sec = json.loads(snap.read_text())["sections"]["elf"]
        assert sec["status"] == "ok"
        mods = {m["module"]: m for m in sec["data"]["modules"].values()}
        assert "truncated" in mods["trunc_mod"]["error"]
        assert "not ELF" in mods["text_mod"]["error"]
        assert [BYV, "libcudart.so.12", "libcudart.so.12"] in mods[BYVERSION_MOD]["undefined"]
        # Second run: every fact from the cache.
        r = run_cli(["snapshot", "--python", str(box.v["python"]), "-o", str(snap)],
                    env=box.env())
        fc = json.loads(snap.read_text())["sections"]["elf"]["data"]["fact_cache"]
        assert fc["misses"] == 0 and fc["hits"] == 4
    finally:
        for name in ("trunc_mod", "text_mod"):
            for f in (ops / name).iterdir():
                f.unlink()
            (ops / name).rmdir()


@pytest.mark.parametrize("which", [BYVERSION_MOD, "cudart"])
def test_mutated_elf_never_raises_anything_but_elferror(box, cudarts, tmp_path, which):
    """Deterministic byte mutations of real files: facts or a one-line ElfError, nothing else.

    (Seed 1 of this loop found an IndexError from an out-of-range section link.)
    """
    import random

    src = box.modules[BYVERSION_MOD] if which != "cudart" else cudarts[WHEEL_12_4]
    base = src.read_bytes()
    rng = random.Random(1)
    p = tmp_path / "fuzz.so"
    outcomes = {"facts": 0, "error": 0}
    for _ in range(300):
        b = bytearray(base)
        for _ in range(rng.choice([1, 4, 16, 64])):
            hi = min(len(b), 70000) if rng.random() < 0.5 else len(b)
            b[rng.randrange(hi)] = rng.randrange(256)
        p.write_bytes(bytes(b))
        try:
            read_facts(str(p))
            outcomes["facts"] += 1
        except ElfError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
    assert outcomes["facts"] + outcomes["error"] == 300 and outcomes["facts"]
    if which != "cudart":
        assert outcomes["error"]  # the small module's headers get hit: both paths exercised
