"""The two on-disk fact caches (ELF facts, tool answers) share one load/save: ``jsoncache``.

Real files in the test's temp dir: a round trip, a symlink planted where the
cache goes (refused, never replaced, its target untouched), and a cache dir
that cannot exist (an error string, never an exception).
"""

from __future__ import annotations

import json
import os

import pytest

from fidoctor.elf import FactCache
from fidoctor.toolcache import ToolCache


def _caches(path):
    return [FactCache(str(path)), ToolCache(5.0, str(path))]


@pytest.mark.parametrize("which", [0, 1])
def test_round_trip_keeps_entries_and_leaves_no_temp_file(tmp_path, which):
    path = tmp_path / "cache" / "facts.json"
    c = _caches(path)[which]
    c.entries["k"] = {"value": 1}
    c.dirty = True
    assert c.save() is None and not c.dirty
    assert json.loads(path.read_text()) == {"version": 1, "entries": {"k": {"value": 1}}}
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert os.listdir(path.parent) == ["facts.json"]
    again = _caches(path)[which]
    assert again.entries == {"k": {"value": 1}} and again.load_error == ""


@pytest.mark.parametrize("which", [0, 1])
def test_symlink_in_place_of_the_cache_is_refused_not_replaced(tmp_path, which):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    path = tmp_path / "facts.json"
    path.symlink_to(victim)
    c = _caches(path)[which]
    assert "starting afresh" in c.load_error
    c.entries["k"] = {"value": 1}
    c.dirty = True
    err = c.save()
    assert err and "symlink" in err and str(path) in err
    assert path.is_symlink() and victim.read_text() == "keep me"


@pytest.mark.parametrize("which", [0, 1])
def test_cache_dir_that_cannot_exist_is_an_error_string(tmp_path, which):
    (tmp_path / "file").write_text("")
    c = _caches(tmp_path / "file" / "facts.json")[which]
    c.entries["k"] = {"value": 1}
    c.dirty = True
    err = c.save()
    assert err and err.startswith("cannot save") and c.dirty
