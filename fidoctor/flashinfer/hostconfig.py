"""Evaluate the toolkit's ``crt/host_config.h`` guards for one host compiler, as nvcc would.

nvcc preprocesses every ``.cu`` with the host compiler, ``__CUDACC__``
defined, and ``host_config.h`` stops the build with ``#error -- unsupported
GNU version! …`` (or the clang, ICC, xlC, MSVC… variants) when the compiler's
predefined macros fall outside what this toolkit accepts. Rather than keep a
table of versions per toolkit, we run the real header's conditional lines with
the compiler's real predefined macros (``CC -dM -E -x c++ /dev/null``): the
first ``#error`` reached is exactly the one nvcc would print.

A small, total C preprocessor-expression evaluator: integers (with ``L``/``U``
suffixes, hex, octal), identifiers (undefined → 0, as C says), ``defined``,
``! ~ * / % + - << >> < <= > >= == != & ^ | && || ?:`` and parentheses.
Anything it cannot parse evaluates to "unknown" and is reported, never guessed.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|([A-Za-z_]\w*)"
                    r"|(&&|\|\||==|!=|<=|>=|<<|>>|[-+*/%()!~<>&|^?:]))")
_COMMENT = re.compile(r"/\*.*?\*/|//.*$")
_DIRECTIVE = re.compile(r"^\s*#\s*(\w+)\s*(.*)$")


class Unknown(Exception):
    """An expression this evaluator cannot decide."""


def parse_macros(text: str) -> Dict[str, str]:
    """``#define NAME VALUE`` lines of ``CC -dM -E`` → {NAME: VALUE}."""
    out: Dict[str, str] = {}
    for m in re.finditer(r"^#define\s+([A-Za-z_]\w*)(?:\s+(.*))?$", text, re.M):
        out[m.group(1)] = (m.group(2) or "").strip()
    return out


def identifiers(lines: List[List]) -> List[str]:
    """Every identifier the conditional lines mention (which macros matter)."""
    names = set()
    for _, text in lines:
        m = _DIRECTIVE.match(text)
        if m and m.group(1) in ("if", "elif", "ifdef", "ifndef"):
            expr = re.sub(r"\b0[xX][0-9a-fA-F]+\w*|\b\d+\w*", " ", _COMMENT.sub(" ", m.group(2)))
            names |= set(re.findall(r"[A-Za-z_]\w*", expr))
    return sorted(names - {"defined"})


class _Expr:
    def __init__(self, text: str, macros: Dict[str, str]) -> None:
        self.toks: List[Tuple[str, str]] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise Unknown(f"cannot read {text[pos:pos + 20]!r}")
            if m.group(1):
                self.toks.append(("num", m.group(1)))
            elif m.group(2):
                self.toks.append(("id", m.group(2)))
            else:
                self.toks.append(("op", m.group(3)))
            pos = m.end()
        self.i = 0
        self.macros = macros

    def peek(self) -> Optional[Tuple[str, str]]:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Tuple[str, str]:
        t = self.peek()
        if t is None:
            raise Unknown("unexpected end of expression")
        self.i += 1
        return t

    def value(self) -> int:
        v = self.ternary()
        if self.peek() is not None:
            raise Unknown(f"trailing {self.peek()}")
        return v

    def ternary(self) -> int:
        c = self.binary(0)
        if self.peek() == ("op", "?"):
            self.take()
            a = self.ternary()
            if self.take() != ("op", ":"):
                raise Unknown("'?' without ':'")
            b = self.ternary()
            return a if c else b
        return c

    _PREC = [("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="),
             ("<<", ">>"), ("+", "-"), ("*", "/", "%")]

    def binary(self, level: int) -> int:
        if level == len(self._PREC):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            t = self.peek()
            if t is None or t[0] != "op" or t[1] not in self._PREC[level]:
                return left
            op = self.take()[1]
            right = self.binary(level + 1)
            left = _apply(op, left, right)

    def unary(self) -> int:
        t = self.take()
        if t == ("op", "!"):
            return int(not self.unary())
        if t == ("op", "-"):
            return -self.unary()
        if t == ("op", "+"):
            return self.unary()
        if t == ("op", "~"):
            return ~self.unary()
        if t == ("op", "("):
            v = self.ternary()
            if self.take() != ("op", ")"):
                raise Unknown("unbalanced parentheses")
            return v
        if t[0] == "num":
            return int(t[1], 0) if not re.fullmatch(r"0\d+", t[1]) else int(t[1], 8)
        if t == ("id", "defined"):
            paren = self.peek() == ("op", "(")
            if paren:
                self.take()
            name = self.take()
            if paren and self.take() != ("op", ")"):
                raise Unknown("defined( without )")
            return int(name[1] in self.macros)
        if t[0] == "id":
            return _macro_value(t[1], self.macros, 0)
        raise Unknown(f"unexpected {t[1]!r}")


def _apply(op: str, a: int, b: int) -> int:
    if op in ("/", "%") and b == 0:
        raise Unknown("division by zero")
    return {
        "||": lambda: int(bool(a) or bool(b)), "&&": lambda: int(bool(a) and bool(b)),
        "|": lambda: a | b, "^": lambda: a ^ b, "&": lambda: a & b,
        "==": lambda: int(a == b), "!=": lambda: int(a != b), "<": lambda: int(a < b),
        "<=": lambda: int(a <= b), ">": lambda: int(a > b), ">=": lambda: int(a >= b),
        "<<": lambda: a << b, ">>": lambda: a >> b, "+": lambda: a + b, "-": lambda: a - b,
        "*": lambda: a * b, "/": lambda: int(a / b), "%": lambda: a % b,
    }[op]()


def _macro_value(name: str, macros: Dict[str, str], depth: int) -> int:
    if name not in macros:
        return 0
    raw = macros[name].strip()
    if raw == "":
        return 0
    if depth > 8:
        raise Unknown(f"{name} expands too deeply")
    try:
        return _Expr(raw, {k: v for k, v in macros.items() if k != name}).value()
    except Unknown:
        raise Unknown(f"{name} = {raw!r} is not an integer expression") from None


def evaluate(text: str, macros: Dict[str, str]) -> int:
    return _Expr(_COMMENT.sub(" ", text), macros).value()


def first_error(lines: List[List], macros: Dict[str, str]) -> Dict[str, Any]:
    """Walk the conditional lines as the preprocessor does; the first active ``#error``.

    Returns {"error": None | {"line": n, "text": "#error …"}, "unknown": [why…]}.
    An undecidable condition makes its whole group unknown (never taken).
    """
    macros = dict(macros)
    stack: List[List] = []  # [active, taken, parent_active]
    unknown: List[str] = []
    active = True
    for lineno, raw in lines:
        m = _DIRECTIVE.match(_COMMENT.sub(" ", raw))
        if not m:
            continue
        d, rest = m.group(1), m.group(2).strip()
        if d in ("if", "ifdef", "ifndef"):
            parent = active
            cond: Optional[bool] = None
            if parent:
                try:
                    if d == "ifdef":
                        cond = rest.split()[0] in macros if rest else False
                    elif d == "ifndef":
                        cond = rest.split()[0] not in macros if rest else True
                    else:
                        cond = bool(evaluate(rest, macros))
                except Unknown as e:
                    unknown.append(f"line {lineno}: {e}")
                    cond = None
            taken = bool(cond)
            stack.append([taken, taken or cond is None, parent])
            active = parent and taken
        elif d == "elif":
            if not stack:
                continue
            top = stack[-1]
            cond = None
            if top[2] and not top[1]:
                try:
                    cond = bool(evaluate(rest, macros))
                except Unknown as e:
                    unknown.append(f"line {lineno}: {e}")
            take = bool(cond) and top[2] and not top[1]
            top[0] = take
            top[1] = top[1] or take or cond is None
            active = top[2] and take
        elif d == "else":
            if not stack:
                continue
            top = stack[-1]
            take = top[2] and not top[1]
            top[0], top[1] = take, True
            active = take
        elif d == "endif":
            if stack:
                active = stack.pop()[2]
        elif not active:
            continue
        elif d == "define":
            parts = rest.split(None, 1)
            if parts and "(" not in parts[0]:
                macros[parts[0]] = parts[1] if len(parts) > 1 else ""
        elif d == "undef":
            macros.pop(rest.split()[0] if rest else "", None)
        elif d == "error":
            return {"error": {"line": lineno, "text": raw.strip()}, "unknown": unknown}
    return {"error": None, "unknown": unknown}
