"""The one error type fidoctor raises for things the user can act on.

Anything that reaches the CLI as a FidoctorError is printed as a short message
plus a hint, with exit code 2 ("fidoctor could not do its job"), never as a
traceback. Other exceptions are bugs; the CLI still maps them to exit 2 but
says so.
"""

from __future__ import annotations


class FidoctorError(Exception):
    """A failure fidoctor can explain: what went wrong and what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\nhint: {self.hint}" if self.hint else self.message
