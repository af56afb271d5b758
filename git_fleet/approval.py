"""Which zones the person approved: a merge counts only those.

`.gitfleet.toml` in the main worktree is a file an agent can write (with no sandbox): widening its
own zone there, even hidden from `git status` with `update-index --skip-worktree`, would have the
next merge count the wider zone. So every fleet command that writes the file records what it
wrote (`$GIT_COMMON_DIR/fleet/approved.toml`), and the zone table (the base, case rule, shared
files, and each agent's branch and zone) approved is that record's (without one, from a fleet set
up before records were kept, the base branch's committed file's). A table that differs was
changed by hand: the merge, and any command that would
write the file on top of it, show the change and need the person's yes; a new overlap between
zones is refused outright, as `git fleet-add` refuses one. `git fleet-zones --approve` approves
the file as it is, after showing what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config, durable
from .config import Config
from .errors import FleetError

RECORD = Path("fleet") / "approved.toml"
# what a fleet command is about to write, kept until it has: a command killed between writing the
# file and its record leaves either text approved, not a fleet that refuses its own write
NEXT = Path("fleet") / "approved-next.toml"


def table(cfg: Config) -> dict[str, Any]:
    """What decides who may change what: the part of a config that approval covers."""
    return {"base": cfg.base, "ignore_case": cfg.ignore_case, "union": list(cfg.union),
            "agents": {n: {"branch": a.branch, "zone": list(a.zone)} for n, a in sorted(cfg.agents.items())}}


def record(common_dir: Path, text: str) -> None:
    """The config as a fleet command wrote (or the person approved) it."""
    (common_dir / RECORD).parent.mkdir(exist_ok=True)
    durable.replace(common_dir / RECORD, text)
    (common_dir / NEXT).unlink(missing_ok=True)


def write_config(common_dir: Path, path: Path, text: str, pause: Callable[[str], None] | None = None) -> None:
    """A fleet command writes the config: the text about to be written is kept (NEXT) until the
    record has it, so that a kill between the two writes leaves either text approved."""
    (common_dir / NEXT).parent.mkdir(exist_ok=True)
    durable.replace(common_dir / NEXT, text)
    durable.replace(path, text)
    if pause is not None:
        pause("config-written-unrecorded")
    record(common_dir, text)


@dataclass
class Unapproved:
    changes: list[str] = field(default_factory=list)  # one line each, as the person reads them
    overlaps: list[str] = field(default_factory=list)  # overlaps the approved zones did not have

    def __bool__(self) -> bool:
        return bool(self.changes or self.overlaps)

    def lines(self) -> list[str]:
        return [f"  {c}" for c in self.changes] + [f"  new overlap: {o}" for o in self.overlaps]

    def error(self, what: str, cfg_path: Path, common_dir: Path) -> FleetError:
        head = f"the zones in {cfg_path} were changed by no fleet command and are not approved, so {what}:"
        return FleetError("\n".join([head, *self.lines()]),
                          "if you made these changes: git fleet-zones --approve, in the main worktree; if not, put "
                          f"the zones back as a fleet command last wrote them: {common_dir / RECORD}")


def _approved(common_dir: Path, cfg: Config) -> Config | None:
    """The approved config: the record; without one (a fleet set up before records were kept),
    the base's committed file; None when there is neither."""
    try:
        return config.parse(cfg.path, (common_dir / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        try:
            return config.committed(common_dir, cfg.base)
        except FleetError:
            return config.parse(cfg.path, "")  # unreadable: nothing is approved
    except (OSError, UnicodeDecodeError, FleetError):
        return config.parse(cfg.path, "")


def _next_table(common_dir: Path, cfg: Config) -> dict[str, Any] | None:
    try:
        return table(config.parse(cfg.path, (common_dir / NEXT).read_text(encoding="utf-8")))
    except (OSError, FleetError):
        return None


def check(common_dir: Path, cfg: Config,
          overlaps_of: Callable[[Config], dict[tuple[str, str], str]] | None = None) -> Unapproved:
    """How `cfg`'s zone table differs from the approved one (nothing when it is approved).
    overlaps_of(Config) -> {(agent, agent): a path both own}, or None not to look. With neither
    a record nor a committed file (a fleet set up before records were kept, never committed),
    the file as it is now becomes the record."""
    before = _approved(common_dir, cfg)
    if before is None:
        record(common_dir, cfg.text or "")
        return Unapproved()
    was, now = table(before), table(cfg)
    if was == now or _next_table(common_dir, cfg) == now:
        return Unapproved()
    out = Unapproved()
    for key in ("base", "ignore_case", "union"):
        if was[key] != now[key]:
            out.changes.append(f"{key}: {was[key]!r} -> {now[key]!r}")
    for name in sorted(set(was["agents"]) | set(now["agents"])):
        a, b = was["agents"].get(name), now["agents"].get(name)
        if a is None:
            out.changes.append(f"agent '{name}' added: zone {'  '.join(b['zone'])}")
        elif b is None:
            out.changes.append(f"agent '{name}' removed")
        else:
            if a["zone"] != b["zone"]:
                out.changes.append(f"agent '{name}': zone {'  '.join(a['zone'])} -> {'  '.join(b['zone'])}")
            if a["branch"] != b["branch"]:
                out.changes.append(f"agent '{name}': branch {a['branch']} -> {b['branch']}")
    if overlaps_of is not None:
        old_pairs = overlaps_of(before)
        out.overlaps = [f"{a} and {b} both own {example}" for (a, b), example in sorted(overlaps_of(cfg).items())
                        if (a, b) not in old_pairs]
    return out
