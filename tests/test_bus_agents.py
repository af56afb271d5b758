"""The bus, per agent: each agent writes only its own directories and symlinks in tasks/.state/
and results/ (what its sandbox lets it do). A hostile agent writes there directly, as the
sandbox would let it; what an honest agent and the orchestrator see then is checked, with real
files and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from git_fleet.bus import Bus, front_matter
from helpers import Sandbox


def bus_at(tmp_path: Path) -> Bus:
    bus = Bus(tmp_path / "bus")
    bus.ensure()
    return bus


def link(where: Path, name: str, target: str) -> None:
    """A symlink a hostile agent makes (the only thing it may create in the shared directories)."""
    os.symlink(target, where / name)


def own_record(bus: Bus, agent: str, name: str, record: dict[str, object]) -> Path:
    """A file a hostile agent writes in its own directory (anything, any time)."""
    d = bus.state / "agents" / agent
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(json.dumps(record))
    return d / name


def forge_claim(bus: Bus, agent: str, task: str, k: int, expires: float, **more: object) -> None:
    name = f"{task}.claim-{k}"
    own_record(bus, agent, name, {"agent": agent, "task": task, "attempt": k, "expires": expires, **more})
    link(bus.state, name, f"agents/{agent}/{name}")


def test_agent_writes_names_its_own_directories_and_the_symlink_only_ones(tmp_path: Path) -> None:
    bus = Bus(tmp_path / "bus")
    own, links = bus.agent_writes("api")
    assert own == [bus.state / "agents/api", bus.results / "agents/api"] and links == [bus.state, bus.results]
    assert all(d.is_dir() and not d.is_symlink() for d in own + links)
    assert (bus.state / ".gitignore").read_text().endswith("*\n")  # the claim state, own records too: never tracked
    # a symlink squatting an agent's directory (made before it existed) is replaced by a real one
    link(bus.state / "agents", "docs", "api")
    assert bus.agent_writes("docs")[0][0].is_dir() and not (bus.state / "agents/docs").is_symlink()


def test_an_agent_writes_only_its_own_directories_and_symlinks(tmp_path: Path) -> None:
    bus = bus_at(tmp_path)
    for i in range(3):
        bus.add(f"task {i}")
    own, links = bus.agent_writes("api")
    before = {p: p.is_symlink() for p in bus.root.rglob("*")}
    bus.claim("api")
    bus.renew(1, "api")
    bus.finish(1, "api", "ok")
    bus.claim("api")
    bus.release(2, "api")
    bus.claim("api")
    bus.finish(2, "api", "cannot", failed=True)
    bus.cancel(3)  # (the orchestrator's)
    made = [p for p in bus.root.rglob("*") if p not in before]
    for p in made:
        inside = any(d in p.parents for d in own)
        if not inside and p != bus.results / "task-003-result.md":
            assert p.is_symlink() and p.parent in links, p
    assert [t.status for t in bus.all()] == ["done", "failed", "cancelled"]


def test_junk_symlinks_count_for_nothing_and_claims_go_on(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    bus = Bus(sb.repo)
    for agent in ("api", "docs", "evil"):
        bus.agent_writes(agent)  # (as the sandbox's set-up does)
    state, results = bus.state, bus.results
    link(state, "task-001.claim-1", "agents/api/task-001.claim-1")  # into another's directory, dangling
    link(state, "task-001.claim-2", "/etc/passwd")  # outside the bus
    link(state, "task-001.claim-3", "task-001.claim-3")  # a loop
    link(state, "task-001.claim-4", "../../../x")
    link(state, "task-002.claim-1", "agents/evil/task-002.claim-1")  # its own, no record
    link(state / "agents", "ghost", "evil")  # an agent directory that is a link to its own
    link(state, "task-002.claim-2", "agents/ghost/task-002.claim-2")
    own_record(bus, "evil", "task-002.claim-2", {"agent": "ghost", "task": "task-002", "attempt": 2, "expires": 1e12})
    own_record(bus, "evil", "task-002.claim-3", {"agent": "api", "task": "task-002", "attempt": 3, "expires": 1e12})
    link(state, "task-002.claim-3", "agents/evil/task-002.claim-3")  # a record saying another agent
    link(state / "agents/api", "task-001.claim-5", "../evil/x")  # inside another agent's directory, the
    # very name api's record will take (a symlink made beneath the shared directory)
    link(results, "task-001-result.md", "agents/evil/task-001-result.md")
    link(results, "task-002-result.md", "/etc/hostname")
    assert sb.fleet("task", "list").out.splitlines() == ["task-001  open  -  one", "task-002  open  -  two"]
    # the honest path: claimed, renewed and ended, by the commands
    api = sb.root / "repo-api"
    assert sb.run(["git", "fleet-task", "claim"], cwd=api).out.startswith("task-001\t")
    sb.run(["git", "fleet-task", "renew", "1"], cwd=api)
    out = sb.run(["git", "fleet-task", "done", "1", "--result-file", "-"], cwd=api, input="ok\n").out
    real = sb.repo / "results/agents/api/task-001-result.md"
    assert out == f"{real}\n"  # results/task-001-result.md is junk's: the result's own path is told
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert (shown["status"], shown["claimed_by"], shown["result"]) == ("done", "api", str(real))
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-002\t")
    sb.fleet("plan")
    assert "→ [result](results/agents/api/task-001-result.md)" in (sb.repo / "master_plan.md").read_text()
    # the orchestrator clears junk where its own result goes
    res = sb.fleet("task", "cancel", "2")
    assert res.out == f"{results / 'task-002-result.md'}\n" and not (results / "task-002-result.md").is_symlink()


def test_a_claim_in_anothers_name_or_on_a_live_lease_does_not_count(tmp_path: Path) -> None:
    bus = bus_at(tmp_path)
    bus.add("one")
    assert bus.claim("api", lease=2) is not None
    # attempt 2 by evil while api's lease is live: made too early, it counts for nothing
    forge_claim(bus, "evil", "task-001", 2, time.time() + 3600)
    link(bus.state, "task-001.claim-3", "agents/api/task-001.claim-1")  # api's record under another number
    link(bus.state, "task-001.claim-4", "agents/evil/task-001.claim-4")
    own_record(bus, "evil", "task-001.claim-4", {"agent": "api", "task": "task-001", "attempt": 4, "expires": 1e12})
    t = bus.get(1)
    assert (t.status, t.claimed_by, t.attempt) == ("claimed", "api", 1)
    with pytest.raises(Exception, match="claimed by 'api'"):
        bus.renew(1, "evil")
    with pytest.raises(Exception, match="claimed by 'api'"):
        bus.finish(1, "evil", "stolen")
    bus.renew(1, "api", lease=2)
    # api's lease lapses: evil's early attempt still does not count; an honest worker takes over
    time.sleep(2.3)
    t = bus.get(1)
    assert (t.status, t.claimed_by) == ("open", "api")
    # evil writes its record again (now): made after the lapse, it would count; docs is first here
    claimed = bus.claim("docs")
    assert claimed is not None and (claimed.claimed_by, claimed.attempt) == ("docs", 5)
    forge_claim(bus, "evil", "task-001", 6, time.time() + 3600)
    own_record(bus, "evil", "task-001.claim-2", {"agent": "evil", "task": "task-001", "attempt": 2, "expires": 1e12})
    t = bus.get(1)
    assert (t.claimed_by, t.attempt) == ("docs", 5)
    # evil touches docs's public link and hard-links it: its ctime moves past evil's attempt 6,
    # its birth time does not (the order of attempts): docs still holds the task
    time.sleep(0.05)
    os.utime(bus.state / "task-001.claim-5", follow_symlinks=False)
    os.link(bus.state / "task-001.claim-5", bus.state / "task-001.claim-99", follow_symlinks=False)
    t = bus.get(1)
    assert (t.claimed_by, t.attempt) == ("docs", 5)
    assert bus.finish(1, "docs", "done by docs").status == "done"
    meta, body = front_matter(bus.results / "task-001-result.md", (bus.results / "task-001-result.md").read_text())
    assert (meta["agent"], meta["attempt"], body) == ("docs", "5", "done by docs\n")


def test_a_lapsed_or_released_holder_cannot_take_its_task_back(tmp_path: Path) -> None:
    bus = bus_at(tmp_path)
    bus.add("lapses")
    bus.add("released")
    assert bus.claim("evil", lease=1) is not None
    assert bus.claim("evil") is not None
    bus.release(2, "evil")
    time.sleep(1.3)
    assert [bus.claim("api").id, bus.claim("api").id] == [1, 2]  # type: ignore[union-attr]
    own = bus.state / "agents/evil"
    # a renewal made after the lapse; the record written again; the release undone
    (own / "task-001.claim-1.lease-1").write_text(json.dumps({"expires": time.time() + 3600}))
    rec = json.loads((own / "task-001.claim-1").read_text())
    (own / "task-001.claim-1").write_text(json.dumps({**rec, "expires": time.time() + 3600}))
    os.rename(own / "task-002.claim-1.released", own / "task-002.claim-1")
    for tid in (1, 2):
        t = bus.get(tid)
        assert (t.status, t.claimed_by, t.attempt) == ("claimed", "api", 2), tid
        bus.renew(tid, "api")
        assert bus.finish(tid, "api", "mine").claimed_by == "api"
    with pytest.raises(Exception, match="done already"):
        bus.finish(1, "evil", "late")


def test_an_end_or_result_by_one_who_does_not_hold_the_task_counts_for_nothing(bus_repo: Sandbox) -> None:
    sb = bus_repo
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two", "--depends", "1")
    api = sb.root / "repo-api"
    sb.run(["git", "fleet-task", "claim"], cwd=api)
    bus = Bus(sb.repo)
    # evil ends api's attempt 1, in its own name and in api's, and links a result of its own
    for k, who in ((2, "evil"), (3, "evil")):
        name = f"task-001.claim-{k}"
        own_record(bus, who, name, {"agent": who, "task": "task-001", "attempt": k, "ends": 1, "status": "done"})
        link(bus.state, name, f"agents/{who}/{name}")
    (bus.results / "agents/evil").mkdir(parents=True, exist_ok=True)
    (bus.results / "agents/evil/task-001-result.md").write_text("---\nstatus: done\nagent: api\n---\n\nforged\n")
    link(bus.results, "task-001-result.md", "agents/evil/task-001-result.md")
    link(bus.results, "task-001-unrecorded-api-1.md", "agents/evil/task-001-result.md")
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert (shown["status"], shown["claimed_by"], shown["result"], shown["unrecorded"]) == ("claimed", "api", None, [])
    assert sb.fleet("task", "claim", "--agent", "docs", ok=False).code == 1  # task-002 still waits
    out = sb.run(["git", "fleet-task", "done", "1", "--result-file", "-"], cwd=api, input="real\n").out
    assert out == f"{sb.repo / 'results/agents/api/task-001-result.md'}\n"
    assert json.loads(sb.fleet("task", "show", "1", "--json").out)["status"] == "done"
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-002\t")


def test_a_link_in_results_does_not_end_a_task_for_add_rm_or_the_plan(bus_repo: Sandbox) -> None:
    """How a task ended is read from the bus's own record (a regular result, or the end of its
    attempts) wherever it is asked, never from a link an agent put in results/."""
    sb = bus_repo
    for title in ("one", "two", "three"):
        sb.fleet("task", "add", title)
    bus = Bus(sb.repo)
    bus.agent_writes("evil")
    (bus.results / "agents/evil/forged.md").write_text("---\nstatus: failed\nagent: evil\n---\n\nforged\n")
    link(bus.results, "task-001-result.md", "agents/evil/forged.md")  # a failed result, forged
    link(bus.results, "task-002-result.md", "agents/evil/nothing.md")  # dangling
    link(bus.results, "task-003-result.md", "agents/evil/forged.md")
    # a task may wait for task-001: it has not failed
    assert sb.fleet("task", "add", "after one", "--depends", "1").out.startswith("task-004")
    # task-002 is removed (nothing waits for it, never claimed), the junk at its result cleared
    sb.fleet("task", "rm", "2")
    assert not (bus.results / "task-002-result.md").is_symlink()
    assert sb.fleet("task", "show", "2", ok=False).err.startswith("error: task-002 was removed")
    # a removed task is not waited for; one a link calls removed (task-003's says failed) is
    res = sb.fleet("task", "add", "after two", "--depends", "2", ok=False)
    assert res.code == 1 and "task-002 (a dependency) was removed" in res.err
    sb.fleet("task", "add", "after three", "--depends", "3")
    sb.fleet("plan")
    plan = (sb.repo / "master_plan.md").read_text()
    assert "after one, after task-001\n" in plan and "(failed)" not in plan
    # and the same links, with no sandbox in the way, are the same junk to the commands' JSON
    shown = {t["id"]: t["status"] for t in json.loads(sb.fleet("task", "list", "--json").out)}
    assert shown == {1: "open", 3: "open", 4: "open", 5: "open"}


def test_a_bus_of_the_older_layout_reads_and_works_as_before(tmp_path: Path) -> None:
    bus = bus_at(tmp_path)
    for title in ("held", "done", "released"):
        bus.add(title)
    now = time.time()
    (bus.state / "task-001.claim-1").write_text(json.dumps({"agent": "api", "attempt": 1, "expires": now + 600}))
    (bus.state / "task-002.claim-1").write_text(json.dumps({"agent": "api", "attempt": 1, "expires": now + 600}))
    (bus.results / "task-002-result.md").write_text("---\ntask: task-002\nstatus: done\nagent: api\n---\n\nok\n")
    (bus.state / "task-003.claim-1").write_text(json.dumps({"agent": "api", "attempt": 1, "expires": now + 600,
                                                            "released": True}))
    got = {t.name: (t.status, t.claimed_by, t.attempt, t.result) for t in bus.all()}
    assert got == {"task-001": ("claimed", "api", 1, None),
                   "task-002": ("done", "api", 1, bus.results / "task-002-result.md"),
                   "task-003": ("open", None, 1, None)}
    assert bus.renew(1, "api").claimed_by == "api"  # (renewed in place: its holder is not sandboxed)
    assert bus.finish(1, "api", "ended in the new way").status == "done"
    assert bus.claim("docs").name == "task-003"  # type: ignore[union-attr]


def test_workers_claim_each_task_once_among_junk(tmp_path: Path) -> None:
    bus = bus_at(tmp_path)
    n = 120
    for i in range(n):
        bus.add(f"task {i}")
    for i in range(1, n + 1, 3):  # junk ahead of the workers: slots, dangling ones, results links
        name = f"task-{i:03d}"
        link(bus.state, f"{name}.claim-1", f"agents/w0/{name}.claim-1")
        link(bus.state, f"{name}.claim-2", "/nonexistent")
        link(bus.results, f"{name}-result.md", f"agents/w1/{name}-result.md")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    workers = [subprocess.Popen([sys.executable, "-m", "git_fleet.standin", "--drain", str(bus.root), f"w{i}"],
                                stdout=subprocess.PIPE, text=True, env=env) for i in range(6)]
    claimed = [int(x) for w in workers for x in w.communicate(timeout=600)[0].split()]
    assert sorted(claimed) == list(range(1, n + 1)) and all(w.returncode == 0 for w in workers)
    tasks = bus.all()
    assert {t.status for t in tasks} == {"done"}
    for t in tasks:
        assert t.result is not None
        meta, body = front_matter(t.result, t.result.read_text())
        assert body == f"result of {t.name} by {meta['agent']}\n" and t.claimed_by == meta["agent"]
