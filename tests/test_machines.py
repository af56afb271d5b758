"""One fleet across machines: clones in temporary directories, each with its own HOME, playing
machines, meeting at a bare remote served by a real git daemon on 127.0.0.1 (or over a path)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from git_fleet.errors import FleetError
from git_fleet.fleet import Fleet
from helpers import Sandbox, git_daemon
from test_watch import Pane, needs_tmux

PACKAGE = str(Path(__file__).resolve().parent.parent)


class Machines:
    """The orchestrator's clone (sb.repo, "laptop") and other machines, each a clone with a HOME."""

    def __init__(self, sb: Sandbox, url: str):
        self.sb, self.url = sb, url

    def home(self, name: str) -> Path:
        home = self.sb.root / name / "home"
        if not home.exists():
            home.mkdir(parents=True)
            # (an agent's commit is published at once: the background publisher ends within the test)
            (home / ".gitconfig").write_text(f"[user]\n\tname = {name}\n\temail = {name}@example.com\n"
                                             "[fleet]\n\tpublishEvery = 0\n")
        return home

    def env(self, name: str) -> dict[str, str]:
        return {"HOME": str(self.home(name)), "PYTHONPATH": PACKAGE}

    def machine(self, name: str) -> Path:
        """A clone on machine `name`, its fleet spanning machines through origin."""
        where = self.sb.root / name / "repo"
        self.sb.git("clone", "-q", self.url, str(where), cwd=self.sb.root, env=self.env(name))
        self.sb.git("fleet-init", "--remote", "origin", cwd=where, env=self.env(name))
        self.sb.git("config", "fleet.publishEvery", "0", cwd=where)  # (see home)
        return where

    def workers(self, where: Path, machine: str, count: int) -> list[subprocess.Popen[str]]:
        return [self.sb.spawn([sys.executable, "-m", "git_fleet.standin", "--drain-fleet", f"{machine}-w{i}"], cwd=where,
                              env=self.env(machine), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for i in range(count)]


@pytest.fixture
def served(hub: Sandbox) -> Iterator[Machines]:
    """The hub served by a real git daemon, the orchestrator's clone spanning machines through it."""
    with _over_a_daemon(hub) as (_url, machines):
        yield machines


@contextlib.contextmanager
def _over_a_daemon(sb: Sandbox) -> Iterator[tuple[str, Machines]]:
    """The hub served by a real git daemon, the orchestrator's clone spanning machines through it:
    the daemon's URL, and the machines."""
    with git_daemon(sb, sb.root) as url:
        sb.git("remote", "set-url", "origin", f"{url}/hub.git")
        sb.git("fleet-init", "--remote", "origin")
        yield url, Machines(sb, f"{url}/hub.git")


def bus_of(where: Path):  # type: ignore[no-untyped-def]
    return Fleet.here(where).bus()


def test_workers_on_three_machines_claim_300_tasks_each_exactly_once(served: Machines) -> None:
    sb = served.sb
    bus = bus_of(sb.repo)
    for i in range(300):
        bus.add(f"task {i}")
    places = {name: served.machine(name) for name in ("m1", "m2", "m3")}
    workers = [w for name, where in places.items() for w in served.workers(where, name, 8)]
    said = []
    try:
        for w in workers:
            out, err = w.communicate(timeout=600)
            said.append((w.returncode, out, err))
    finally:
        for w in workers:
            Sandbox.kill_group(w)
    assert [(code, err) for code, _, err in said if code != 0] == []
    claimed = Counter(int(line.split()[1]) for _, out, _ in said for line in out.splitlines() if line.startswith("claimed"))
    done = Counter(int(line.split()[1]) for _, out, _ in said for line in out.splitlines() if line.startswith("done"))
    assert sorted(claimed) == list(range(1, 301)) and set(claimed.values()) == {1}  # every task once, none twice
    assert claimed == done
    # the orchestrator reads every result on its own machine
    tasks = bus_of(sb.repo).all()
    assert len(tasks) == 300 and {t.status for t in tasks} == {"done"} and {t.attempt for t in tasks} == {1}
    t = tasks[41]
    assert t.result is not None and f"result of {t.name} by {t.claimed_by}" in t.result.read_text()
    # ended tasks are folded: the remote keeps few refs
    refs = sb.git("ls-remote", served.url).out.splitlines()
    assert len(refs) < 60, len(refs)


def test_a_killed_holders_task_goes_to_a_worker_on_another_machine_once_after_its_lease(hub: Sandbox) -> None:
    sb = hub
    sb.git("fleet-init", "--remote", "origin")
    machines = Machines(sb, str(sb.root / "hub.git"))
    one, two = machines.machine("m1"), machines.machine("m2")
    sb.git("fleet-join", "api", "--take-over", cwd=one, env=machines.env("m1"))  # api runs on m1, docs on m2
    sb.git("fleet-join", "docs", "--take-over", cwd=two, env=machines.env("m2"))
    sb.fleet("task", "add", "fragile")
    sb.fleet("task", "add", "other")
    holder, _ = sb.paused([sys.executable, "-m", "git_fleet.standin", "--drain-fleet", "api", "2"], "worker-claimed",
                          cwd=one, env=machines.env("m1"))
    os.kill(holder.pid, signal.SIGKILL)  # the worker itself, killed while it holds task-001
    holder.wait()
    Sandbox.kill_group(holder)
    assert holder.stdout is not None and holder.stdout.read().startswith("claimed 1 ")
    # on the other machine, the claim is live until it has been seen unchanged for its lease
    taken = sb.git("fleet-task", "claim", "--agent", "docs", cwd=two, env=machines.env("m2"))
    assert taken.out.startswith("task-002")  # not task-001: its lease has not lapsed as seen here
    time.sleep(2.3)
    # racing for it: docs twice on m2, and two workers on m1 (which first saw the claim when it was made)
    racers = [sb.spawn(["git", "fleet-task", "claim", "--agent", "docs", "--json"], cwd=two, env=machines.env("m2"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    racers += [sb.spawn([sys.executable, "-m", "git_fleet.standin", "--drain-fleet", f"m1-w{i}", "600"], cwd=one,
                        env=machines.env("m1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    got = []
    for r in racers:
        out, err = r.communicate(timeout=60)
        Sandbox.kill_group(r)
        if r.args[1] == "fleet-task":
            got += [json.loads(out)["id"]] if r.returncode == 0 else []
        else:
            got += [int(line.split()[1]) for line in out.splitlines() if line.startswith("claimed")]
    assert got.count(1) == 1, got  # exactly one took it over
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert shown["attempt"] == 2 and shown["claimed_by"] != "api"
    # the first holder's late result is refused, and kept aside
    late = sb.git("fleet-task", "done", "1", "--agent", "api", cwd=one, env=machines.env("m1"), ok=False)
    assert ("(attempt 2)" in late.err or "task-001 is done already" in late.err) and "kept on the remote" in late.err
    assert len(json.loads(sb.fleet("task", "show", "1", "--json").out)["unrecorded"]) == 1


def test_the_remote_away_refuses_loudly_and_nothing_is_duplicated_after(hub: Sandbox) -> None:
    sb = hub
    with _over_a_daemon(sb) as (url, machines):
        other = machines.machine("m1")
        sb.git("fleet-join", "api", "--take-over", cwd=other, env=machines.env("m1"))
        sb.fleet("task", "add", "one")
        sb.fleet("task", "add", "two")
        sb.git("fleet-task", "claim", "--agent", "api", cwd=other, env=machines.env("m1"))
        sb.fleet("task", "list")
    # the daemon is stopped: claims, done and add refuse, naming the remote and git's error
    refs_before = sb.git("for-each-ref", "refs/fleet-remote", cwd=other).out
    for args in (["claim", "--agent", "docs"], ["done", "1", "--agent", "api"], ["add", "three"]):
        res = sb.git("fleet-task", *args, cwd=other, env=machines.env("m1"), ok=False)
        assert res.code == 1 and "cannot reach remote 'origin' (git://127.0.0.1" in res.err, res
        assert "Traceback" not in res.err
    assert sb.git("for-each-ref", "refs/fleet-remote", cwd=other).out == refs_before  # nothing recorded here
    unsent = other / "results" / "task-001-unsent-api.md"  # the result given is kept here, to send again
    assert unsent.read_text() == "Done.\n"
    listed = sb.git("fleet-task", "list", cwd=other, env=machines.env("m1"))
    assert "task-001  claimed  api" in listed.out and "showing the last known state (fetched" in listed.err
    # back again (the same port): the done goes through once, and nothing was duplicated
    port = url.rsplit(":", 1)[1]
    with git_daemon(sb, sb.root, port=int(port)):
        sb.git("fleet-task", "done", "1", "--agent", "api", cwd=other, env=machines.env("m1"))
        assert sb.git("fleet-task", "claim", "--agent", "api", cwd=other, env=machines.env("m1")).out.startswith("task-002")
        tasks = {t["name"]: t for t in json.loads(sb.fleet("task", "list", "--json").out)}
    assert [(t["status"], t["attempt"]) for t in tasks.values()] == [("done", 1), ("claimed", 1)]


def test_the_shared_bus_from_the_command_line(hub: Sandbox) -> None:
    sb = hub
    res = sb.fleet("init", "--remote", "origin")
    assert "the fleet spans machines through remote 'origin'; this clone is machine " in res.out
    assert sb.fleet("task", "add", "write the api", "--agent", "api").out.strip() == "task-001"
    sb.fleet("task", "add", "document it", "--depends", "1", "--agent", "docs")
    assert sb.fleet("task", "add", "x", "--depends", "9", ok=False).code == 2
    assert sb.fleet("task", "claim", "--agent", "docs", ok=False).code == 1  # task-002 waits for task-001
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-001")
    sb.fleet("task", "renew", "1", "--agent", "api", "--lease", "1h")
    res = sb.fleet("task", "done", "1", "--agent", "docs", ok=False)
    assert "task-001 is claimed by 'api' (attempt 1)" in res.err
    result = sb.fleet("task", "done", "1", "--agent", "api").out.strip()
    assert result.endswith("results/task-001-result.md") and "status: done" in Path(result).read_text()
    assert sb.fleet("task", "claim", "--agent", "docs").out.startswith("task-002")
    sb.fleet("task", "release", "2", "--agent", "docs")
    sb.fleet("task", "add", "by mistake")
    sb.fleet("task", "rm", "3")
    sb.fleet("task", "cancel", "2", "--reason", "not needed after all")
    listed = sb.fleet("task", "list").out
    assert "task-001  done       api" in listed and "task-002  cancelled" in listed and "task-003" not in listed
    assert "not needed after all" in sb.fleet("task", "show", "2").out
    plan = Path(sb.fleet("plan").out.strip()).read_text()
    assert "### Done (1)" in plan and "### Cancelled (1)" in plan
    # every step is a commit on the task's ref on the remote, readable with git itself
    log = sb.git("log", "--format=%s", "refs/fleet-remote/origin/bus/tasks/1").out.splitlines()
    assert [line.split()[1] for line in log] == ["done", "renew", "claim", "open"]


def test_a_record_of_a_later_format_is_refused_with_the_version_it_needs(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    sb.fleet("task", "add", "one")
    tree = sb.git("rev-parse", "refs/fleet-remote/origin/bus/tasks/1^{tree}").out.strip()
    later = sb.git("commit-tree", tree, "-m", 'fleet: open\n\n{"fleet": 9, "op": "open", "task": 1}').out.strip()
    sb.git("push", "-q", "--force", "origin", f"{later}:refs/fleet/bus/tasks/1")
    res = sb.fleet("task", "list")
    assert "task-001  invalid" in res.out
    assert "written by a later git-fleet (record format 9)" in res.err


def test_one_agent_runs_on_one_machine_join_is_refused_until_taken_over(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    assert "'api' runs on machine " in sb.fleet("join", "api").out  # its worktree is here: held for this machine
    laptop = sb.git("config", "fleet.machine").out.strip()
    sb.commit(sb.root / "repo-api", {"src/backend/work.py": "w = 1\n"}, "api's work")
    sb.git("push", "-q", "origin", "fleet/api", cwd=sb.root / "repo-api")  # (no one holds api yet: by hand)
    sb.fleet("task", "add", "first", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")
    machines = Machines(sb, str(sb.root / "hub.git"))
    box = sb.root / "box" / "repo"
    sb.git("clone", "-q", machines.url, str(box), cwd=sb.root, env=machines.env("box"))
    refused = sb.git("fleet-join", "api", cwd=box, env=machines.env("box"), ok=False)
    assert refused.code == 1 and f"agent 'api' is held by machine {laptop} (" in refused.err and " since " in refused.err
    assert not (sb.root / "box" / "repo-api").exists()  # nothing was set up
    joined = sb.git("fleet-join", "api", "--take-over", cwd=box, env=machines.env("box"))
    assert f"taken over from machine {laptop}" in joined.err
    there = sb.root / "box" / "repo-api"
    assert sb.head(cwd=there) == sb.head("fleet/api")  # the branch as the remote has it
    assert (there / "src/backend/work.py").exists()
    # the first machine obeys: its next claim and result are refused, saying where the agent went
    box_id = sb.git("config", "fleet.machine", cwd=box).out.strip()
    res = sb.fleet("task", "done", "1", "--agent", "api", ok=False)
    assert f"agent 'api' runs on machine {box_id}" in res.err and "kept on the remote" in res.err
    sb.fleet("task", "add", "second", "--agent", "api")
    assert f"runs on machine {box_id}" in sb.fleet("task", "claim", "--agent", "api", ok=False).err
    # on the machine that holds it now, the agent goes on
    sb.git("fleet-task", "done", "1", "--agent", "api", cwd=there, env=machines.env("box"))
    assert sb.git("fleet-task", "claim", cwd=there, env=machines.env("box")).out.startswith("task-002")


def test_the_same_worker_name_on_two_machines_holds_a_claim_only_where_it_made_it(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    machines = Machines(sb, str(sb.root / "hub.git"))
    one, two = machines.machine("m1"), machines.machine("m2")
    sb.fleet("task", "add", "one")
    first = bus_of(one)
    assert first.claim("w", 1) is not None
    time.sleep(1.2)
    second = bus_of(two)
    second.refresh()  # m2 sees the claim now: its lease counts from here
    time.sleep(1.2)
    taken = second.claim("w", 60)
    assert taken is not None and taken.attempt == 2
    with pytest.raises(FleetError) as refused:
        first.finish(1, "w", "late")
    assert "task-001 is claimed by 'w' (attempt 2) on machine" in refused.value.message
    second.finish(1, "w", "in time")
    assert "in time" in Path(str(bus_of(sb.repo).get(1).result)).read_text()


def test_a_dependency_cancelled_meanwhile_is_seen_by_an_add_on_another_machine(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    other = Machines(sb, str(sb.root / "hub.git")).machine("m1")
    sb.fleet("task", "add", "one")
    bus = bus_of(other)
    bus.refresh()  # m1 knows task-001 as open
    sb.fleet("task", "cancel", "1")
    with pytest.raises(FleetError) as refused:
        bus.add("after one", depends=[1])
    assert "task-001 (a dependency) is cancelled" in refused.value.message
    assert [t.name for t in bus_of(sb.repo).all()] == ["task-001"]


def test_a_record_of_the_wrong_shape_is_one_invalid_task_not_a_broken_bus(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    sb.fleet("task", "add", "one")
    sb.fleet("task", "add", "two")
    tip = sb.git("rev-parse", "refs/fleet-remote/origin/bus/tasks/1").out.strip()
    bad = sb.git("commit-tree", f"{tip}^{{tree}}", "-p", tip, "-m",
                 'fleet: claim\n\n{"fleet": 1, "op": "claim", "task": 1, "attempt": 1, "agent": "api", "lease": "600"}').out
    sb.git("push", "-q", "origin", f"{bad.strip()}:refs/fleet/bus/tasks/1")
    res = sb.fleet("task", "list")
    assert "task-001  invalid" in res.out and "its lease is '600'" in res.err and "task-002  open" in res.out
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-002")


def test_ended_tasks_fold_into_one_ref_with_their_results_and_what_was_kept_aside(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    bus = bus_of(sb.repo)
    for i in range(16):
        bus.add(f"task {i}")
    for _ in range(16):
        t = bus.claim("api")
        assert t is not None
        if t.id == 3:
            bus.cancel(3, "no longer")
            with pytest.raises(FleetError):
                bus.finish(3, "api", "too late")  # kept aside
            continue
        bus.finish(t.id, "api", f"result {t.id}")
    remote = sb.git("ls-remote", str(sb.root / "hub.git"), "refs/fleet/*").out
    assert "refs/fleet/bus/log" in remote and "refs/fleet/bus/tasks/" not in remote and "/kept/" not in remote
    fresh = bus_of(sb.repo)
    tasks = fresh.all()
    assert [t.status for t in tasks].count("done") == 15 and tasks[2].status == "cancelled"
    assert "result 7" in Path(str(fresh.get(7).result)).read_text()
    kept = fresh.unrecorded(fresh.get(3))
    assert len(kept) == 1 and "too late" in kept[0].read_text()
    assert sb.fleet("task", "add", "next").out.strip() == "task-017"  # ids go on after the folded ones


def test_teleport_hands_the_agent_off_with_its_snapshot_and_the_pull_takes_it(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    machines = Machines(sb, str(sb.root / "hub.git"))
    box, third = machines.machine("box"), machines.machine("third")
    sb.fleet("join", "api")
    sb.fleet("task", "add", "the api", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")
    (sb.root / "repo-api" / "src/backend/wip.py").write_text("half done\n")
    sb.fleet("teleport", "push", "api")
    assert "handed off by git fleet-teleport push" in sb.fleet("task", "renew", "1", "--agent", "api", ok=False).err
    # a join is no way to take it: the work is in the snapshot, which the pull brings
    res = sb.git("fleet-join", "api", cwd=box, env=machines.env("box"), ok=False)
    assert "was handed off by git fleet-teleport push" in res.err and "git fleet-teleport pull api" in res.err
    pulled = sb.git("fleet-teleport", "pull", "api", cwd=box, env=machines.env("box"))
    assert "1 claimed task(s)" in pulled.out
    there = sb.root / "box" / "repo-api"
    assert (there / "src/backend/wip.py").read_text() == "half done\n"
    sb.git("fleet-task", "renew", "1", cwd=there, env=machines.env("box"))  # the claim goes on there, unchanged
    shown = json.loads(sb.fleet("task", "show", "1", "--json").out)
    assert (shown["status"], shown["attempt"], shown["claimed_by"]) == ("claimed", 1, "api")
    box_id = sb.git("config", "fleet.machine", cwd=box).out.strip()
    refused = sb.git("fleet-teleport", "pull", "api", cwd=third, env=machines.env("third"), ok=False)
    assert f"agent 'api' is held by machine {box_id}" in refused.err
    assert not (sb.root / "third" / "repo-api").exists()


def _api_on_the_box(sb: Sandbox, path: str) -> Path:
    """The fleet across machines, api joined on a machine "box" with a commit of `path` there,
    published: api's worktree there."""
    sb.fleet("init", "--remote", "origin")
    machines = Machines(sb, str(sb.root / "hub.git"))
    box = machines.machine("box")
    sb.git("fleet-join", "api", "--take-over", cwd=box, env=machines.env("box"))
    there = sb.root / "box" / "repo-api"
    sb.commit(there, {path: "x = 1\n"}, "made on the box")
    _published(sb, "fleet/api", sb.head(cwd=there))
    return there


def _merge_meanwhile(sb: Sandbox, meanwhile: Callable[[], object]) -> tuple[int, str]:
    """`git fleet-merge api` stopped just before it publishes, `meanwhile` done, then let go: its
    exit status and what it said."""
    merging, marker = sb.paused(["git", "fleet-merge", "api"], "merge-publishing")
    meanwhile()
    marker.unlink()
    _out, err = merging.communicate(timeout=60)
    Sandbox.kill_group(merging)
    return merging.returncode, err


def test_a_checkpoint_merge_takes_what_another_machine_published_and_publishes_the_base(hub: Sandbox) -> None:
    sb = hub
    there = _api_on_the_box(sb, "src/backend/from_the_box.py")
    sb.commit(sb.root / "repo-api", {"src/backend/stale_here.py": "y = 1\n"}, "left on the laptop")  # not merged
    res = sb.fleet("merge", "api")
    assert "merged as it published fleet/api" in res.err
    assert (sb.repo / "src/backend/from_the_box.py").exists() and not (sb.repo / "src/backend/stale_here.py").exists()
    assert sb.git("rev-parse", "main", cwd=sb.root / "hub.git").out == sb.git("rev-parse", "main").out
    # the remote's base moved while the merge was made: refused, nothing changed here or there
    sb.commit(there, {"src/backend/more.py": "z = 1\n"}, "more from the box")
    _published(sb, "fleet/api", sb.head(cwd=there))
    before = sb.git("rev-parse", "main").out
    other = sb.root / "other"

    def someone_pushes() -> None:
        sb.git("clone", "-q", str(sb.root / "hub.git"), str(other), cwd=sb.root)
        sb.commit(other, {"README.md": "# moved meanwhile\n"}, "someone else's push")
        sb.git("push", "-q", "origin", "main", cwd=other)

    code, err = _merge_meanwhile(sb, someone_pushes)
    assert code == 1 and "nothing was changed here or there" in err
    assert sb.git("rev-parse", "main").out == before
    assert sb.git("rev-parse", "main", cwd=sb.root / "hub.git").out == sb.git("rev-parse", "main", cwd=other).out


def test_a_checkpoint_merge_takes_an_agent_another_machine_handed_off_as_it_published(hub: Sandbox) -> None:
    sb = hub
    there = _api_on_the_box(sb, "src/backend/handed.py")
    box = sb.root / "box" / "repo"
    sb.git("fleet-teleport", "push", "api", cwd=box, env=Machines(sb, str(sb.root / "hub.git")).env("box"))
    status = {r["agent"]: r for r in json.loads(sb.fleet("status", "--json").out)["agents"]}
    assert (status["api"]["handed_off"], status["api"]["published"], status["api"]["ahead"]) == (True, True, 1)
    res = sb.fleet("merge", "api")
    assert "merged as it published fleet/api" in res.err
    assert sb.git("rev-parse", "main^2").out.strip() == sb.head(cwd=there)
    assert sb.git("rev-parse", "main", cwd=sb.root / "hub.git").out == sb.git("rev-parse", "main").out


def test_a_server_asking_for_signed_machines_takes_each_machines_own_steps_only(hub: Sandbox) -> None:
    sb = hub
    said = sb.git("fleet-init", "--server", "--signed-machines", cwd=sb.root / "hub.git")
    assert "taken only in pushes signed by the machine they speak for" in said.out + said.err
    with _over_a_daemon(sb) as (_url, machines):
        box = machines.machine("box")
        box_git = {"cwd": box, "env": machines.env("box")}
        sb.git("fleet-join", "docs", **box_git)
        sb.fleet("join", "api")
        # every machine's own steps go through, signed with the key its record registered
        sb.fleet("task", "add", "the laptop's", "--agent", "api")
        sb.fleet("task", "add", "the box's", "--agent", "docs")
        sb.fleet("task", "claim", "--agent", "api")
        assert "task-002" in sb.git("fleet-task", "claim", "--agent", "docs", **box_git).out
        there = sb.root / "box" / "repo-docs"
        sb.commit(there, {"docs/made_there.md": "x\n"}, "made on the box")
        sb.git("fleet-task", "done", "2", "--agent", "docs", **box_git)
        assert sb.git("rev-parse", "fleet/docs", cwd=sb.root / "hub.git").out.strip() == sb.head(cwd=there)
        listed = sb.fleet("task", "list").out
        assert "task-002" in listed and "done" in [ln for ln in listed.splitlines() if "task-002" in ln][0]
        # the box speaks for the laptop: a renewal of the laptop's claim, signed with the box's key
        laptop_id = sb.git("config", "fleet.machine").out.strip()
        box_id = sb.git("config", "fleet.machine", **box_git).out.strip()
        sb.git("fleet-task", "list", **box_git)
        tip = sb.git("rev-parse", "refs/fleet-remote/origin/bus/tasks/1", **box_git).out.strip()
        forged = sb.git("commit-tree", f"{tip}^{{tree}}", "-p", tip, "-m", "fleet: renew\n\n" + json.dumps(
            {"fleet": 1, "op": "renew", "task": 1, "attempt": 1, "agent": "api", "machine": laptop_id, "lease": 60,
             "nonce": "x"}), **box_git).out.strip()
        box_key = str(box / ".git" / "fleet" / "machine-key")
        signed = ["-c", "gpg.format=ssh", "-c", f"user.signingKey={box_key}", "push", "--signed"]
        res = sb.git(*signed, "origin", f"{forged}:refs/fleet/bus/tasks/1", ok=False, **box_git)
        assert (f"push of refs/fleet/bus/tasks/1 rejected: it speaks for machine {laptop_id}, and the push is signed "
                f"by machine {box_id}") in res.err
        # the same step unsigned, or signed with a key no machine registered: refused
        res = sb.git("push", "origin", f"{forged}:refs/fleet/bus/tasks/1", ok=False, **box_git)
        assert "the push is not signed (git push --signed)" in res.err and "hint: this server takes" in res.err
        stranger = sb.root / "stranger"
        sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
        res = sb.git("-c", "gpg.format=ssh", "-c", f"user.signingKey={stranger}", "push", "--signed", "origin",
                     f"{forged}:refs/fleet/bus/tasks/1", ok=False, **box_git)
        assert "signed by a key no machine of the fleet registered (SHA256:" in res.err
        assert sb.git("rev-parse", "refs/fleet/bus/tasks/1", cwd=sb.root / "hub.git").out.strip() == tip
        sb.fleet("task", "renew", "1", "--agent", "api")  # (the laptop's own, signed with its key)
        tip = sb.git("rev-parse", "refs/fleet/bus/tasks/1", cwd=sb.root / "hub.git").out.strip()
        sb.git("fleet-task", "list", **box_git)
        # a registration of the laptop's id with a stranger's key, pushed by a client that hid the
        # laptop's record from itself (so it tells the server the id is new), with a step in the
        # laptop's name: the key is not taken, and the step does not land
        blob = sb.git("hash-object", "-w", f"{stranger}.pub", **box_git).out.strip()
        tree = sb.git("mktree", input=f"100644 blob {blob}\tkey.pub\n", **box_git).out.strip()
        record = sb.git("commit-tree", tree, "-m", 'fleet: machine\n\n{"fleet": 1, "op": "machine"}', **box_git).out.strip()
        forged = sb.git("commit-tree", f"{tip}^{{tree}}", "-p", tip, "-m", "fleet: release\n\n" + json.dumps(
            {"fleet": 1, "op": "release", "task": 1, "attempt": 1, "agent": "api", "machine": laptop_id, "nonce": "y"}),
            **box_git).out.strip()
        proxy = sb.root / "proxy"
        proxy.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).parent / 'hiding_proxy.py'} \"$@\"\n")
        proxy.chmod(0o755)
        res = sb.git("-c", "gpg.format=ssh", "-c", f"user.signingKey={stranger}", "push", "--signed", "origin",
                     f"{record}:refs/fleet/machines/{laptop_id}", f"{forged}:refs/fleet/bus/tasks/1", ok=False,
                     cwd=box, env={**machines.env("box"), "GIT_PROXY_COMMAND": str(proxy),
                                   "HIDE": f"refs/fleet/machines/{laptop_id}"})
        assert "signed by a key no machine of the fleet registered" in res.err
        assert sb.git("rev-parse", "refs/fleet/bus/tasks/1", cwd=sb.root / "hub.git").out.strip() == tip
        # a failed join gives the hold back, its record speaking for the machine that gives it back
        (sb.root / "box" / "full").mkdir()
        (sb.root / "box" / "full" / "x").write_text("x\n")
        sb.git("fleet-join", "api", "--take-over", "--path", str(sb.root / "box" / "full"), ok=False, **box_git)
        hold = sb.git("log", "-1", "--format=%B", "refs/fleet/agents/api", cwd=sb.root / "hub.git").out
        assert f'"machine": "{laptop_id}"' in hold and f"given back by machine {box_id}" in hold
        # the snapshot of an agent another machine holds: not the box's to replace
        res = sb.git(*signed, "origin", f"{forged}:refs/fleet/teleport/api", ok=False, **box_git)
        assert f"it speaks for machine {laptop_id}, and the push is signed by machine {box_id}" in res.err
        # a key git cannot sign with: said so, not taken for the remote away
        (box / ".git" / "fleet" / "machine-key").write_text("not a key\n")
        res = sb.git("fleet-task", "add", "more", ok=False, **box_git)
        assert "git could not sign the push with this machine's key" in res.err and "cannot reach" not in res.err


def test_a_server_that_enrols_machines_lets_only_an_enrolled_key_join(hub: Sandbox) -> None:
    sb = hub
    stranger = sb.root / "stranger"
    sb.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
    said = sb.git("fleet-init", "--server", "--machine-key", f"{stranger}.pub", cwd=sb.root / "hub.git")
    assert "taken only in pushes signed by the machine they speak for" in said.out + said.err
    with git_daemon(sb, sb.root) as url:
        sb.git("remote", "set-url", "origin", f"{url}/hub.git")
        res = sb.git("fleet-init", "--remote", "origin", ok=False)
        key = (sb.repo / ".git" / "fleet" / "machine-key.pub").read_text().strip()
        assert "key is not enrolled on this server (SHA256:" in res.err
        enrol = res.err[res.err.index("echo '"):].split(";")[0].split("\n")[0].strip()  # (as the refusal words it)
        assert " ".join(key.split()[:2]) in enrol and "git fleet-init --server --machine-key" in enrol
        assert "enrol this machine's key" in res.err
        assert sb.git("config", "fleet.remote", ok=None).out == ""  # (nothing set)
        assert "refs/fleet/" not in sb.git("ls-remote", f"{url}/hub.git").out
        # a key listed for an agent is not thereby a machine's; enrolled as the refusal says, it joins
        # (listed under both: git names the first principal, the enrolment is matched by key)
        sb.git("fleet-init", "--server", "--agent-key", f"api={sb.repo / '.git' / 'fleet' / 'machine-key.pub'}",
               cwd=sb.root / "hub.git")
        assert "not enrolled" in sb.git("fleet-init", "--remote", "origin", ok=False).err
        sb.run(["sh", "-c", enrol], cwd=sb.root / "hub.git")
        sb.git("fleet-init", "--remote", "origin")
        sb.fleet("task", "add", "enrolled")
        assert "task-001" in sb.fleet("task", "list").out


def test_a_machine_replaces_its_key_and_the_old_one_signs_nothing_more(hub: Sandbox) -> None:
    sb = hub
    sb.git("fleet-init", "--server", "--signed-machines", cwd=sb.root / "hub.git")
    with _over_a_daemon(sb) as (_url, _machines):
        key = sb.repo / ".git" / "fleet" / "machine-key"
        old, old_public = key.read_bytes(), (sb.root / "old.pub")
        old_public.write_bytes(Path(f"{key}.pub").read_bytes())
        me = sb.git("config", "fleet.machine").out.strip()
        record = sb.git("rev-parse", f"refs/fleet/machines/{me}", cwd=sb.root / "hub.git").out.strip()
        res = sb.git("fleet-init", "--remote", "origin", "--new-key")
        assert f"machine {me} has a new key, registered on 'origin'" in res.out
        new_public = Path(f"{key}.pub").read_text()
        assert key.read_bytes() != old and new_public != old_public.read_text()
        on_hub = sb.git("show", f"refs/fleet/machines/{me}:key.pub", cwd=sb.root / "hub.git").out
        assert on_hub == new_public
        assert sb.git("rev-parse", f"refs/fleet/machines/{me}^", cwd=sb.root / "hub.git").out.strip() == record
        sb.fleet("task", "add", "signed with the new key")
        # the old key, put back, signs nothing more
        key.write_bytes(old)
        Path(f"{key}.pub").write_bytes(old_public.read_bytes())
        res = sb.fleet("task", "add", "signed with the old key", ok=False)
        assert "signed by a key no machine of the fleet registered" in res.err
        assert "--new-key goes with --remote NAME" in sb.fleet("init", "--new-key", ok=False).err


def test_the_server_holds_every_machine_to_the_protocol_of_the_shared_refs(hub: Sandbox) -> None:
    sb = hub
    sb.git("fleet-init", "--server", cwd=sb.root / "hub.git")
    with _over_a_daemon(sb) as (url, machines):
        box = machines.machine("box")
        sb.git("fleet-join", "docs", "--take-over", cwd=box, env=machines.env("box"))
        sb.fleet("join", "api")  # api runs on the laptop
        sb.fleet("task", "add", "mine")
        sb.fleet("task", "claim", "--agent", "api")
        # the box forges a step on the laptop's claim: done by another machine, then a deletion
        sb.git("fleet-task", "list", cwd=box, env=machines.env("box"))
        tip = sb.git("rev-parse", "refs/fleet-remote/origin/bus/tasks/1", cwd=box).out.strip()
        box_id = sb.git("config", "fleet.machine", cwd=box).out.strip()
        forged = sb.git("commit-tree", f"{tip}^{{tree}}", "-p", tip, "-m", "fleet: done\n\n" + json.dumps(
            {"fleet": 1, "op": "done", "task": 1, "attempt": 1, "agent": "api", "machine": box_id, "nonce": "x"}),
            cwd=box).out.strip()
        res = sb.git("push", "origin", f"{forged}:refs/fleet/bus/tasks/1", cwd=box, env=machines.env("box"), ok=False)
        assert "push of refs/fleet/bus/tasks/1 rejected: only the holder of task-001 may done it" in res.err
        res = sb.git("push", "origin", ":refs/fleet/bus/tasks/1", cwd=box, env=machines.env("box"), ok=False)
        assert "deleting it loses the fleet's shared state" in res.err
        res = sb.git("push", "origin", f"{forged}:refs/fleet/bus/wishes", cwd=box, env=machines.env("box"), ok=False)
        assert "does not know refs/fleet/bus/wishes" in res.err
        # and the fleet's own steps pass the server's hook: done, a fold, a take-over of the hold
        sb.fleet("task", "done", "1", "--agent", "api")
        bus = bus_of(sb.repo)
        for i in range(15):
            bus.add(f"more {i}")
            bus.claim("api")
            bus.finish(i + 2, "api", "ok")
        assert "refs/fleet/bus/tasks/" not in sb.git("ls-remote", f"{url}/hub.git").out  # folded
        # forgeries of what the refs hold, not only of their steps
        box_git = {"cwd": box, "env": machines.env("box")}
        sb.git("fetch", "-q", "origin", "+refs/fleet/*:refs/forge/*", **box_git)
        log = sb.git("rev-parse", "refs/forge/bus/log", **box_git).out.strip()
        empty = sb.git("commit-tree", "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "-p", log, "-m",
                       'fleet: log\n\n{"fleet": 1, "op": "log", "nonce": "y"}', **box_git).out.strip()
        res = sb.git("push", "origin", f"{empty}:refs/fleet/bus/log", ok=False, **box_git)
        assert "the log keeps every task folded into it" in res.err
        sb.fleet("task", "add", "one more")
        sb.git("fetch", "-q", "origin", "+refs/fleet/*:refs/forge/*", **box_git)
        tip = sb.git("rev-parse", "refs/forge/bus/tasks/17", **box_git).out.strip()
        bare = sb.git("commit-tree", "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "-p", tip, "-m", "fleet: claim\n\n"
                      + json.dumps({"fleet": 1, "op": "claim", "task": 17, "attempt": 1, "agent": "docs", "nonce": "z"}),
                      **box_git).out.strip()
        res = sb.git("push", "origin", f"{bare}:refs/fleet/bus/tasks/17", ok=False, **box_git)
        assert "a claim changes nothing of the task's files" in res.err
        reused = sb.git("commit-tree", f"{tip}^{{tree}}", "-m", 'fleet: open\n\n{"fleet": 1, "op": "open", "task": 3}',
                        **box_git).out.strip()
        res = sb.git("push", "origin", f"{reused}:refs/fleet/bus/tasks/3", ok=False, **box_git)
        assert "a new task's id is given out by the same push" in res.err
        res = sb.git("push", "origin", f"{reused}:refs/fleet/bus/kept/99/x-1-y", ok=False, **box_git)
        assert "a result kept aside is written once" in res.err
        sb.git("tag", "-m", "a tag", "forged", tip, **box_git)
        res = sb.git("push", "--force", "origin", "forged:refs/fleet/agents/docs", ok=False, **box_git)
        assert "not a commit" in res.err
        # a machine's new key: only where signatures show it is that machine's own
        res = sb.fleet("init", "--remote", "origin", "--new-key", ok=False)
        assert "a new key only on a server that checks signed machines" in res.err and "the old key stays" in res.err
        # a join that fails gives the hold back, as a record on top (the server keeps the chain)
        (sb.root / "box" / "full").mkdir()
        (sb.root / "box" / "full" / "x").write_text("x\n")
        sb.git("fleet-join", "api", "--take-over", "--path", str(sb.root / "box" / "full"), ok=False, **box_git)
        claimed = sb.fleet("task", "claim", "--agent", "api", ok=None)
        assert claimed.code in (0, 1) and "runs on machine" not in claimed.err  # (not refused: api is the laptop's)
        sb.git("fleet-join", "api", "--take-over", **box_git)
        assert json.loads(sb.fleet("task", "show", "1", "--json").out)["status"] == "done"


def test_status_shows_where_each_agent_runs_and_its_branch_as_published(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    sb.fleet("join", "api")
    machines = Machines(sb, str(sb.root / "hub.git"))
    box = machines.machine("box")
    sb.git("fleet-join", "docs", "--take-over", cwd=box, env=machines.env("box"))
    there = sb.root / "box" / "repo-docs"
    sb.commit(there, {"docs/made_there.md": "x\n"}, "made on the box")
    _published(sb, "fleet/docs", sb.head(cwd=there))
    box_id = sb.git("config", "fleet.machine", cwd=box).out.strip()
    data = json.loads(sb.fleet("status", "--json").out)
    rows = {r["agent"]: r for r in data["agents"]}
    assert (rows["docs"]["machine"], rows["docs"]["published"], rows["docs"]["ahead"]) == (box_id, True, 1)
    assert rows["docs"]["dirty"] is None and rows["docs"]["heard"] is not None
    assert rows["api"]["here"] is True and rows["api"]["published"] is False
    assert data["remote"]["stale"] is None
    shown = sb.fleet("status").out
    assert "machine" in shown.splitlines()[0] and "here" in shown
    watched = sb.fleet("watch", "--once").out  # (the last fetched state: no network in the watch's refresh)
    assert "    runs on " in watched and "its branch as published" in watched
    # the remote away: the last fetched state, and how old it is
    (sb.root / "hub.git").rename(sb.root / "away.git")
    res = sb.fleet("status")
    assert "cannot reach remote 'origin'" in res.err and "the last fetched state, fetched" in res.err
    assert {r["agent"]: r["ahead"] for r in json.loads(sb.fleet("status", "--json").out)["agents"]}["docs"] == 1


def test_an_agents_state_on_another_machine_shows_in_ps_status_and_the_watch(hub: Sandbox) -> None:
    sb = hub
    machines, there = _docs_working_on_the_box(sb)
    # its Claude Code asks its person there: the hook's report reaches the hub in the background
    _hook_on_the_box(sb, machines, there, {"hook_event_name": "Notification", "notification_type": "permission_prompt",
                                           "message": "Claude needs your permission to use Bash\x1b]0;owned\x07"})
    deadline = time.time() + 30
    while (row := {r["agent"]: r for r in json.loads(sb.fleet("ps", "--json").out)}["docs"])["state"] != "needs you":
        assert time.time() < deadline, row
        time.sleep(0.2)
    _published(sb, "fleet/docs", sb.head(cwd=there))  # (and the publisher the hook started has ended)
    # (another machine's words, as text: nothing a terminal would obey)
    assert row["message"] == "Claude needs your permission to use Bash ]0;owned " and row["who"] and row["reported"]
    assert row["state_since"] <= time.time() and row["running"] is None and row["since"] is None
    shown = sb.fleet("ps").out
    assert "machine" in shown.splitlines()[0]
    assert [ln for ln in shown.splitlines() if ln.startswith("docs")][0].count("needs you: Claude needs") == 1
    assert "api" in shown and "here" not in [ln for ln in shown.splitlines() if ln.startswith("docs")][0]
    status = {r["agent"]: r for r in json.loads(sb.fleet("status", "--json").out)["agents"]}
    assert status["docs"]["state"] == "needs you"
    watched = sb.fleet("watch", "--once").out
    assert "1 needs you" in watched.splitlines()[0] and "runs on " in watched
    # the remote away: ps says so, with the last fetched state
    (sb.root / "hub.git").rename(sb.root / "away.git")
    res = sb.fleet("ps")
    assert "cannot reach remote 'origin'" in res.err and "the last fetched state, fetched" in res.err
    assert "needs you" in res.out
    watched = sb.fleet("watch", "--once").out  # (the watch does not fetch: it says what the last fetch met)
    assert "cannot reach remote 'origin'" in watched and "other machines as fetched" in watched
    (sb.root / "away.git").rename(sb.root / "hub.git")
    sb.fleet("task", "list")  # (the bus's own fetch, answered: the watch says so too)
    assert "cannot reach" not in sb.fleet("watch", "--once").out


def test_an_agent_whose_branch_the_remote_refuses_is_still_heard_from_with_its_state(hub: Sandbox) -> None:
    sb = hub
    machines, there = _docs_working_on_the_box(sb)
    hook = sb.root / "hub.git" / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nif grep -q ' refs/heads/fleet/docs$'; then echo 'fleet/docs is frozen'; exit 1; fi\n")
    hook.chmod(0o755)
    sb.commit(there, {"docs/refused.md": "x\n"}, "refused by the remote")
    _hook_on_the_box(sb, machines, there, {"hook_event_name": "Stop"})
    deadline = time.time() + 30
    while (row := {r["agent"]: r for r in json.loads(sb.fleet("ps", "--json").out)}["docs"])["state"] != "idle":
        assert time.time() < deadline, row
        time.sleep(0.2)
    assert sb.git("log", "-1", "--format=%s", "fleet/docs", cwd=sb.root / "hub.git").out.strip() == "made on the box"
    _published(sb, "fleet/docs", sb.git("rev-parse", "fleet/docs", cwd=sb.root / "hub.git").out.strip())


def _docs_working_on_the_box(sb: Sandbox) -> tuple[Machines, Path]:
    """The laptop spanning machines through the hub, docs joined on the box with a commit
    published: the machines, and docs' worktree on the box."""
    sb.fleet("init", "--remote", "origin")
    machines = Machines(sb, str(sb.root / "hub.git"))
    box = machines.machine("box")
    sb.git("fleet-join", "docs", cwd=box, env=machines.env("box"))
    there = sb.root / "box" / "repo-docs"
    sb.commit(there, {"docs/made_there.md": "x\n"}, "made on the box")
    _published(sb, "fleet/docs", sb.head(cwd=there))
    return machines, there


def _hook_on_the_box(sb: Sandbox, machines: Machines, there: Path, payload: dict[str, str]) -> None:
    """Run the hook that Claude Code's settings in the box's worktree `there` name for this event,
    with the JSON Claude Code sends it, on the box (its HOME)."""
    settings = json.loads((there / ".claude/settings.local.json").read_text())
    [command] = [h["command"] for group in settings["hooks"][payload["hook_event_name"]] for h in group["hooks"]]
    body = {"session_id": "s-docs", "transcript_path": str(sb.root / "t.jsonl"), "cwd": str(there), **payload}
    subprocess.run(["sh", "-c", command], cwd=there, input=json.dumps(body), text=True, check=True,
                   env={**os.environ, **machines.env("box"), "CLAUDE_PROJECT_DIR": str(there)})


@needs_tmux
def test_the_live_watch_sees_an_agent_on_another_machine_ask_for_its_person(hub: Sandbox, tmux: None) -> None:
    sb = hub
    machines, there = _docs_working_on_the_box(sb)
    pane = Pane(sb, "watch", cols=100)
    pane.until(lambda s: "runs on " in s and pane.row("docs")[1:2] == ["elsewhere"], "docs running on the box")
    # nobody fetches on the laptop: the watch does, every few seconds, in the background
    _hook_on_the_box(sb, machines, there, {"hook_event_name": "Notification", "notification_type": "permission_prompt",
                                           "message": "Claude needs your permission to use Bash"})
    pane.until(lambda s: "1 needs you" in s and pane.row("docs")[1:3] == ["needs", "you:"], "docs needing its person")
    _hook_on_the_box(sb, machines, there, {"hook_event_name": "Stop"})
    pane.until(lambda s: pane.row("docs")[1:2] == ["idle"], "docs idle")
    _published(sb, "fleet/docs", sb.head(cwd=there))  # (the publishers the hooks started have ended)
    pane.keys("q")
    pane.until(lambda s: "fleet on main" not in s, "the screen closed")


def test_a_clone_copied_with_its_machine_id_is_refused_until_it_takes_its_own(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    sb.fleet("task", "add", "one")
    copy = sb.root / "copy"
    sb.run(["cp", "-a", str(sb.repo), str(copy)])
    res = sb.run(["git", "fleet-task", "list"], cwd=copy, ok=False)
    assert res.code == 1 and f"this clone is a copy of the one at {sb.repo}" in res.err
    assert "git config --unset fleet.machine" in res.err
    assert "task-001" in sb.fleet("task", "list").out  # (the one copied from is itself)
    # moved, not copied: it is itself in its new place; the copy is still refused then
    moved = sb.root / "moved"
    sb.repo.rename(moved)
    assert "task-001" in sb.run(["git", "fleet-task", "list"], cwd=moved).out
    assert "this clone is a copy of" in sb.run(["git", "fleet-task", "list"], cwd=copy, ok=False).err
    # the copy, given its own id as the hint says, is a machine of its own
    sb.run(["sh", "-c", "git config --unset fleet.machine && rm -f .git/fleet/machine-key .git/fleet/machine-key.pub "
                        "&& git fleet-init --remote origin"], cwd=copy)
    ids = {sb.git("config", "fleet.machine", cwd=where).out.strip() for where in (copy, moved)}
    assert len(ids) == 2 and "task-001" in sb.run(["git", "fleet-task", "list"], cwd=copy).out


def _published(sb: Sandbox, branch: str, tip: str) -> None:
    """Wait for the background publisher to put `tip` on the hub's `branch`, and to end."""
    deadline = time.time() + 30
    while sb.git("rev-parse", "-q", "--verify", branch, cwd=sb.root / "hub.git", ok=None).out.strip() != tip:
        assert time.time() < deadline, f"{branch} was not published"
        time.sleep(0.1)
    while publishing(sb):
        assert time.time() < deadline, "the publisher did not end"
        time.sleep(0.1)


def publishing(sb: Sandbox) -> bool:
    """Whether a background publisher of this test's clones runs (its working directory is one
    of them: another test's, run alongside, is not waited for)."""
    for pid in sb.run(["pgrep", "-f", "git_fleet.publish"], ok=None).out.split():
        with contextlib.suppress(OSError):
            if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(sb.root):
                return True
    return False


def test_an_agents_commits_are_published_in_the_background_and_a_refusal_is_shown(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    sb.git("config", "fleet.publishEvery", "0")
    sb.fleet("join", "api")
    here = sb.root / "repo-api"
    started = time.time()
    sb.commit(here, {"src/backend/one.py": "1\n"}, "one")
    assert time.time() - started < 5  # (the commit does not wait for the network)
    _published(sb, "fleet/api", sb.head(cwd=here))
    sb.commit(sb.repo, {"README.md": "# changed by the orchestrator\n"}, "the orchestrator's own")
    assert sb.git("rev-parse", "main", cwd=sb.root / "hub.git").out.strip() != sb.head()  # not an agent's: not published
    # taken over elsewhere: what is committed here is not published, and status says why
    machines = Machines(sb, str(sb.root / "hub.git"))
    box = machines.machine("box")
    sb.git("fleet-join", "api", "--take-over", cwd=box, env=machines.env("box"))
    before = sb.git("rev-parse", "fleet/api", cwd=sb.root / "hub.git").out.strip()
    sb.commit(here, {"src/backend/two.py": "2\n"}, "two")
    deadline = time.time() + 30
    while "not on 'origin'" not in (res := sb.fleet("status")).err:
        assert time.time() < deadline, res.err
        time.sleep(0.2)
    assert "api's last commits are not on 'origin': agent 'api' runs on machine" in res.err
    assert sb.git("rev-parse", "fleet/api", cwd=sb.root / "hub.git").out.strip() == before
    sb.fleet("task", "add", "late", "--agent", "api")  # a done here publishes nothing: the hold is the box's
    assert sb.fleet("task", "done", "1", "--agent", "api", ok=None).code != 0
    _published(sb, "fleet/api", before)  # (and the publisher has ended)
    assert sb.git("rev-parse", "fleet/api", cwd=sb.root / "hub.git").out.strip() == before


def test_a_merge_stopped_here_after_the_remote_took_it_says_so(hub: Sandbox) -> None:
    sb = hub
    there = _api_on_the_box(sb, "src/backend/late.py")
    before = sb.head()
    code, err = _merge_meanwhile(sb, lambda: (sb.repo / "src/backend/late.py").write_text("in the way\n"))
    assert code == 1 and "the fleet's remote has the merge already" in err and "git pull --ff-only" in err
    assert sb.head() == before and (sb.repo / "src/backend/late.py").read_text() == "in the way\n"
    merged = sb.git("rev-parse", "main", cwd=sb.root / "hub.git").out.strip()
    assert merged != before and sb.git("rev-parse", f"{merged}^2").out.strip() == sb.head(cwd=there)


def test_the_servers_rules_for_shared_refs_hold_without_a_fleet_config(sandbox: Sandbox) -> None:
    sb = sandbox
    hub = sb.root / "hub.git"
    sb.git("init", "-q", "--bare", "-b", "main", str(hub), cwd=sb.root)
    sb.git("fleet-init", "--server", cwd=hub, ok=None)
    sb.make_repo({"README.md": "# x\n"})
    sb.git("remote", "add", "origin", str(hub))
    sb.git("push", "-q", "origin", "main")
    junk = sb.git("commit-tree", "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "-m", "not a record").out.strip()
    res = sb.git("push", "origin", f"{junk}:refs/fleet/bus/ids", ok=False)
    assert "push of refs/fleet/bus/ids rejected" in res.err


def test_a_remote_given_by_a_relative_path_means_what_it_means_in_the_worktree(hub: Sandbox) -> None:
    sb = hub
    sb.git("remote", "set-url", "origin", "../hub.git")
    sb.fleet("init", "--remote", "origin")
    sb.fleet("task", "add", "relative")
    assert "refs/fleet/bus/tasks/1" in sb.git("ls-remote", str(sb.root / "hub.git")).out
    assert sb.fleet("task", "claim", "--agent", "api").out.startswith("task-001")


def test_a_burst_of_commits_is_one_push(hub: Sandbox) -> None:
    sb = hub
    sb.git("config", "core.logAllRefUpdates", "true", cwd=sb.root / "hub.git")  # (to count the pushes)
    sb.fleet("init", "--remote", "origin")
    sb.git("config", "fleet.publishEvery", "2")
    sb.fleet("join", "api")
    here = sb.root / "repo-api"
    for i in range(3):
        sb.commit(here, {f"src/backend/burst{i}.py": f"{i}\n"}, f"burst {i}")
    _published(sb, "fleet/api", sb.head(cwd=here))
    moves = sb.git("reflog", "show", "--format=%H", "refs/heads/fleet/api", cwd=sb.root / "hub.git").out.split()
    assert len(moves) == 1, moves


def test_a_round_merged_from_another_clone_counts_before_the_next_is_tagged(hub: Sandbox) -> None:
    sb = hub
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text() + '\n[checkpoints.v1]\nagents = ["api"]\n')
    sb.git("commit", "-qam", "a checkpoint")
    sb.git("push", "-q", "origin", "main")
    sb.fleet("zones", "--approve")
    sb.fleet("init", "--remote", "origin")
    other = Machines(sb, str(sb.root / "hub.git")).machine("desk")  # another orchestrator's clone, made now
    sb.fleet("join", "api")
    sb.commit(sb.root / "repo-api", {"src/backend/r1.py": "1\n"}, "round 1")
    sb.fleet("merge", "--checkpoint", "v1")
    # the other clone merges the next round: it never fetched round 1's tag, the merge does
    sb.git("pull", "-q", "--ff-only", "--no-tags", "origin", "main", cwd=other)
    sb.git("fleet-join", "api", "--take-over", cwd=other)
    there = sb.root / "desk" / "repo-api"
    sb.git("merge", "-q", "--ff-only", "origin/main", cwd=there)
    sb.commit(there, {"src/backend/r2.py": "2\n"}, "round 2")
    sb.git("fleet-merge", "--checkpoint", "v1", cwd=other)
    tags = sb.git("ls-remote", "--tags", str(sb.root / "hub.git")).out
    assert "refs/tags/fleet/v1\n" in tags + "\n" and "refs/tags/fleet/v1@2" in tags


def test_sync_takes_the_remotes_base_and_works_with_the_remote_away(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('sync = "merge"', 'sync = "rebase"'))  # (a shared branch is merged all the same)
    other = sb.root / "other"
    sb.git("clone", "-q", str(sb.root / "hub.git"), str(other), cwd=sb.root)
    sb.commit(other, {"README.md": "# from another clone\n"}, "the remote's base moved")
    sb.git("push", "-q", "origin", "main", cwd=other)
    sb.commit(sb.root / "repo-api", {"src/backend/own.py": "1\n"}, "api's own")
    sb.fleet("sync", "api")
    api = sb.root / "repo-api"
    assert (api / "README.md").read_text() == "# from another clone\n"  # the remote's base, ahead of this clone's
    assert len(sb.git("rev-list", "--parents", "-1", "HEAD", cwd=api).out.split()) == 3  # merged, not rebased
    (sb.root / "hub.git").rename(sb.root / "away.git")
    sb.commit(sb.repo, {"docs/guide.md": "# here\n"}, "this clone's base moved")
    sb.fleet("sync", "api")  # the remote away: this clone's base
    assert (api / "docs/guide.md").read_text() == "# here\n"


def test_a_waiting_claim_on_another_machine_wakes_for_a_task_added_here(hub: Sandbox) -> None:
    sb = hub
    sb.fleet("init", "--remote", "origin")
    machines = Machines(sb, str(sb.root / "hub.git"))
    box = machines.machine("box")
    sb.git("config", "fleet.poll", "0.5", cwd=box)
    sb.git("fleet-join", "docs", "--take-over", cwd=box, env=machines.env("box"))
    waiting = sb.spawn(["git", "fleet-task", "claim", "--wait", "--agent", "docs"], cwd=box, env=machines.env("box"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        assert waiting.poll() is None  # (nothing to claim yet: it waits)
        sb.fleet("task", "add", "for the box", "--agent", "docs")
        out, err = waiting.communicate(timeout=30)
    finally:
        Sandbox.kill_group(waiting)
    assert waiting.returncode == 0 and out.startswith("task-001\tfor the box"), err
