"""The agent's brief, told to it by its CLI's hooks: all of it when a session starts, and again
when the fleet changed it (a task added for it, a zone set) at the agent's next prompt or tool
call. An idle agent runs no hook: it hears of a change when it next works.

`<agent's state directory>/told` keeps the identity (size and time) of the brief last told."""

from __future__ import annotations

import os

from . import agent_state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .edit_gate import Place

BRIEF = os.path.join(".fleet", "brief.md")


def _identity(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_size} {st.st_mtime_ns}"


def news(place: Place, fresh: bool) -> str | None:
    """What to add to the model's context: the whole brief for a new session (`fresh`), else the
    brief if it changed since it was last told; None when there is nothing new."""
    path = os.path.join(place.top, BRIEF)
    told_file = os.path.join(agent_state.directory(place.common_dir, place.agent.name), "told")
    now = _identity(path)
    try:
        with open(told_file, encoding="utf-8") as fh:
            told = fh.read().strip()
    except OSError:
        told = None
    if now is None or (not fresh and now == told):
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    try:
        os.makedirs(os.path.dirname(told_file), exist_ok=True)
        with open(told_file, "w", encoding="utf-8") as fh:
            fh.write(now)
    except OSError:
        pass  # (told again next time: better twice than never)
    lead = (f"You are agent '{place.agent.name}' of a git-fleet fleet; your brief ({BRIEF}) follows."
            if fresh else f"The fleet changed your brief ({BRIEF}); it now reads:")
    return f"{lead}\n\n{text}"
