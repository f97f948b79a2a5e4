"""What the version matrix's real FlashInfer releases cost a cold CI machine.

  python bench/bench_releases.py [--jobs N] [--cache DIR] VERSION…

Installs each release exactly as the tests do (tests/release_helpers.py: ``pip download`` from
PyPI, its own venv, the shared CPU torch through a ``.pth``) into a fresh test cache
(``FIDOCTOR_TEST_CACHE``; default a new ``bench-releases-<time>`` dir next to the usual cache),
``--jobs`` releases at a time. Only the releases are measured: the shared target venv (CPU torch
+ flashinfer 0.7.2.post1, which the rest of the suite builds anyway) is linked in from the
usual cache, built there first if it is missing. Prints, per release, the wall time of its
download + venv + install and the venv's size, then the total wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import warmup_helpers  # noqa: E402
from release_helpers import install, versions_for_ci  # noqa: E402


def du(path: Path) -> str:
    return subprocess.run(["du", "-sh", str(path)], capture_output=True,
                          text=True).stdout.split("\t")[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("versions", nargs="*", help="default: every release of the matrix")
    ap.add_argument("--jobs", type=int, default=1, help="releases installed at once")
    ap.add_argument("--cache", help="test cache to install into (default: a fresh one)")
    a = ap.parse_args()
    versions = a.versions or versions_for_ci()
    target = warmup_helpers.target_venv()  # in the usual cache, before we switch
    cache = Path(a.cache or os.path.expanduser(
        f"~/.cache/fidoctor-test-bench/releases-{time.strftime('%Y%m%dT%H%M%S')}"))
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["FIDOCTOR_TEST_CACHE"] = str(cache)
    venv = target.parent.parent
    link = cache / venv.name
    if not link.exists():
        link.symlink_to(venv)
    print(f"cache {cache}; target venv linked from {venv}", flush=True)

    t0 = time.monotonic()
    install(versions, a.jobs, lambda v, s, py: print(
        f"{v:14} {s:7.1f} s  venv {du(py.parent.parent)}", flush=True))
    print(f"total {time.monotonic() - t0:.1f} s for {len(versions)} release(s), "
          f"--jobs {a.jobs}; downloads {du(cache / 'fi-releases')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
