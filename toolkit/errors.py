"""User-facing errors: one line saying what is wrong and what to do.

The CLI turns any `UserError` into that line on stderr and exit code 2; anything else is a bug
and keeps its traceback (shown in full with `--debug`).
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, not with the toolkit."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class InputError(UserError):
    """An input image or array that cannot be used."""


class CheckpointError(UserError):
    """A checkpoint file that does not fit the network."""


class OutputError(UserError):
    """An output path that cannot be written."""


class MissingDependencyError(UserError):
    """An optional package is not installed; the hint names the install extra."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            f'install it with: pip install "llpacknet-edge[{extra}]"',
        )
        self.package = package
        self.extra = extra


def closest_hint(name: str, choices) -> str:
    """'did you mean X?' for a typo, else the list of choices."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(choices)}"


def require_torch(purpose: str):
    """Import torch or explain which extra brings it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised in the no-torch subprocess test
        raise MissingDependencyError("torch", "export", purpose) from exc
    return torch
