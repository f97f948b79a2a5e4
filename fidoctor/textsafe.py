"""Rendered text that cannot drive the terminal and commands that are safe to paste.

Why: names come from the machine (module dirs, paths, log lines, argv), and a
name can hold anything but ``/`` and NUL. A newline in a module dir name made
the printed ``# by hand:`` line run the rest of the name as shell when pasted;
escape sequences retitled, recoloured or hid what the terminal showed.

* ``shown(s)``: every control character (C0, DEL, C1) and every bidi/zero-width
  format character becomes a visible escape (``\\n``, ``\\x1b``, ``\\u202e``);
  applied to every string a finding, plan or report renders.
* ``safe_command(c)``: a command that would carry a control character is not
  printed at all; a comment says why and what to do instead.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_UNSAFE_KEEP_NL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e"
                             "\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}

NOT_SHOWN = ("# by hand: not shown: a name in this command holds control characters "
             "(shown escaped above), and pasting it could run part of that name as a "
             "command; use the fidoctor fix command, or rename the entry first")


def _escape(m: re.Match) -> str:
    ch = m.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def has_unsafe(s: str) -> bool:
    return bool(_UNSAFE.search(s))


def shown(s: str) -> str:
    """``s`` with every control and invisible format character made visible."""
    if not isinstance(s, str):
        return s
    return _UNSAFE.sub(_escape, s) if _UNSAFE.search(s) else s


def terminal(text: str) -> str:
    """A multi-line block for the terminal: like ``shown`` but line breaks are kept."""
    return _UNSAFE_KEEP_NL.sub(_escape, text) if _UNSAFE_KEEP_NL.search(text) else text


def bytes_shown(text: str) -> str:
    """``text`` with each byte that was not UTF-8 (a path's ``\\udcff`` surrogate escape, as
    os.fsdecode makes it) written ``\\xff``, any other lone surrogate ``\\ud800``: the text
    can then be encoded as UTF-8 (a report file, a pasted issue) instead of raising, and
    still names the byte."""
    return _SURROGATE.sub(_surrogate, text) if _SURROGATE.search(text) else text


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate(m: re.Match) -> str:
    n = ord(m.group(0))
    return f"\\x{n - 0xdc00:02x}" if 0xdc80 <= n <= 0xdcff else f"\\u{n:04x}"


def safe_command(c: str) -> str:
    """``c`` if it is safe to paste, else a comment saying why it is not shown."""
    if not isinstance(c, str) or not has_unsafe(c):
        return c
    return NOT_SHOWN
