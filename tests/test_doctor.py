"""git fleet-doctor and git fleet-prune on real repositories, worktrees and hooks."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from helpers import Sandbox


@pytest.fixture
def healthy(fleet_repo: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Sandbox:
    sb = fleet_repo
    sb.add_agent("api", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace(
        'command = "claude --session-id {session_id} --name {session} --model {model}"', 'command = "sh -c true"')
                   + '\n[checkpoints.phase-1]\nagents = ["api", "web"]\n')
    if shutil.which("tmux") is None:  # .ci/run installs it; elsewhere, a stand-in keeps the check green
        fake = tmp_path / "fakebin"
        fake.mkdir()
        (fake / "tmux").write_text("#!/bin/sh\n")
        (fake / "tmux").chmod(0o755)
        monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    return sb


def checks(sb: Sandbox, *args: str, ok: bool | None = None) -> dict[str, dict[str, object]]:
    res = sb.fleet("doctor", "--json", *args, ok=ok)
    return {c["check"]: c for c in json.loads(res.out)}


def test_a_healthy_fleet_passes_and_unowned_files_are_information(healthy: Sandbox) -> None:
    sb = healthy
    res = sb.fleet("doctor")
    assert res.code == 0 and "FAIL" not in res.out
    found = checks(sb, ok=True)
    assert all(c["ok"] for c in found.values())
    zones_info = " ".join(found["zones"]["info"])  # type: ignore[arg-type]
    assert "2 tracked file(s) belong to no agent" in zones_info and "README.md" in zones_info and "docs/guide.md" in zones_info


def test_every_problem_is_named_with_its_fix_and_exit_1(healthy: Sandbox) -> None:
    sb = healthy
    sb.add_agent("docs", "docs/**", "src/backend/README.md", extra=("--allow-overlap",))
    shutil.rmtree(sb.root / "repo-web")  # a deleted worktree directory
    sb.git("switch", "-q", "-c", "elsewhere", cwd=sb.root / "repo-docs")  # a worktree off its branch
    sb.git("branch", "fleet/old")  # a fleet branch of no agent
    (sb.repo / ".git/hooks/pre-push").unlink()
    sb.fleet("task", "add", "Lapsing")
    sb.fleet("task", "claim", "--agent", "api", "--lease", "1s")
    (sb.repo / "tasks" / "task-099-broken.md").write_text("---\nid: [\n---\n")
    time.sleep(1.1)
    res = sb.fleet("doctor", ok=False)
    assert res.code == 1
    out = res.out
    assert "the zones of 'api' and 'docs' overlap: both own src/backend/README.md" in out
    assert f"agent 'web': no worktree at {sb.root / 'repo-web'}" in out
    assert f"deleted: git worktree prune && git worktree add {sb.root / 'repo-web'} fleet/web" in out
    assert "fix: moved: git worktree repair <its new place>" in out
    assert "stale worktree record(s)" in out
    assert "fix: moved by hand? git worktree repair NEW-PLACE; deleted? git worktree prune" in out
    assert "agent 'docs': its worktree on elsewhere, not fleet/docs" in out
    assert f"fix: git -C {sb.root / 'repo-docs'} switch fleet/docs" in out
    assert "branch fleet/old belongs to no agent (merged)" in out and "fix: git branch -d fleet/old" in out
    assert "hook(s) not installed in" in out and "pre-push" in out and "fix: git fleet-init" in out
    assert "task-001: the lease of 'api' has lapsed" in out
    assert "task-099-broken.md" in out
    # --fix repairs the hooks, and nothing else (web's record may be of a worktree moved by hand)
    found = checks(sb, "--fix", ok=False)
    assert found["hooks"]["ok"] and found["hooks"]["fixed"]
    assert (sb.repo / ".git/hooks/pre-push").exists()
    assert "elsewhere" in sb.git("branch", "--show-current", cwd=sb.root / "repo-docs").out
    assert sb.git("branch", "--list", "fleet/old").out.strip()
    again = checks(sb, ok=False)
    problems = " ".join(p["problem"] for p in again["worktrees"]["problems"])  # type: ignore[attr-defined,index]
    assert "stale worktree record" in problems and "no worktree at" in problems


def test_doctor_sees_hooks_of_another_installation_and_missing_programs(healthy: Sandbox) -> None:
    sb = healthy
    hook = sb.repo / ".git/hooks/pre-commit"
    text = hook.read_text()
    hook.write_text(text.replace("\npython='", "\npython='/gone", 1))
    sb.fleet("set", "web", "--command", "no-such-agent-cli --model {model}")
    sb.fleet("set", "api", "--session", "web")
    found = checks(sb, ok=False)
    problems = {k: " ".join(p["problem"] for p in v["problems"]) for k, v in found.items()}  # type: ignore[attr-defined]
    assert "from another git-fleet, or whose Python is gone: pre-commit" in problems["hooks"]
    warned = found["sessions"]["warnings"][0]  # type: ignore[index]
    assert "'no-such-agent-cli' (the command of web) is not on PATH" in warned["warning"]  # a warning: the fleet works
    assert "agents 'api' and 'web' share the session name 'web'" in problems["sessions"]
    assert found["sessions"]["level"] == "failure"


def test_no_checkpoints_is_a_warning_with_a_fix(fleet_repo: Sandbox) -> None:
    """A fresh fleet is not a failing one: no checkpoint yet, or no agent CLI on this machine, is a
    warning (exit 0); doctor fails only where something is wrong."""
    fleet_repo.add_agent("api", "src/backend/**")
    found = checks(fleet_repo, ok=True)
    assert found["checkpoints"]["level"] == "warning"
    assert found["checkpoints"]["warnings"][0]["fix"].startswith("add to .gitfleet.toml")  # type: ignore[index]
    res = fleet_repo.run(["git", "fleet-doctor"])
    assert res.code == 0 and "warn  checkpoints" in res.out and "FAIL" not in res.out


def test_prune_removes_only_agents_whose_work_is_all_merged(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    for name, zone in (("done", "src/backend/**"), ("squashed", "src/frontend/**"), ("dirty", "docs/**"),
                       ("open", "lib/**"), ("fresh", "fresh/**")):
        sb.add_agent(name, zone)
    sb.commit(sb.root / "repo-done", {"src/backend/x.py": "x\n"}, "done work")
    sb.fleet("merge", "done")
    sb.commit(sb.root / "repo-squashed", {"src/frontend/y.js": "y\n"}, "squashed work")
    sb.git("merge", "-q", "--ff", "--squash", "fleet/squashed")  # (--ff: init makes merges into main --no-ff)
    sb.git("commit", "-qm", "squash of squashed")
    sb.commit(sb.root / "repo-dirty", {"docs/z.md": "z\n"}, "dirty work")
    sb.fleet("merge", "dirty")
    (sb.root / "repo-dirty/docs/notes.md").write_text("not yet committed\n")
    sb.commit(sb.root / "repo-open", {"lib/w.py": "w\n"}, "unmerged work")
    res = sb.fleet("prune", ok=False)  # no terminal to ask on
    assert res.code == 1 and "would remove done, squashed" in res.err and "--yes" in res.err
    assert (sb.root / "repo-done").exists()
    plan = json.loads(sb.fleet("prune", "-n", "--json").out)
    assert [c["agent"] for c in plan["would_remove"]] == ["done", "squashed"]
    assert {k["agent"]: k["why"] for k in plan["kept"]} == {
        "dirty": "uncommitted or untracked work: docs/notes.md", "open": "1 commit(s) not in main",
        "fresh": "no work of its own yet"}
    res = sb.fleet("prune", "--yes")
    assert "removed done: fleet/done merged" in res.err and "removed squashed" in res.err
    assert not (sb.root / "repo-done").exists() and not (sb.root / "repo-squashed").exists()
    branches = sb.branches()
    assert "fleet/done" not in branches and "fleet/squashed" not in branches
    assert {"fleet/dirty", "fleet/open", "fleet/fresh"} <= set(branches)
    assert (sb.root / "repo-dirty/docs/notes.md").read_text() == "not yet committed\n"
    agents = [a["agent"] for a in json.loads(sb.fleet("list", "--json").out)]
    assert agents == ["dirty", "open", "fresh"]


def test_init_interactive_proposes_zones_from_the_directories_and_ends_with_the_checklist(sandbox: Sandbox) -> None:
    sb = sandbox
    files = {f"src/{d}/f{i}.py": f"{i}\n" for d in ("api", "web", "shared") for i in range(3)}
    sb.make_repo({**files, "docs/a.md": "a\n", "README.md": "r\n"})
    # src/ holds nearly everything, so its parts are proposed; the user accepts all but edits one
    res = sb.run(["git", "fleet-init", "--interactive"], input="api=src/api/** web=src/web/**,!**/*.md docs=docs/**\n\n")
    assert "Directories: src/api/** (3 files), src/shared/** (3 files), src/web/** (3 files), docs/** (1 file)" in res.out
    assert "[api=src/api/** shared=src/shared/** web=src/web/** docs=docs/**]" in res.out
    agents = {a["agent"]: a["zone"] for a in json.loads(sb.fleet("list", "--json").out)}
    assert agents == {"api": ["src/api/**"], "web": ["src/web/**", "!**/*.md"], "docs": ["docs/**"]}
    assert (sb.root / "repo-web").is_dir()
    cps = json.loads(sb.fleet("checkpoint", "--json").out)
    assert [(c["checkpoint"], [a["agent"] for a in c["agents"]]) for c in cps] == [("phase-1", ["api", "web", "docs"])]
    assert "The checklist (git fleet-doctor):" in res.out and "ok    checkpoints" in res.out
    assert "belong to no agent, so to the orchestrator: README.md, src/shared/f0.py" in res.out


def on_a_terminal(sb: Sandbox, args: list[str], answer: str) -> tuple[int, str]:
    """Run a real command with a terminal on its stdin (so that it asks), answer its question, and
    return its exit status and everything it wrote."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    proc = sb.spawn(args, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.close(slave)
    os.write(master, answer.encode())
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, out


def test_prune_names_the_ignored_files_that_go_with_a_worktree(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.commit(sb.repo, {".gitignore": "build/\nnode_modules/\n.env\n*.log\ndist/\ncoverage/\n"}, "ignore build output")
    web = sb.add_agent("web", "src/frontend/**")
    sb.commit(web, {"src/frontend/app.js": "app(2)\n"}, "web: app v2")
    sb.fleet("merge", "web")
    sb.write_files({"build/app.min.js": "x\n", "node_modules/left-pad/index.js": "pad\n", ".env": "TOKEN=1\n",
                    "src/frontend/debug.log": "log\n", "dist/a": "a\n", "coverage/b": "b\n"}, web)
    assert (web / ".fleet/brief.md").is_file()  # git-fleet's own: not counted
    going = ("with its worktree go 6 ignored file(s) or folder(s): .env, build/, coverage/, dist/, "
             "node_modules/ and 1 more")
    res = sb.fleet("prune", "-n")
    assert f"would remove web: fleet/web merged; {going}" in res.err
    plan = json.loads(sb.fleet("prune", "-n", "--json").out)
    listed = [".env", "build/", "coverage/", "dist/", "node_modules/", "src/frontend/debug.log"]
    assert plan["ignored"] == {"web": listed} and plan["would_remove"][0]["ignored"] == listed
    res = sb.fleet("prune", ok=False)  # no terminal: refused, and the error says what would go
    assert res.code == 1 and f"error: would remove web\nerror: web: {going}\n" in res.err
    code, out = on_a_terminal(sb, ["git", "fleet-prune"], "n\n")
    assert code == 1 and f"web: {going}\n" in out
    assert "remove web (worktrees and branches, and the ignored files above)? [y/N]" in out
    assert (web / ".env").read_text() == "TOKEN=1\n" and "fleet/web" in sb.branches()
    res = sb.fleet("prune", "--yes")
    assert f"removed web: fleet/web merged; {going}" in res.err
    assert not web.exists() and "fleet/web" not in sb.branches()


def test_fix_prunes_stale_records_but_not_agents(fleet_repo: Sandbox) -> None:
    """An agent's worktree moved by hand looks like a deleted one: --fix leaves its record (its
    index) to the user, and prunes the rest."""
    import shutil

    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    sb.git("worktree", "add", "-q", "--detach", str(sb.root / "scratch-wt"))
    shutil.rmtree(sb.root / "scratch-wt")
    web.rename(sb.root / "moved-web")
    found = checks(sb, "--fix", ok=False)
    assert found["worktrees"]["fixed"] == [f"pruned stale worktree record {sb.root / 'scratch-wt'} (gitdir file points to non-existent location)"]  # noqa: E501
    assert "moved by hand? git worktree repair NEW-PLACE" in found["worktrees"]["problems"][0]["fix"]  # type: ignore[index]
    sb.git("worktree", "repair", str(sb.root / "moved-web"))
    assert sb.git("status", "--porcelain", cwd=sb.root / "moved-web").out == ""


def test_doctor_checks_where_this_clone_records_agents_worktrees(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    sb.git("config", "fleet-agent.ghost.worktree", str(sb.root / "ghost"))
    sb.git("config", "fleet-agent.web.worktree", str(sb.root / "elsewhere"))
    res = sb.run(["git", "fleet-doctor"], ok=None)
    assert "the record of 'ghost''s worktree" in res.out and "names no agent of the fleet" in res.out
    assert f"the record of 'web''s worktree, {sb.root / 'elsewhere'}, is no worktree git lists" in res.out
    assert res.code == 0  # warnings: the worktree is found by its branch meanwhile
    res = sb.run(["git", "fleet-doctor", "--fix"], ok=None)
    assert sb.git("config", "--get-regexp", "fleet-agent", ok=False).out == ""
    assert json.loads(sb.fleet("list", "--json").out)[0]["worktree"] == str(web)
