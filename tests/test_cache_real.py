"""export → reinstall → import → verify with real FlashInfer modules, and every way to refuse.

The builder: a real single-decode module compiled once per machine by the real
``fidoctor warmup --arch 9.0a`` in the cached target venv (cache_helpers).
The importer: a second venv at another path whose flashinfer-python was
really ``pip install --force-reinstall``ed (every source and header newer
than the objects) and a CUDA_HOME that is another symlink to the same
toolkit, so ``cuda_home``, the workspace, the package dirs and every mtime
ninja keys on differ. The proof is the real ninja (``-n``) and the real
FlashInfer ``build_and_load`` (its ninja must be a no-op).

Tampered bundles are the real bundle with one thing changed: a flipped
byte, or a manifest claiming another FlashInfer or CUDA, as a bundle built
elsewhere would. "Nothing written" is checked on the whole target tree.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Dict, Tuple

import pytest
from cache_helpers import compiled_base, second_target, target_env, workspace_of
from conftest import run_cli
from warmup_helpers import build_env, target_venv

pytestmark = pytest.mark.slow
ARCH = ["--arch", "9.0a"]


@pytest.fixture(scope="module")
def built() -> Path:
    return compiled_base()


@pytest.fixture(scope="module")
def bundle(built, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "cache.tar"
    py = target_venv()
    env = build_env(py.parent.parent, built)
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", str(out)], env=env)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def t2(tmp_path_factory) -> Dict[str, Path]:
    return second_target(tmp_path_factory.mktemp("t2"))


def tree(base: Path) -> Dict[str, Tuple[int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(base):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def do(t2, base: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = target_env(t2, base, XDG_STATE_HOME=str(base.parent / "state"),
                     XDG_CACHE_HOME=str(base.parent / "xdg-cache"), **extra)
    return run_cli(["cache", *args, "--python", str(t2["python"]), *ARCH], env=env)


def module_dir(base: Path) -> Path:
    (m,) = [p for p in (workspace_of(base) / "cached_ops").iterdir() if p.name != "tmp"]
    return m


BUILD_AND_LOAD = """
import torch
from flashinfer.jit.attention import gen_single_decode_module
spec = gen_single_decode_module(torch.float16, torch.float16, torch.float16, 64, 64, 0,
                                False, False)
spec.build_and_load()
print("loaded", spec.name)
"""


def test_export_reinstall_import_verify_and_flashinfer_reuses_it(built, bundle, t2, tmp_path):
    # The reinstall made every FlashInfer source newer than the builder's objects.
    hdr = t2["site"] / "flashinfer" / "data" / "include" / "flashinfer" / "utils.cuh"
    objs = list(module_dir(built).glob("*.cuda.o"))
    assert objs and hdr.stat().st_mtime > max(o.stat().st_mtime for o in objs)
    base = tmp_path / "base"
    r = do(t2, base, "import", str(bundle))
    assert r.returncode == 0, r.stderr
    mdir = module_dir(base)
    # The real ninja, in the target's workspace: nothing to do.
    ninja = shutil.which("ninja", path=str(t2["venv"] / "bin"))
    r = subprocess.run([ninja, "-C", str(mdir), "-n", "-d", "explain"], capture_output=True,
                       text=True)
    assert "no work to do" in r.stdout, r.stdout + r.stderr
    assert f"cuda_home = {t2['cuda_home']}\n" in (mdir / "build.ninja").read_text()
    # verify says so, as text and as JSON that the schema accepts.
    r = do(t2, base, "verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert [m["verdict"] for m in doc["modules"]] == ["ok"]
    assert doc["modules"][0]["rebuild"]["work"] == 0
    import jsonschema

    schema_dir = Path(__file__).parent.parent / "fidoctor" / "schema"
    schema = json.loads((schema_dir / "cache-verify.schema.json").read_text())
    jsonschema.validate(doc, schema)
    # The real FlashInfer build_and_load: its ninja is a no-op (no log line, no new file).
    before = tree(mdir)
    env = target_env(t2, base)
    r = subprocess.run([str(t2["python"]), "-c", BUILD_AND_LOAD], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert tree(mdir) == before, "FlashInfer rebuilt or rewrote something"
    # history lists the import; undo takes it all out again (both as their schemas say).
    senv = dict(env, XDG_STATE_HOME=str(base.parent / "state"))
    r = run_cli(["history", "--json"], env=senv)
    rows = json.loads(r.stdout)
    assert rows[-1]["command"] == "cache import" and rows[-1]["status"] == "committed"
    jsonschema.validate(rows, json.loads((schema_dir / "history.schema.json").read_text()))
    r = run_cli(["undo", "--json"], env=senv)
    assert r.returncode == 0, r.stdout + r.stderr
    jsonschema.validate(json.loads(r.stdout),
                        json.loads((schema_dir / "undo.schema.json").read_text()))
    assert not mdir.exists()
    assert not (workspace_of(base) / "generated" / mdir.name).exists()


def test_without_the_rewrite_the_same_files_would_rebuild(bundle, t2, tmp_path):
    """The quiet twin of the test above: the bundle's files unpacked as they are (what a
    hand-rolled 'seed then copy' does) leave ninja with every edge to rebuild."""
    ws = workspace_of(tmp_path / "base")
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            if m.name.startswith("ws/"):
                m.name = m.name[3:]
                tar.extract(m, ws, filter="data")
    ninja = shutil.which("ninja", path=str(t2["venv"] / "bin"))
    mdir = module_dir(tmp_path / "base")
    r = subprocess.run([ninja, "-C", str(mdir), "-n"], capture_output=True, text=True)
    assert "no work to do" not in r.stdout


def repack(src: Path, dst: Path, edit_manifest=None, edit_member=None, extra=None,
           drop: str = "") -> Path:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            if drop and m.name.endswith(drop):
                drop = ""
                continue
            data = tin.extractfile(m).read() if m.isreg() else b""
            if m.name == "manifest.json" and edit_manifest:
                doc = json.loads(data)
                edit_manifest(doc)
                data = json.dumps(doc).encode()
            elif edit_member:
                data = edit_member(m, data)
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
        for ti, data in extra or []:
            tout.addfile(ti, io.BytesIO(data))
    return dst


def flip_so_byte(m: tarfile.TarInfo, data: bytes) -> bytes:
    if m.name.endswith(".so"):
        b = bytearray(data)
        b[len(b) // 2] ^= 0x01
        return bytes(b)
    return data


def _set(path: Tuple[str, ...], value):
    def edit(doc):
        d = doc
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return edit


def _special(kind: str) -> Tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo("ws/cached_ops/evil")
    if kind == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, "manifest.json"
    elif kind == "device":
        ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
    elif kind == "absolute":
        ti.name = "/tmp/fidoctor-evil"
    elif kind == "dotdot":
        ti.name = "ws/../../escape"
    return ti, b""


@pytest.mark.parametrize("case,why", [
    ("flipped-so-byte", "content differs from the manifest's sha256"),
    ("other-flashinfer", "FlashInfer 0.7.1 built them"),
    ("other-cuda", "built by CUDA 12.9.86"),
    ("other-arch-in-bundle", "built for arch 100a"),
    ("symlink", "a link or special file"),
    ("hardlink", "a link or special file"),
    ("device", "a link or special file"),
    ("absolute", "absolute or malformed name"),
    ("dotdot", "not a plain relative path"),
    ("so-digest", "disagree (tampered)"),
    ("bad-name", "is not a plain module name"),
    ("unlisted", "not listed in the manifest"),
    ("missing", "file(s) the manifest lists are missing"),
    ("grown", "bytes, the manifest says"),
])
def test_tampered_or_foreign_bundle_is_refused_and_nothing_written(bundle, t2, tmp_path, case,
                                                                   why):
    bad = tmp_path / "bad.tar"
    if case == "flipped-so-byte":
        repack(bundle, bad, edit_member=flip_so_byte)
    elif case == "other-flashinfer":
        repack(bundle, bad, edit_manifest=_set(("source", "flashinfer_version"), "0.7.1"))
    elif case == "other-cuda":
        repack(bundle, bad, edit_manifest=_set(("source", "toolkit_version"), "12.9.86"))
    elif case == "other-arch-in-bundle":
        repack(bundle, bad, edit_manifest=_set(("source", "arch"), "100a"))
    elif case == "unlisted":
        extra = tarfile.TarInfo("ws/cached_ops/extra.so")
        extra.size = 4
        repack(bundle, bad, extra=[(extra, b"\x7fELF")])
    elif case == "missing":
        repack(bundle, bad, edit_member=lambda m, d: d, drop=".cuda.o")
    elif case == "grown":
        repack(bundle, bad, edit_member=lambda m, d: d + b"\0" if m.name.endswith(".so") else d)
    elif case == "bad-name":
        repack(bundle, bad, edit_manifest=lambda d: d["modules"][0].update(name="../../x\n"))
    elif case == "so-digest":
        repack(bundle, bad, edit_manifest=lambda d: d["modules"][0].update(so_sha256="0" * 64))
    else:
        repack(bundle, bad, extra=[_special(case)])
    base = tmp_path / "base"
    (workspace_of(base) / "cached_ops").mkdir(parents=True)
    before = tree(tmp_path)
    r = do(t2, base, "import", str(bad))
    assert r.returncode == 2, r.stdout + r.stderr
    assert why in r.stderr and "Traceback" not in r.stderr
    assert tree(tmp_path) == before
    assert not os.path.exists("/tmp/fidoctor-evil")


@pytest.mark.parametrize("field,value", [
    ("deps", None), ("deps", []), ("deps", {"x": 5}), ("inputs", "x"), ("inputs", {"a": 1}),
    ("files", None), ("files", 5), ("files", ["x"]), ("ninja_log", "x"), ("ninja_log", None),
    ("ninja_log", [5]), ("name", 5), ("name", None), ("name", {}), ("so", 7),
    ("so_sha256", None), ("gencode", "x"), ("ninja_log_version", "7"),
    ("files", [{"path": "x", "sha256": "0", "size": 1, "mode": "x"}]),
    ("ninja_log", [{"output": None, "start": 0, "end": 1, "mtime": 0}]),
    ("ninja_log", [{"output": "x", "start": 0, "end": None, "mtime": 0}]),
    ("source.cuda_home", 5), ("source.toolkit_version", 13), ("source.build_env", {"CC": 1}),
])
def test_manifest_field_of_the_wrong_type_is_refused_in_one_line(bundle, t2, tmp_path, field,
                                                                 value):
    """A bundle is input from another machine: a manifest field of the wrong type (a hand
    edit, another tool, a damaged file) was an "internal error ... fidoctor bug"
    (AttributeError, TypeError) instead of bad input. Now refused, nothing written."""
    bad = tmp_path / "bad.tar"
    if field.startswith("source."):
        repack(bundle, bad, edit_manifest=_set(("source", field[7:]), value))
    else:
        repack(bundle, bad, edit_manifest=lambda d: d["modules"][0].update({field: value}))
    base = tmp_path / "base"
    (workspace_of(base) / "cached_ops").mkdir(parents=True)
    before = tree(tmp_path)
    r = do(t2, base, "import", str(bad))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "manifest" in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert tree(tmp_path) == before


def test_target_on_another_arch_is_refused(bundle, t2, tmp_path):
    base = tmp_path / "base"
    env = target_env(t2, base, XDG_STATE_HOME=str(tmp_path / "state"))
    r = run_cli(["cache", "import", "--python", str(t2["python"]), "--arch", "10.0a",
                 str(bundle)], env=env)
    assert r.returncode == 2 and "built for arch 90a, the target uses 100a" in r.stderr
    assert not base.exists()


def test_mtime_only_change_is_accepted_a_changed_header_refused(bundle, t2, tmp_path):
    # Every member 3 hours older (a bundle copied with new times): accepted, still 0 dirty.
    older = repack(bundle, tmp_path / "older.tar",
                   edit_member=lambda m, d: (setattr(m, "mtime", m.mtime - 3 * 3600), d)[1])
    base = tmp_path / "base"
    r = do(t2, base, "import", str(older))
    assert r.returncode == 0, r.stderr
    assert do(t2, base, "verify").returncode == 0
    # A header the module was compiled from, with other content in the target: refused.
    hdr = t2["site"] / "flashinfer" / "data" / "include" / "flashinfer" / "utils.cuh"
    saved = hdr.read_bytes()
    try:
        hdr.write_bytes(saved + b"\n// changed\n")
        base2 = tmp_path / "base2"
        r = do(t2, base2, "import", str(bundle))
        assert r.returncode == 2, r.stdout + r.stderr
        assert "utils.cuh differs" in r.stderr and "would build it differently" in r.stderr
        assert not base2.exists()
    finally:
        hdr.write_bytes(saved)


def test_already_cached_module_refused_unless_replace(bundle, t2, tmp_path):
    base = tmp_path / "base"
    assert do(t2, base, "import", str(bundle)).returncode == 0
    r = do(t2, base, "import", str(bundle))
    assert r.returncode == 2 and "--replace" in r.stderr
    r = do(t2, base, "import", str(bundle), "--replace")
    assert r.returncode == 0, r.stderr
    assert list((workspace_of(base) / "fidoctor-quarantine").iterdir())
    assert do(t2, base, "verify").returncode == 0


def test_verify_names_a_module_that_would_rebuild(bundle, t2, tmp_path):
    base = tmp_path / "base"
    assert do(t2, base, "import", str(bundle)).returncode == 0
    src = next((workspace_of(base) / "generated").iterdir()) / "single_decode_config.inc"
    os.utime(src, None)
    later = src.stat().st_mtime_ns + 5 * 10**9
    os.utime(src, ns=(later, later))
    r = do(t2, base, "verify", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    m = json.loads(r.stdout)["modules"][0]
    assert m["verdict"] == "rebuild" and m["rebuild"]["work"] >= 1


def test_verify_with_nothing_cached_is_not_healthy(t2, tmp_path):
    r = do(t2, tmp_path / "base", "verify")
    assert r.returncode == 2 and "nothing to verify" in r.stderr


TMA_C = """
int cudaGetDriverEntryPointByVersion(const char *, void **, unsigned int,
                                     unsigned long long, int *);
/* What CUTLASS's sm90 TMA path (FA3) emits: the driver entry point, by version. */
int fidoctor_tma_init(void) { void *fn = 0; int st = 0;
  return cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, 0, &st); }
"""


def test_bundle_module_needing_a_newer_cudart_is_named_by_verify(bundle, t2, tmp_path):
    """The seed, caught at image-build time. Stand-in: an FA3 module (which needs
    cudaGetDriverEntryPointByVersion) takes ~6 min and 3.4 GB to compile here, so the real
    decode objects are relinked with one gcc object making that call, against NVIDIA's real
    12.9.79 libcudart.so.12, in a workspace the real bundle was imported into; that is
    exported, and imported into a target whose FlashInfer preloads 12.4.127."""
    from cudart_helpers import WHEEL_12_4, WHEEL_12_9, extract_cudart

    py = target_venv()
    builder = tmp_path / "builder"
    benv = build_env(py.parent.parent, builder, extra={"XDG_STATE_HOME": str(tmp_path / "s1")})
    r = run_cli(["cache", "import", "--python", str(py), *ARCH, str(bundle)], env=benv)
    assert r.returncode == 0, r.stderr
    mdir = module_dir(builder)
    lib = tmp_path / "cu129"
    lib.mkdir()
    extract_cudart(WHEEL_12_9, lib / "libcudart.so.12")
    (tmp_path / "tma.c").write_text(TMA_C)
    subprocess.run(["gcc", "-c", "-fPIC", str(tmp_path / "tma.c"), "-o", str(tmp_path / "tma.o")],
                   check=True)
    so = mdir / f"{mdir.name}.so"
    st = so.stat()
    subprocess.run(["c++", *map(str, sorted(mdir.glob("*.cuda.o"))), str(tmp_path / "tma.o"),
                    "-shared", f"-L{lib}", "-l:libcudart.so.12", "-o", str(so)], check=True)
    os.utime(so, ns=(st.st_atime_ns, st.st_mtime_ns))
    seed = tmp_path / "seed.tar"
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", str(seed)], env=benv)
    assert r.returncode == 0, r.stderr
    old = tmp_path / "cu124"
    old.mkdir()
    extract_cudart(WHEEL_12_4, old / "libcudart.so.12")
    base = tmp_path / "base"
    assert do(t2, base, "import", str(seed)).returncode == 0
    r = do(t2, base, "verify", "--json", CUDA_LIB_PATH=str(old))
    assert r.returncode == 1, r.stdout + r.stderr
    m = json.loads(r.stdout)["modules"][0]
    assert m["verdict"] == "broken" and m["rebuild"]["work"] == 0
    assert "cudart-missing-symbol" in [f["id"] for f in m["findings"]]
    # The quiet twin: the same module where FlashInfer preloads 12.9.79 loads fine.
    r = do(t2, base, "verify", "--json", CUDA_LIB_PATH=str(lib))
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_input_is_one_line_exit_2(t2, tmp_path):
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    for args in (["import", str(tmp_path / "junk.tar")], ["import", str(tmp_path / "none.tar")]):
        r = do(t2, tmp_path / "base", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("fidoctor: error: ")
    os.mkfifo(tmp_path / "fifo.tar")
    r = do(t2, tmp_path / "base", "import", str(tmp_path / "fifo.tar"))
    assert r.returncode == 2 and "not a regular file" in r.stderr


def test_export_refuses_a_module_not_up_to_date_where_it_was_built(built, tmp_path):
    """A workspace copied elsewhere by hand: its build.ninja names the old paths, ninja there
    would rebuild; export says so instead of shipping it."""
    copy = tmp_path / "copy"
    shutil.copytree(built / ".cache", copy / ".cache", symlinks=True)
    py = target_venv()
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", str(tmp_path / "x.tar")],
                env=build_env(py.parent.parent, copy))
    assert r.returncode == 2 and "outside its module dir" in r.stderr
    assert not (tmp_path / "x.tar").exists()
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", "/dev/null"],
                env=build_env(py.parent.parent, built))
    assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_zstd_bundle_round_trips_and_is_refused_without_zstd(built, t2, tmp_path):
    """zstd is optional: with the real zstd binary a .tar.zst works end to end; where
    neither the binary nor the zstandard module exists, export and import say so (exit 2)."""
    if not shutil.which("zstd"):
        pytest.skip("no zstd binary on this box")
    py = target_venv()
    env = build_env(py.parent.parent, built)
    zst = tmp_path / "k.tar.zst"
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", str(zst)], env=env)
    assert r.returncode == 0 and "(zstd)" in r.stdout, r.stderr
    assert zst.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    base = tmp_path / "base"
    assert do(t2, base, "import", str(zst)).returncode == 0
    assert do(t2, base, "verify").returncode == 0
    nozstd = dict(env, PATH=str(py.parent))  # the venv's bin: ninja, python; no zstd
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o",
                 str(tmp_path / "again.tar.zst")], env=nozstd)
    assert r.returncode == 2 and "zstd is not available here" in r.stderr
    assert not list(tmp_path.glob("again.tar.zst*"))
    tenv = target_env(t2, tmp_path / "b2", XDG_STATE_HOME=str(tmp_path / "s2"))
    tenv["PATH"] = str(t2["venv"] / "bin")
    r = run_cli(["cache", "import", "--python", str(t2["python"]), *ARCH, str(zst)], env=tenv)
    assert r.returncode == 2 and "zstd-compressed and zstd is not available" in r.stderr


def test_import_killed_half_way_is_recovered_by_undo(bundle, t2, tmp_path):
    """A real import SIGKILLed inside its transaction (the txn layer's test pause point, after
    the first step): fidoctor undo rolls it back from the journal and the disk, leaving no
    module and no staged copy behind."""
    base = tmp_path / "base"
    state = tmp_path / "state"
    env = target_env(t2, base, XDG_STATE_HOME=str(state), FIDOCTOR_TEST_PAUSE_AT="after-step",
                     FIDOCTOR_TEST_PAUSE_S="60")
    p = subprocess.Popen([sys.executable, "-m", "fidoctor", "cache", "import", "--python",
                          str(t2["python"]), *ARCH, str(bundle)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        marker = state / "fidoctor" / "test-paused-after-step"
        for _ in range(600):
            if marker.exists() or p.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the import never reached its first step"
        p.kill()
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    ws = workspace_of(base)
    assert any((ws / "fidoctor-import").iterdir()), "the killed import left its staging dir"
    r = run_cli(["history"], env=dict(env, FIDOCTOR_TEST_PAUSE_AT=""))
    assert "interrupted" in r.stdout, r.stdout
    r = run_cli(["undo"], env=dict(env, FIDOCTOR_TEST_PAUSE_AT=""))
    assert r.returncode == 0, r.stdout + r.stderr
    left = [q for d in ("cached_ops", "generated") if (ws / d).exists() for q in (ws / d).iterdir()]
    assert left == [], left
    assert not (ws / "fidoctor-import").exists()


def test_verify_by_pid_of_a_running_server(bundle, t2, tmp_path, procs):
    """--pid: the environment and interpreter of a live process from the second venv."""
    base = tmp_path / "base"
    assert do(t2, base, "import", str(bundle)).returncode == 0
    env = target_env(t2, base)
    server = procs.start([str(t2["python"]), "-c", "import time; time.sleep(600)"], env=env)
    time.sleep(0.5)
    r = run_cli(["cache", "verify", "--pid", str(server.pid), *ARCH, "--json"],
                env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xc")))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["workspace"] == str(workspace_of(base))
    assert doc["target"]["cuda_home"] == str(t2["cuda_home"])
    assert [m["verdict"] for m in doc["modules"]] == ["ok"]


def test_export_modules_selects_and_names_what_is_missing(built, tmp_path):
    py = target_venv()
    env = build_env(py.parent.parent, built)
    one = tmp_path / "one.tar"
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "--modules",
                 "single-decode:f16:64", "-o", str(one)], env=env)
    assert r.returncode == 0, r.stderr
    with tarfile.open(one) as tar:
        doc = json.loads(tar.extractfile("manifest.json").read())
    assert [m["name"] for m in doc["modules"]] == [
        "single_decode_with_kv_cache_dtype_q_f16_dtype_kv_f16_dtype_o_f16_head_dim_qk_64_head_dim_"
        "vo_64_posenc_0_use_swa_False_use_logits_cap_False"]
    src = doc["source"]
    assert src["flashinfer_version"] == "0.7.2.post1" and src["arch"] == "90a"
    assert src["cuda_home"] == "/usr/local/cuda" and src["toolkit_version"].startswith("13.")
    m = doc["modules"][0]
    assert len(m["so_sha256"]) == 64 and m["ninja_log_version"] == 7 and len(m["ninja_log"]) == 4
    assert any(p.endswith("/flashinfer/utils.cuh") for p in m["inputs"])
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "--modules", "decode:bf16",
                 "-o", str(tmp_path / "none.tar")], env=env)
    assert r.returncode == 2 and "--modules decode:bf16: no module" in r.stderr
    assert not (tmp_path / "none.tar").exists()


def test_target_whose_env_changes_build_ninja_is_refused(bundle, t2, tmp_path):
    """Built with FLASHINFER_EXTRA_LDFLAGS (the libcuda stub dir), imported where it is unset:
    FlashInfer would write another link line there and relink (a failed relink breaks a good
    module), so import refuses and names the variable."""
    base = tmp_path / "base"
    env = target_env(t2, base, XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("FLASHINFER_EXTRA_LDFLAGS")
    r = run_cli(["cache", "import", "--python", str(t2["python"]), *ARCH, str(bundle)], env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "FLASHINFER_EXTRA_LDFLAGS was '-L" in r.stderr and "is unset in the target" in r.stderr
    assert not base.exists()


def test_export_under_another_env_than_the_build_is_refused(built, tmp_path):
    """The manifest records the export's environment as the build's: an export run without
    the FLASHINFER_EXTRA_CUDAFLAGS / with a CXX the modules were not built with says so."""
    py = target_venv()
    env = build_env(py.parent.parent, built, extra={"CXX": "g++-12"})
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", str(tmp_path / "x.tar")],
                env=env)
    assert r.returncode == 2 and "built under another environment" in r.stderr
    assert "CXX=g++-12 here" in r.stderr
    env = build_env(py.parent.parent, built, extra={"FLASHINFER_EXTRA_CUDAFLAGS": "-DX=1"})
    r = run_cli(["cache", "export", "--python", str(py), *ARCH, "-o", str(tmp_path / "x.tar")],
                env=env)
    assert r.returncode == 2 and "FLASHINFER_EXTRA_CUDAFLAGS=-DX=1 here" in r.stderr
    assert not (tmp_path / "x.tar").exists()
