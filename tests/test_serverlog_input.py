"""``--log`` pointed at what is not a plain server log: the read must stay in its budget and the
verdict must never be "healthy" for what could not be read.

Real files: a sparse file (a log zeroed by ``truncate``), one endless line, real random bytes,
real ``zstd``/``xz``/``bzip2`` output of a real captured FlashInfer failure (see
``serverlog_helpers``), and a ``copytruncate``-style log (a NUL hole, then text).
"""

from __future__ import annotations

import pytest

from fidoctor.serverlog import analyse

pytestmark = pytest.mark.timeout(300)


def test_an_endless_line_stops_at_the_size_budget(tmp_path):
    """Inside a line longer than 64 KiB the reader skipped the rest of the line block by block
    with ``continue`` — past the size and time budget checks: a 4 GB sparse log was read to
    its end (12 s with ``--log-timeout 10``) and called complete ("healthy")."""
    p = tmp_path / "sparse.log"
    with open(p, "wb") as f:
        f.truncate(64 << 20)  # 64 MiB of NUL, no newline: a log zeroed in place
    d = analyse([str(p)], max_bytes=4 << 20)
    f = d["files"][0]
    assert f["complete"] is False and "size budget" in f["stopped"], f
    assert f["bytes_read"] < 8 << 20, f
