"""Property tests (hypothesis) where they pay: the zone matcher against `git check-ignore` on
generated patterns and paths, and the bus's claims under generated interleavings of agents."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time as real_time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from git_fleet.bus import Bus, Task, claims, ending, front_matter, removal, slots, store
from git_fleet.check import CompiledAgent, rules_of
from git_fleet.errors import FleetError
from git_fleet.zones import Zone

# == the zone matcher against git check-ignore ======================================================
#
# A small alphabet, so that patterns and paths meet often. Pattern segments cover literals, '*',
# '**' (whole segment and inside one), '?', brackets (negated, ranges, a class), an escape, a
# non-ASCII letter (two bytes: '?' takes one) and an upper-case letter (for ignore_case); a pattern
# is 1-3 of them, maybe anchored by a leading '/', maybe directory-only by a trailing '/'.
# Left out on purpose, as tests/test_zone_patterns.py covers them by hand or zones refuse them:
# comments ('#'), trailing spaces, empty segments, '.' and '..' (refused: not a path inside the
# repository), unclosed brackets (refused). Every pattern generated here must compile. Also left
# out, where all patterns go into one .gitignore: '!' (where zones differ from .gitignore on
# purpose). Paths are 1-4 names.
SEGMENTS = ["a", "b", "ab", "*", "**", "?", "[ab]", "[!a]", "[a-b]", "[[:alpha:]]", "*.py", "a*", "*b", "a?",
            "a**", "\\*", "A", "é"]
NAMES = ["a", "b", "ab", "ba", "aa", "a.py", "b.py", ".py", "A", "é", "*", "x"]


segment_lists = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3)
patterns = st.builds(lambda lead, segs, trail: lead + "/".join(segs) + trail,
                     st.sampled_from(["", "", "/"]), segment_lists,
                     st.sampled_from(["", "", "/"]))
paths = st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map("/".join),
                 min_size=1, max_size=16, unique=True)

ZONE_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def scratch_repo(tmp_path: Path) -> Path:
    """An empty repository to ask git about (made once per test, for all its examples). The paths
    asked about are never created, so git takes each as a file, not a directory, and its leading
    components as directories: the question a zone answers for a path in a commit."""
    repo = tmp_path / "scratch"
    if not (repo / ".git").is_dir():
        subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def git_ignored(repo: Path, lines: list[str], paths: list[str], ignore_case: bool) -> dict[str, str | None]:
    """Each path -> the pattern of a .gitignore holding `lines` by which git check-ignore says it
    is ignored (itself, or through a leading directory), or None if it is not. One git process
    for all the paths, with core.ignoreCase as `ignore_case`."""
    (repo / ".gitignore").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    proc = subprocess.run(["git", "-c", f"core.ignoreCase={str(ignore_case).lower()}", "check-ignore", "--no-index",
                           "--stdin", "-z", "--verbose", "--non-matching"], cwd=repo, capture_output=True,
                          input="\0".join(paths).encode())
    assert proc.returncode in (0, 1), proc.stderr.decode()
    fields = proc.stdout.decode().split("\0")[:-1]
    assert len(fields) == 4 * len(paths), fields
    out: dict[str, str | None] = {}
    for i in range(0, len(fields), 4):
        _source, _line, pattern, path = fields[i:i + 4]
        out[path] = pattern if pattern and not pattern.startswith("!") else None
    assert set(out) == set(paths)
    return out


def fleet_owned(zone_patterns: list[str], paths: list[str], ignore_case: bool) -> set[str]:
    """The paths a zone owns, asked both ways: through Zone (the CLI) and through CompiledAgent on
    the rules as the compiled-zone cache stores them (JSON), which the commit hook reads."""
    zone = Zone(zone_patterns, ignore_case)
    owned = {p for p in paths if zone.owns(p)}
    agent = CompiledAgent("a", "fleet/a", "/w", zone_patterns, json.loads(json.dumps(rules_of(zone))), ignore_case)
    assert {p for p in paths if agent.owns(p)} == owned, "the hook's compiled zone and Zone disagree"
    return owned


@ZONE_SETTINGS
@given(zone_patterns=st.lists(patterns, min_size=1, max_size=3), paths=paths, ignore_case=st.booleans())
def test_a_zone_owns_what_a_gitignore_of_its_patterns_ignores(tmp_path: Path, zone_patterns: list[str],
                                                              paths: list[str], ignore_case: bool) -> None:
    """All patterns in one .gitignore against the zone of the same patterns. No '!' here: that is
    where zones differ from .gitignore on purpose (README, Zones: a negation reaches below a
    matched directory); negations are checked pattern by pattern below."""
    repo = scratch_repo(tmp_path)
    git = git_ignored(repo, zone_patterns, paths, ignore_case)
    theirs = {p for p, by in git.items() if by is not None}
    ours = fleet_owned(zone_patterns, paths, ignore_case)
    note(f"git: {git}")
    assert ours == theirs, f"only the zone owns {sorted(ours - theirs)}; only git ignores {sorted(theirs - ours)}"


@ZONE_SETTINGS
@given(zone_patterns=st.lists(st.tuples(st.booleans(), patterns), min_size=2, max_size=4), paths=paths,
       ignore_case=st.booleans())
def test_the_last_pattern_git_matches_decides_with_negations(tmp_path: Path, zone_patterns: list[tuple[bool, str]],
                                                             paths: list[str], ignore_case: bool) -> None:
    """With '!' patterns, a zone is what zones.py documents: a pattern matches a path when git
    says a .gitignore of that pattern alone ignores it (the path, or a leading directory of it),
    and the last pattern that matches decides. Each pattern is asked of git on its own."""
    repo = scratch_repo(tmp_path)
    texts = [("!" if negated and i else "") + p for i, (negated, p) in enumerate(zone_patterns)]
    expected: dict[str, bool] = {}
    for text in texts:
        for path, by in git_ignored(repo, [text.removeprefix("!")], paths, ignore_case).items():
            if by is not None:
                expected[path] = not text.startswith("!")
    theirs = {p for p, included in expected.items() if included}
    ours = fleet_owned(texts, paths, ignore_case)
    assert ours == theirs, f"only the zone owns {sorted(ours - theirs)}; only git's last match owns {sorted(theirs - ours)}"


@pytest.mark.parametrize("pattern, path", [("a**/b", "a/a/b"), ("a**/b", "ab"), ("x/ab**/b", "x/ab/c/b"),
                                           ("/a**/b", "ax/y/b")])
def test_a_double_star_right_after_a_literal_prefix_is_any_directories_as_in_git(tmp_path: Path, pattern: str,
                                                                                path: str) -> None:
    """Found by the property above: git compares a pattern's literal part before its first
    wildcard itself (dir.c match_pathname) and gives wildmatch only the rest, where a '**' right
    after that part stands at the start and so means any directories, although gitignore(5)
    calls it a plain '*' there. Zones now read it as git does."""
    assert git_ignored(scratch_repo(tmp_path), [pattern], [path], False)[path] is not None
    assert Zone([pattern]).owns(path)


@pytest.mark.parametrize("pattern", ["a/**\\/b", "a**\\/b", "**\\/b"])
def test_a_double_star_before_an_escaped_slash_is_read_as_git_reads_it(tmp_path: Path, pattern: str) -> None:
    """wildmatch takes "\\/" for "/" after a '**' (any directories) but has no shortcut for none
    there: "a/**\\/b" ignores a/x/b and a/x/y/b, not a/b."""
    paths = ["a/b", "a/x/b", "a/x/y/b", "ab", "b", "x/b", "a/xb"]
    theirs = git_ignored(scratch_repo(tmp_path), [pattern], paths, False)
    assert {p for p in paths if Zone([pattern]).owns(p)} == {p for p in paths if theirs[p] is not None}


# Where a zone with '!' and a .gitignore of the same lines part, by design: a zone's pattern
# matches everything below a directory it matches, a '!' one too. README names one kind (a '!'
# re-includes below a directory an earlier pattern matched, which .gitignore cannot: the first
# and last cases); the middle one is the same rule met from the other side, which README does not
# name: "!a/" takes a/x.py out of the zone although no earlier pattern matched the directory a,
# while .gitignore re-includes only the directory itself and a/x.py stays ignored by "*.py".
@pytest.mark.parametrize("lines, path, git_says, zone_says", [
    (["src/", "!src/**/*.md"], "src/a/README.md", True, False),
    (["*.py", "!a/"], "a/x.py", True, False),
    (["a/", "!a/b"], "a/b", True, False),
])
def test_where_a_zone_with_negations_differs_from_gitignore(tmp_path: Path, lines: list[str], path: str,
                                                           git_says: bool, zone_says: bool) -> None:
    repo = scratch_repo(tmp_path)
    assert (git_ignored(repo, lines, [path], False)[path] is not None) is git_says
    assert Zone(lines).owns(path) is zone_says


# == the bus's claims under generated interleavings ===================================================


class Clock:
    """The bus modules' `time`: the real module, but time() runs `offset` seconds ahead, which the
    test advances, so that leases lapse without sleeping. The bus takes no clock; it calls
    time.time() in store, claims, ending and removal, whose `time` this replaces, and reads when
    its files were made (slots.birth_ns, slots.changed_ns), which `file_ns` moves ahead by the
    offset there was when each was made (the kernel stamps them in real time)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.steps: list[tuple[int, float]] = []  # (real ns, the offset from then on)

    def time(self) -> float:
        return real_time.time() + self.offset

    def time_ns(self) -> int:
        return real_time.time_ns() + int(self.offset * 1e9)

    def set(self, offset: float) -> None:
        """From now on, `offset` ahead. The kernel stamps files with its coarse clock, a tick behind
        time.time() at most: a tick each side of the step keeps every file made before it before
        it, and every one made after it after it."""
        real_time.sleep(0.012)
        self.offset = offset
        self.steps.append((real_time.clock_gettime_ns(COARSE), offset))
        real_time.sleep(0.012)

    def file_ns(self, real_ns: int) -> int:
        offset = next((o for t, o in reversed(self.steps) if t <= real_ns), 0.0)
        return real_ns + int(offset * 1e9)

    def __getattr__(self, name: str) -> Any:
        return getattr(real_time, name)


COARSE = getattr(real_time, "CLOCK_REALTIME_COARSE", 5)  # (Linux's; what file times are stamped with)
CLOCK = Clock()
AGENTS = ("ann", "bob", "cy")
# Leases and clock steps never meet on a tie: every sum of steps is a multiple of 30 and no lease
# is, so a few seconds of real time elapsing during an example never changes which leases lapsed.
LEASES = (100, 250)
STEPS = (30, 60, 150)
UNENDED = ("open", "claimed")


@dataclass
class Model:
    title: str
    agent: str | None
    depends: list[int]
    priority: int
    status: str = "open"  # open, claimed (maybe lapsed: see shown), done, failed, cancelled, removed
    holder: str | None = None  # who claimed it last (claimed), who ended it (done, failed)
    expires: float = 0.0  # in model time (the clock's offset)
    attempt: int = 0
    held_by: set[str] = field(default_factory=set)  # every agent that held an attempt
    unrecorded: int = 0  # results refused and kept aside


class BusMachine(RuleBasedStateMachine):
    """Three agents, each with a Bus of its own on one directory (as separate processes would
    have, caches and all), and the orchestrator with another; a model of what each task should be.
    The orchestrator adds (with dependencies, assignments, priorities), cancels and removes; the
    agents claim, renew, release, finish and fail; time passes, so leases lapse and are taken
    over. Every operation's outcome is predicted by the model (which task a claim gets, or none;
    whether a renew, release, done, cancel or rm is let through), and after every step the files
    and listings are checked against it: no task is held by two agents at once, every claim is of
    a task that exists, an ended task is never claimed again, the tasks the bus lists (through a
    fresh Bus and each agent's own) are the model's. One process, so the interleavings are of
    whole operations; tests/test_bus.py races real processes."""

    def __init__(self) -> None:
        super().__init__()
        CLOCK.steps.clear()
        CLOCK.set(0.0)
        self.dir = Path(tempfile.mkdtemp(prefix="bus-"))
        self.orchestrator = Bus(self.dir)
        self.agents = {a: Bus(self.dir) for a in AGENTS}
        self.model: dict[int, Model] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the model ----------------------------------------------------------------------------------

    def live(self, t: Model) -> bool:
        return t.status == "claimed" and t.expires > CLOCK.offset

    def shown(self, t: Model) -> str:
        """The status the bus should list: a claim whose lease lapsed is open again."""
        return "open" if t.status == "claimed" and not self.live(t) else t.status

    def holds(self, tid: int, agent: str) -> bool:
        t = self.model.get(tid)
        return t is not None and self.live(t) and t.holder == agent

    def next_for(self, agent: str) -> int | None:
        done = {tid for tid, t in self.model.items() if t.status == "done"}
        ready = [(-t.priority, tid) for tid, t in self.model.items()
                 if self.shown(t) == "open" and t.agent in (None, agent) and set(t.depends) <= done]
        return min(ready)[1] if ready else None

    def pick(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.model)), label="task")

    def pick_held(self, data: st.DataObject) -> tuple[str, int]:
        """An agent and a task for a holder's operation: more often a task the agent claimed last
        (its lease maybe lapsed since), so that these succeed about as often as they are refused."""
        held = [(t.holder, tid) for tid, t in sorted(self.model.items()) if t.holder and t.status == "claimed"]
        anyone = [(a, tid) for a in AGENTS for tid in sorted(self.model)]
        return data.draw(st.sampled_from(anyone + 3 * len(AGENTS) * held), label="agent, task")

    # -- rules: the orchestrator's ---------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < 8)
    @rule(data=st.data(), agent=st.sampled_from([None, None, None, *AGENTS]), priority=st.integers(0, 2))
    def add(self, data: st.DataObject, agent: str | None, priority: int) -> None:
        # half of them with dependencies; now and then on a task that does not exist (99) or one
        # that cannot be waited out (failed, cancelled, removed): refused
        dependencies = st.lists(st.sampled_from([*3 * sorted(self.model), 99]), min_size=1, max_size=2, unique=True)
        depends = data.draw(st.one_of(st.just([]), dependencies) if self.model else st.just([]), label="depends")
        title = f"task {len(self.model) + 1}"
        refused = any(d not in self.model or self.model[d].status in ("failed", "cancelled", "removed")
                      for d in depends)
        try:
            task = self.orchestrator.add(title, agent=agent, depends=depends, priority=priority)
        except FleetError as e:
            assert refused, f"add refused: {e.message}"
            return
        assert not refused, f"add of a task depending on {depends} was not refused"
        assert task.id == len(self.model) + 1  # ids in order, never one given out twice
        self.model[task.id] = Model(title, agent, depends, priority)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), how=st.sampled_from(["cancel", "rm"]))
    def end(self, data: st.DataObject, how: str) -> None:
        """The orchestrator cancels a task, or removes one (rm: only one never claimed and that
        nothing unended waits for)."""
        tid = self.pick(data)
        t = self.model[tid]
        op: Callable[[int], object]
        if how == "cancel":
            allowed, op, after = t.status in UNENDED, self.orchestrator.cancel, "cancelled"
        else:
            waited = any(tid in o.depends and o.status in UNENDED for o in self.model.values())
            allowed, op, after = t.status == "open" and t.attempt == 0 and not waited, self.orchestrator.remove, "removed"
        try:
            op(tid)
        except FleetError as e:
            assert not allowed, f"{how} of task-{tid} ({self.shown(t)}) refused: {e.message}"
            return
        assert allowed, f"{how} of task-{tid} ({self.shown(t)}, attempt {t.attempt}) was let through"
        t.status, t.holder = after, None

    @rule(seconds=st.sampled_from(STEPS))
    def time_passes(self, seconds: int) -> None:
        CLOCK.set(CLOCK.offset + seconds)

    # -- rules: the agents' ----------------------------------------------------------------------------

    @rule(agent=st.sampled_from(AGENTS), lease=st.sampled_from(LEASES))
    def claim(self, agent: str, lease: int) -> None:
        expected = self.next_for(agent)
        got = self.agents[agent].claim(agent, lease)
        if got is not None and got.id in self.model:
            assert self.shown(self.model[got.id]) == "open", f"{agent} claimed a {self.shown(self.model[got.id])} task"
        assert (got.id if got else None) == expected, f"{agent} claimed {got and got.name}, not task {expected}"
        if got is None:
            return
        t = self.model[got.id]
        t.status, t.holder, t.expires, t.attempt = "claimed", agent, CLOCK.offset + lease, t.attempt + 1
        t.held_by.add(agent)
        assert (got.status, got.claimed_by, got.attempt) == ("claimed", agent, t.attempt)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), lease=st.sampled_from(LEASES))
    def renew(self, data: st.DataObject, lease: int) -> None:
        agent, tid = self.pick_held(data)
        if self.holder_op(tid, agent, lambda: self.agents[agent].renew(tid, agent, lease)):
            # (a renewal extends the lease, never shortens it: slots.py)
            self.model[tid].expires = max(self.model[tid].expires, CLOCK.offset + lease)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        agent, tid = self.pick_held(data)
        if self.holder_op(tid, agent, lambda: self.agents[agent].release(tid, agent)):
            self.model[tid].status, self.model[tid].holder = "open", None

    @precondition(lambda self: self.model)
    @rule(data=st.data(), failed=st.booleans())
    def finish(self, data: st.DataObject, failed: bool) -> None:
        agent, tid = self.pick_held(data)
        t = self.model[tid]
        ok = self.holder_op(tid, agent, lambda: self.agents[agent].finish(tid, agent, f"by {agent}", failed=failed))
        if ok:
            t.status, t.holder = ("failed" if failed else "done"), agent
        elif agent in t.held_by:
            t.unrecorded += 1  # a refused result is kept aside, never dropped

    def holder_op(self, tid: int, agent: str, op: Callable[[], object]) -> bool:
        """Run an operation only the holder of a live claim may do; check it succeeds exactly then."""
        t = self.model[tid]
        allowed = self.holds(tid, agent)
        try:
            op()
        except FleetError as e:
            assert not allowed, f"{agent} holds task-{tid} but was refused: {e.message}"
            return False
        assert allowed, f"{agent} does not hold task-{tid} ({self.shown(t)}, holder {t.holder}) but was let through"
        return True

    # -- invariants ---------------------------------------------------------------------------------------

    @invariant()
    def listings_agree_with_the_model(self) -> None:
        want = {tid: (self.shown(t), t.title, t.agent, t.depends, t.priority, t.attempt)
                for tid, t in self.model.items() if t.status != "removed"}
        fresh = Bus(self.dir).all()
        got = {t.id: (t.status, t.title, t.agent, t.depends, t.priority, t.attempt) for t in fresh}
        assert got == want
        for t in fresh:
            m = self.model[t.id]
            if m.status in ("done", "failed") or self.live(m):
                assert t.claimed_by == m.holder, (t.name, t.claimed_by, m.holder)
        for agent, bus in self.agents.items():  # each agent's own caches see the same
            assert [_view(t) for t in bus.all()] == [_view(t) for t in fresh], agent

    @invariant()
    def claims_belong_to_tasks_and_none_is_held_twice(self) -> None:
        state = self.dir / "tasks" / ".state"
        if not state.is_dir():
            return
        specs = {int(p.name.split("-")[1]) for p in (self.dir / "tasks").glob("task-*.md")}
        live: dict[int, list[str]] = {}
        for f in state.iterdir():
            name, sep, attempt = f.name.partition(".claim-")
            if not sep or not attempt.isdigit():
                continue
            tid = int(name.removeprefix("task-"))
            assert tid in specs, f"{f.name}: a claim of a task that does not exist"
            claim = slots.read_slot(state, f.name, name, int(attempt), f.is_symlink())
            if claim is None or claim.ends is not None:
                continue  # (released: its record renamed away; or an end)
            assert not claim.removed, f"{f.name}: a rm's claim left behind"
            if claim.live():
                live.setdefault(tid, []).append(str(claim.agent))
        for tid, holders in live.items():
            assert len(holders) == 1, f"task-{tid} held by {holders} at once"
            m = self.model[tid]
            if m.status == "claimed":
                assert holders == [m.holder]

    @invariant()
    def an_ended_task_stays_ended_and_no_result_is_dropped(self) -> None:
        """A task ends once, by its result file, and is never claimed after it (no claim attempt
        beyond the one its result names); a refused result is kept aside, never dropped."""
        results, state = self.dir / "results", self.dir / "tasks" / ".state"
        for tid, m in self.model.items():
            name = f"task-{tid:03d}"
            kept = list(results.glob(f"{name}-unrecorded-*.md")) if results.is_dir() else []
            assert len(kept) == m.unrecorded, (name, kept)
            result = results / f"{name}-result.md"
            assert result.exists() == (m.status not in UNENDED), (name, m.status)
            if m.status in ("done", "failed", "cancelled"):
                meta, _ = front_matter(result, result.read_text(encoding="utf-8"))
                entries = [(int(f.name.rpartition("-")[2]), f.name, f.is_symlink()) for f in state.glob(f"{name}.claim-*")]
                attempts = [a.number for a in slots.read_chain(state, name, entries, lambda _n, _k: False).history]
                assert (meta["status"], int(meta["attempt"])) == (m.status, max(attempts, default=0)), name
            if m.status == "removed":
                with pytest.raises(FleetError, match="was removed"):
                    Bus(self.dir).get(tid)


def _view(t: Task) -> tuple[Any, ...]:
    return (t.id, t.status, t.title, t.agent, t.depends, t.priority, t.attempt, t.claimed_by, t.expires)


def test_bus_claims_under_generated_interleavings(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (store, claims, ending, removal, slots):
        monkeypatch.setattr(module, "time", CLOCK)
    birth, changed = slots.birth_ns, slots.changed_ns
    monkeypatch.setattr(slots, "birth_ns", lambda path: CLOCK.file_ns(birth(path)))
    monkeypatch.setattr(slots, "changed_ns", lambda st_: CLOCK.file_ns(changed(st_)))
    run_state_machine_as_test(BusMachine, settings=settings(max_examples=50, stateful_step_count=40, deadline=None))

