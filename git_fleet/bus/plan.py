"""master_plan.md: the tasks by state and by agent, regenerated between two marker lines;
everything outside them is the orchestrator's own and is kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from .. import durable
from .specs import ENDED, Task


class Store(Protocol):
    """What the plan reads of a bus: the files' (store.Store) or the remote's (remote_bus)."""
    root: Path
    plan: Path

    def all(self) -> list[Task]: ...

    def ended(self, tid: int) -> tuple[str, Path] | None: ...

PLAN_START = "<!-- git-fleet: plan starts here; everything between these markers is regenerated -->"
PLAN_END = "<!-- git-fleet: plan ends here -->"


def waits_for(bus: Store, task: Task, tasks: list[Task]) -> str:
    """What `task` waits for, each marked if no task ever gets past it: failed or cancelled,
    removed (its spec deleted by rm), or missing (no spec, deleted by hand)."""
    state = {t.id: t.status for t in tasks}
    marks = []
    for d in task.depends:
        mark = state.get(d)
        if mark is None:
            ended = bus.ended(d)
            mark = "removed" if ended is not None and ended[0] == "removed" else "missing"
        marks.append(f"task-{d:03d}" + (f" ({mark})" if mark in (*ENDED, "missing") else ""))
    return ", ".join(marks)


def write_plan(bus: Store) -> Path:
    tasks = bus.all()
    by_status: dict[str, list[Task]] = {}
    done = {t.id for t in tasks if t.status == "done"}
    for t in tasks:
        status = "blocked" if t.status == "open" and not set(t.depends) <= done else t.status
        by_status.setdefault(status, []).append(t)
    lines = [PLAN_START, "", f"## Tasks ({len(tasks)})", ""]
    for status in ("claimed", "open", "blocked", "failed", "cancelled", "done", "invalid"):
        group = by_status.get(status, [])
        if not group:
            continue
        lines += [f"### {status.capitalize()} ({len(group)})", ""]
        for t in group:
            rel = os.path.relpath(t.path, bus.root)
            line = f"- [{t.name}]({rel}) {t.title}"
            if t.agent:
                line += f" (for {t.agent})"
            if t.claimed_by and status == "claimed":
                line += f", claimed by {t.claimed_by}"
            if t.depends:
                line += ", after " + waits_for(bus, t, tasks)
            if t.result:
                line += f" → [result]({os.path.relpath(t.result, bus.root)})"
            if t.error:
                line += f": {t.error}"
            lines.append(line)
        lines.append("")
    agents = sorted({t.agent or "(anyone)" for t in tasks})
    if agents:
        lines += ["## By agent", ""]
        for a in agents:
            mine = [t for t in tasks if (t.agent or "(anyone)") == a]
            counts = ", ".join(f"{sum(1 for t in mine if t.status == s)} {s}"
                               for s in ("open", "claimed", "done", "failed", "cancelled")
                               if any(t.status == s for t in mine))
            lines.append(f"- {a}: {counts}")
        lines.append("")
    lines.append(PLAN_END)
    generated = "\n".join(lines)
    old = bus.plan.read_text(encoding="utf-8") if bus.plan.exists() else "# Master plan\n\n"
    if PLAN_START in old and PLAN_END in old:
        before, rest = old.split(PLAN_START, 1)
        after = rest.split(PLAN_END, 1)[1]
        text = before + generated + after
    else:
        text = old.rstrip("\n") + "\n\n" + generated + "\n"
    durable.replace(bus.plan, text)
    return bus.plan
