"""Who owns what: the owners of a path and of what is inside a directory, the overlaps between
zones, and the checks a new zone passes (not the config itself, not an absolute path, no overlap
nobody allowed; a warning for patterns that own no tracked file)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import config
from .errors import FleetError, UsageError
from .gateway import plumbing
from .zones import Pattern, Zone, find_overlap

if TYPE_CHECKING:
    from .fleet import Fleet


def check_zone(fleet: Fleet, name: str, patterns: Sequence[str], base_commit: str | None) -> list[str]:
    """Refuse a zone pattern that is the fleet's own configuration or an absolute path into this
    repository (a leading '/' anchors a pattern at the root); warn of one that looks like an
    absolute path elsewhere, and of patterns that own no tracked file (a typo gives an agent
    that owns nothing; kept, as the agent may be there to create those files)."""
    fold = str.lower if fleet.config.ignore_case else str
    warnings, empty = [], []
    tracked = list(fleet.repo.tracked_files(base_commit)) if base_commit else []
    for text in patterns:
        if text.startswith("!"):
            continue
        if fold(text.strip().strip("/")) == fold(config.CONFIG_NAME):
            raise UsageError(f"zone pattern '{text}' is {config.CONFIG_NAME}, the fleet's own configuration: "
                             "no agent may own it", "the orchestrator changes it, in the main worktree")
        if text.startswith(str(fleet.main) + "/"):
            raise UsageError(f"zone pattern '{text}' is an absolute path; zones are relative to the repository root",
                             f"write it as '{text[len(str(fleet.main)):]}' (a leading '/' anchors it at the root)")
        first = text[1:].split("/", 1)[0] if text.startswith("/") else ""
        if first and os.path.isdir("/" + first) and not (fleet.main / first).exists():
            warnings.append(f"zone pattern '{text}' of '{name}' looks like an absolute path: a leading '/' anchors "
                            "a pattern at the repository root")
        elif tracked and not any(Zone([text], fleet.config.ignore_case).owns(p) for p in tracked):
            empty.append(text)
    if empty:
        warnings.append(f"zone pattern(s) of '{name}' own no tracked file in {fleet.config.base}: "
                        + "  ".join(empty) + " (a typo? kept, for files the agent will create)")
    return warnings


def refuse_overlap(fleet: Fleet, name: str, zone: Zone, base_commit: str | None) -> None:
    # only the tracked files the new zone owns can be owned twice: filter once, not per agent
    known = [p for p in fleet.repo.tracked_files(base_commit) if zone.owns(p)] if base_commit else []
    for other in fleet.config.agents.values():
        example = find_overlap(zone, other.compiled_zone(), known)
        if example is not None:
            raise FleetError(
                f"zone of '{name}' overlaps the zone of agent '{other.name}': both own '{example}'",
                f"'{other.name}' owns: {'  '.join(other.zone)}\n"
                "narrow the zone (a '!pattern' takes paths out), or pass --allow-overlap")


def has_directory(fleet: Fleet, path: str) -> bool:
    """Whether the base has a directory at `path` (files below it)."""
    base = fleet.repo.resolve(fleet.config.base)
    return base is not None and fleet.repo.ref_value(f"{base}:{path.rstrip('/')}^{{tree}}") is not None


def owners_inside(fleet: Fleet, directory: str) -> dict[str | None, int]:
    """Who owns the files below a directory, in the base and in this worktree's index (None:
    the orchestrator), with how many each: most first, then by name, the orchestrator last."""
    prefix = directory.rstrip("/") + "/"
    base = fleet.repo.resolve(fleet.config.base)
    files = {p for p in fleet.repo.tracked_files(base) if p.startswith(prefix)} if base else set()
    top = fleet.repo.toplevel or fleet.main
    listed = plumbing.git(["ls-files", "-z", "--full-name", "--", f":(top){prefix}"], top, check=False).stdout
    files |= {p.decode("utf-8", "surrogateescape") for p in listed.split(b"\0") if p}
    counts: dict[str | None, int] = {}
    for path in files:
        names: list[str | None] = [name for name, _pattern in owners(fleet, path)] or [None]
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))


def owners(fleet: Fleet, path: str) -> list[tuple[str, Pattern]]:
    """(agent, deciding pattern) for each agent that owns `path`."""
    found = []
    for a in fleet.config.agents.values():
        pat = a.compiled_zone().deciding(path)
        if pat is not None and pat.include:
            found.append((a.name, pat))
    return found


def who(fleet: Fleet, paths: Sequence[str]) -> dict[str, tuple[list[tuple[str, Pattern]], dict[str | None, int] | None]]:
    """For each path as given (relative to the current directory, existing or not): its owners
    with their deciding patterns, and for a directory (one in the work tree, or in the base) the
    owners of the files inside it, with how many each (None for anything else)."""
    found = {}
    for p in paths:
        rel = repo_path(fleet, p)
        inside = owners_inside(fleet, rel) if os.path.isdir(p) or has_directory(fleet, rel) else None
        found[p] = (owners(fleet, rel), inside)
    return found


def overlaps(fleet: Fleet) -> list[tuple[str, str, str]]:
    names = sorted(fleet.config.agents)
    zones = {n: fleet.config.agents[n].compiled_zone() for n in names}
    base = fleet.repo.resolve(fleet.config.base)
    known = list(fleet.repo.tracked_files(base)) if base else []
    found = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            example = find_overlap(zones[a], zones[b], known)
            if example is not None:
                found.append((a, b, example))
    return found


def repo_path(fleet: Fleet, arg: str) -> str:
    """A path given on the command line, relative to the repository root."""
    top = fleet.repo.toplevel or fleet.main
    if not arg:
        raise UsageError("an empty path names nothing", "give paths inside the repository, e.g. src/app.py")
    absolute = os.path.abspath(arg)
    parent, leaf = os.path.split(absolute)
    real = os.path.join(os.path.realpath(parent), leaf) if leaf else os.path.realpath(parent)
    rel = os.path.relpath(real, os.path.realpath(top))
    if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
        raise UsageError(f"'{arg}' is outside the repository {top}", "give paths inside the repository")
    return rel.replace(os.sep, "/")
