"""The placeholders of the config's templates: an agent's command and resume command ({agent},
{session}, {model}, ...: filled in shell-quoted) and its worktree path ({repo}, {agent})."""

from __future__ import annotations

import re
import shlex

WORKTREE_PLACEHOLDERS = ("repo", "agent")
PLACEHOLDERS = ("agent", "session", "session_id", "model", "worktree", "branch", "zone", "task", "port")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def unknown_placeholder(template: str) -> str | None:
    """The first {name} in a command template that is not a placeholder; None if all are."""
    for m in _PLACEHOLDER.finditer(template):
        if m.group(1) is not None and m.group(1) not in PLACEHOLDERS:
            return m.group(1)
    return None


def expand_worktree(template: str, agent: str, repo: str) -> str:
    """A worktree path template filled in: {agent} the agent's name, {repo} the main worktree's
    directory name ({{ and }} stand for braces)."""
    values = {"agent": agent, "repo": repo}

    def one(m: re.Match[str]) -> str:
        return m.group(0)[0] if m.group(1) is None else values[m.group(1)]

    return _PLACEHOLDER.sub(one, template)


def unknown_in_path(template: str) -> str | None:
    """The first {name} of a worktree path that is not a placeholder, or a lone brace as "{"."""
    if re.search(r"[{}]", _PLACEHOLDER.sub("", template)):
        return "{"  # a brace is written {{ or }}
    return next((m.group(1) for m in _PLACEHOLDER.finditer(template)
                 if m.group(1) is not None and m.group(1) not in WORKTREE_PLACEHOLDERS), None)


def expand(template: str, values: dict[str, str]) -> str:
    """Fill a command template; every value is shell-quoted ({{ and }} stand for braces)."""
    def one(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        return shlex.quote(values.get(m.group(1), ""))

    return _PLACEHOLDER.sub(one, template)
