"""Colour only on a TTY, and never when NO_COLOR is set (no-color.org)."""

from __future__ import annotations

import os
import sys
from typing import IO, Optional

import click

COLOURS = {"error": "red", "warning": "yellow", "info": "cyan"}


def use_colour(stream: Optional[IO] = None) -> bool:
    stream = stream or sys.stdout
    if "NO_COLOR" in os.environ:
        return False
    return hasattr(stream, "isatty") and stream.isatty()


class Styler:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, text: str, **kw) -> str:
        return click.style(text, **kw) if self.colour else text

    def severity(self, sev: str) -> str:
        return self(sev.upper(), fg=COLOURS.get(sev), bold=True)
