"""Cache discovery across every version family's layout, and hostile trees."""

from __future__ import annotations

import os

from conftest import DECODE, FA3, snapshot_of

from fidoctor.flashinfer.layout import discover_workspaces, family_of
from fidoctor.flashinfer.modnames import parse_module_name, short_name


def test_all_layouts_are_discovered(box):
    a = box.workspace(version=None, arch="90")  # 0.2.x / 0.3.x
    d = box.workspace(version="0.7.2.post1", arch="90a")  # 0.4.1+
    bare = box.workspace(version="0.7.2.post1", arch=None)  # no GPU, no arch list
    (box.root / "cubins").mkdir()
    found = {(w["version"], w["arch"]): w["path"] for w in discover_workspaces(str(box.root))}
    assert found == {
        (None, "90"): str(a),
        ("0.7.2.post1", "90a"): str(d),
        ("0.7.2.post1", None): str(bare),
    }


def test_module_facts(box):
    ws = box.workspace()
    box.module(ws, DECODE, so="good")
    box.module(ws, FA3, so="missing", objects=2, depfiles=1, ninja_lock=True)
    snap = snapshot_of(box)
    mods = {m["name"]: m for w in snap.data("cache")["workspaces"] for m in w["modules"]}
    assert mods[DECODE]["so"]["problem"] is None
    assert mods[FA3]["so"] is None
    assert mods[FA3]["objects"] == 2 and mods[FA3]["cuda_compile_edges"] == 2
    assert mods[FA3]["stale_depfiles"] == [f"{FA3}_k0.cuda.o.d"]
    assert mods[FA3]["ninja_lock"] is True
    assert mods[DECODE]["ninja_vars"]["cuda_home"] == "/usr/local/cuda"
    locks = snap.data("cache")["workspaces"][0]["locks"]
    assert sorted(lk["module"] for lk in locks) == sorted([DECODE, FA3])


def test_bad_so_variants_are_named(box):
    ws = box.workspace()
    for kind in ("empty", "text", "truncated"):
        box.module(ws, f"m_{kind}", so=kind)
    snap = snapshot_of(box)
    problems = {m["name"]: m["so"]["problem"] for w in snap.data("cache")["workspaces"]
                for m in w["modules"]}
    assert problems["m_empty"] == "empty file"
    assert "invalid ELF header" in problems["m_text"]
    assert problems["m_truncated"].startswith("truncated ELF")


def test_unreadable_dir_and_symlink_loop_are_facts(box, tmp_path):
    ws = box.workspace()
    locked = box.module(ws, "locked_module", so="missing")
    loop = ws / "cached_ops" / "loop_module"
    os.symlink(loop, loop)  # a symlink to itself: ELOOP
    os.chmod(locked, 0)
    try:
        snap = snapshot_of(box)
    finally:
        os.chmod(locked, 0o755)
    assert snap.section("cache").ok
    wsd = snap.data("cache")["workspaces"][0]
    mods = {m["name"]: m for m in wsd["modules"]}
    if os.geteuid() != 0:  # root reads through mode 0
        assert mods["locked_module"]["error"] == "permission denied"
    assert any("loop_module" in e for e in wsd["errors"])


def test_family_and_module_names():
    assert [family_of(v) for v in ("0.2.5", "0.2.6", "0.3.1", "0.4.1", "0.7.2.post1", None)] == [
        "A", "B", "B", "C", "D", None]
    fa3 = parse_module_name(FA3)
    assert (fa3["kind"], fa3["backend"], fa3["dtype_q"], fa3["head_dim_qk"]) == (
        "single_prefill", "fa3", "bf16", 128)
    assert parse_module_name(FA3[:-5])["backend"] == "fa2"
    dec = parse_module_name(DECODE)
    assert (dec["kind"], dec["dtype_kv"], dec["posenc"], dec["backend"]) == ("single_decode", "f16", 0, None)
    assert short_name(FA3) == "single_prefill (bf16, hd128, FA3)"
    assert short_name(DECODE) == "single_decode (f16, hd128)"
    assert parse_module_name("norm") == {"name": "norm", "kind": "other", "backend": None}


def test_module_dir_of_build_commands():
    from fidoctor.flashinfer.builds import module_dir_of

    mod = "/h/.cache/flashinfer/0.7.2.post1/90a/cached_ops/" + FA3
    # ninja 0.6.1+ / 0.2.6–0.6.0 / an nvcc with absolute outputs / sh -c carrying a whole command
    assert module_dir_of(["ninja", "-v", "-C", mod, "-f", f"{mod}/build.ninja"], None) == mod
    ops = mod.rsplit("/", 1)[0]
    assert module_dir_of(["ninja", "-C", ops, "-f", f"{ops}/{FA3}/build.ninja"], None) == mod
    assert module_dir_of(["nvcc", "-c", "x.cu", f"-o{mod}/a.cuda.o"], None) == mod
    assert module_dir_of(["/bin/sh", "-c", f"/usr/local/cuda/bin/nvcc -c k.cu -o {mod}/k.cuda.o"],
                         "/") == mod
    assert module_dir_of(["nvcc", "-o", f"{FA3}/k.cuda.o"], ops) == mod  # relative to cwd
    assert module_dir_of(["cicc", "-arch", "compute_90a"], mod) == mod  # torch: cwd = module dir
    assert module_dir_of(["ninja", "-C", f"{ops}/tmp"], None) is None
    assert module_dir_of(["gcc", "-c", "unrelated.c"], "/home/u/src") is None
