"""The one exception family of git-fleet; the CLI turns it into `error:`/`hint:` lines."""

from __future__ import annotations

REFUSED = 1  # the command was understood and declined: a check failed, work would be lost
MISUSE = 2  # the command line or the configuration is wrong
INTERNAL = 3  # a bug in git-fleet: reported in one line, never as a traceback


class FleetError(Exception):
    exit_code = REFUSED

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        lines = [f"error: {line}" for line in self.message.splitlines()]
        if self.hint:
            lines += [f"hint: {line}" for line in self.hint.splitlines()]
        return "\n".join(lines)


class UsageError(FleetError):
    exit_code = MISUSE


class ConfigError(FleetError):
    """A malformed .gitfleet.toml; the message starts with file:line."""

    exit_code = MISUSE


class GitError(FleetError):
    """git itself failed; the message carries the command and what git said."""
