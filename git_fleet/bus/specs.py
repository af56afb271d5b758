"""The task files: a spec's format (front matter and body), its ids and names, and Task.

A spec is Markdown under a small front matter (`id`, `title`, `agent`, `depends`, `priority`,
`created`), written once by the orchestrator, readable and editable by hand; a result file has the
same shape (`status`, `agent` or `holder`, `attempt`, `finished`). Errors name the file and line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FleetError, UsageError

_ID = re.compile(r"^(?:task-)?0*(\d+)$")
SPEC = re.compile(r"^task-(\d+)-.*\.md$")  # a spec's file name: task-NNN-slug.md
CANCELLED = "Cancelled."  # the result of a task cancelled without a reason
ENDED = ("failed", "cancelled", "removed")  # outcomes a task that waits for it never gets past


def parse_id(text: str) -> int:
    m = _ID.match(text.strip())
    if not m:
        raise UsageError(f"'{text}' is not a task id", "ids look like 7, 007 or task-007")
    return int(m.group(1))


def one_line(text: str) -> str:
    """`text` with its lines joined by spaces: how a reason or a title is shown, and all a
    front matter value may be (a line break in one would start a line of its own there)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def slug(title: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return s[:40].rstrip("-") or "task"


# -- front matter -----------------------------------------------------------------------------------

def front_matter(path: Path, text: str) -> tuple[dict[str, Any], str]:
    """The `---` block at the top of a task file, as a dict, and the body; errors name file and line."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise FleetError(f"{path}:1: no front matter (the file must start with a '---' line)")
    data: dict[str, Any] = {}
    for no, line in enumerate(lines[1:], 2):
        if line.strip() == "---":
            return data, "\n".join(lines[no:]).lstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[a-z_]+", key.strip()):
            raise FleetError(f"{path}:{no}: expected 'key: value', found {line.strip()!r}")
        value = value.strip()
        if value.startswith("["):
            if not value.endswith("]"):
                raise FleetError(f"{path}:{no}: unclosed list in {key.strip()}")
            data[key.strip()] = [v.strip().strip("\"'") for v in value[1:-1].split(",") if v.strip()]
        else:
            data[key.strip()] = value.strip("\"'")
    raise FleetError(f"{path}:{len(lines)}: the front matter is not closed with a '---' line")


def line_of(path: Path, key: str) -> int:
    """The line of `key:` in the front matter of `path` (1 if it cannot be found)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return 1
    for no, line in enumerate(lines[1:], 2):
        if line.strip() == "---":
            break
        if line.partition(":")[0].strip() == key:
            return no
    return 1


def field_value(path: Path, key: str, convert: Any, value: Any) -> Any:
    """A front matter value converted, or an error naming the file and the line of `key`."""
    try:
        return convert(value)
    except (ValueError, FleetError) as e:
        why = e.message if isinstance(e, FleetError) else f"{value!r} is not a number"
        raise FleetError(f"{path}:{line_of(path, key)}: {key}: {why}") from None


def render(meta: dict[str, Any], body: str) -> str:
    """A task file: the front matter, one line per key whatever the values hold (so no value can
    end it or add keys: its lines are joined, a value read as a list is quoted), then the body."""
    out = ["---"]
    for k, v in meta.items():
        if isinstance(v, list):
            out.append(f"{k}: [{', '.join(one_line(x) for x in v)}]")
        elif v is not None:
            value = one_line(v)
            out.append(f'{k}: "{value}"' if value.startswith("[") else f"{k}: {value}")
    return "\n".join(out) + "\n---\n\n" + body.rstrip("\n") + "\n"


def raw_depends(path: Path) -> list[int] | None:
    """The `depends:` of a spec that does not read as a whole (broken by hand), from its lines
    alone; None when they cannot be told (not text, no front matter, a depends line that does not
    read): then the task may wait for any other."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or lines[0].strip() != "---":
        return None
    found: list[int] = []
    for line in lines[1:]:  # (an unclosed front matter: every line, for a depends anywhere)
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() == "depends":
            value = value.strip()
            if not (value.startswith("[") and value.endswith("]")):
                return None
            try:
                found += [parse_id(v.strip().strip("\"'")) for v in value[1:-1].split(",") if v.strip()]
            except FleetError:
                return None
    return found


def ended_at(result: Path) -> str:
    """' at TIME' a result file says its task ended ('' if it cannot be read or does not say)."""
    try:
        meta, _ = front_matter(result, result.read_text(encoding="utf-8"))
    except (FleetError, OSError, UnicodeDecodeError):
        return ""
    return f" at {meta['finished']}" if meta.get("finished") else ""


@dataclass
class Task:
    id: int
    path: Path
    title: str = ""
    agent: str | None = None
    depends: list[int] = field(default_factory=list)
    priority: int = 0
    created: str = ""
    body: str = ""
    error: str | None = None  # a spec edited by hand into something unreadable
    depends_known: bool = True  # False: a spec so broken that what it waits for cannot be told
    status: str = "open"  # open, claimed, done, failed, cancelled, invalid; removed while rm finishes
    attempt: int = 0
    claimed_by: str | None = None
    expires: float | None = None
    result: Path | None = None
    name: str = field(init=False, default="")
    chain: Any = field(default=None, repr=False, compare=False)  # slots.Chain: its attempts, for the bus's operations

    def __post_init__(self) -> None:
        self.name = f"task-{self.id:03d}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "title": self.title, "agent": self.agent,
                "depends": self.depends, "priority": self.priority, "created": self.created,
                "status": self.status, "attempt": self.attempt, "claimed_by": self.claimed_by,
                "lease_expires": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))
                                  if self.expires else None),
                "path": str(self.path), "result": str(self.result) if self.result else None,
                "error": self.error}


def why_cancelled(task: Task) -> str:
    """': the reason' of a cancelled task, as its result file gives it ('' if none)."""
    if task.result is None:
        return ""
    try:
        meta, body = front_matter(task.result, task.result.read_text(encoding="utf-8"))
    except (FleetError, OSError, UnicodeDecodeError):
        return ""
    when = f" at {one_line(meta['finished'])}" if meta.get("finished") else ""
    reason = one_line(body)  # on one line wherever it is shown: an error is one line
    return when + (f": {reason}" if reason and reason != CANCELLED else "")
