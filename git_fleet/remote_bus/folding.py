"""Ended tasks folded out of their own refs into one, the log (refs/fleet/bus/log), in batches:
a push receives every ref the remote has, so the remote keeps about as many refs as tasks in
flight. One atomic push moves the log and deletes the folded refs, each with the value it was
read with; one that lost to another fold (or to a result kept aside meanwhile) changes nothing,
and the next end tries again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import records
from ..errors import FleetError
from ..gateway import meeting
from ..gateway.meeting import Update
from .view import LOG

if TYPE_CHECKING:
    from . import RemoteBus

FOLD_AT = 16  # ended tasks left in refs of their own before they are folded


def fold(bus: RemoteBus, at_least: int = FOLD_AT) -> bool:
    """Fold the ended tasks this clone knows of, if there are `at_least`; whether it landed."""
    view = bus.view()
    ended = [e for e in view.entries.values() if e.rec.ended and (e.tip is not None or e.kept_refs)]
    if not ended or len(ended) < at_least:
        return False
    files: dict[str, bytes] = {}
    updates: list[Update] = []
    for e in ended:
        where = f"{e.tid:06d}/"
        if e.tip is not None:
            files[where + "record"] = _message(bus, e.tip)
            files[where + "spec.md"] = e.spec
            if e.result is not None:
                files[where + "result.md"] = e.result
            updates.append(Update(bus.ref(e.tid), None, e.tip))
        for name, data in e.kept.items():
            files[f"{where}kept/{name}.md"] = data
        updates += [Update(ref, None, oid) for ref, oid in e.kept_refs.items()]
    base = str(meeting.commit(bus.repo, view.log).tree_id) if view.log else None
    tree = meeting.tree_with(bus.repo, base, files)
    new = meeting.make_tree_commit(bus.repo, records.new("log", machine=bus.machine).message(), tree, view.log)
    try:
        return bus.push([Update(meeting.SHARED + LOG, new, view.log), *updates]).won
    except FleetError:
        return False  # (only housekeeping: the next end folds them)


def _message(bus: RemoteBus, tip: str) -> bytes:
    return meeting.commit(bus.repo, tip).message.encode()
