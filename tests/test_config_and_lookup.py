"""Malformed configuration from every command; git fleet-init, fleet-who and fleet-zones."""

from __future__ import annotations

import json
import tomllib

import pytest

from helpers import Sandbox

BROKEN = {
    "syntax": ('[fleet]\nbase = "main"\nbranch_prefix = fleet/\n', 3, "Invalid value"),
    "unknown key": ('[fleet]\nbase = "main"\n\n[agents.a]\nzone = ["a/"]\nzones = ["b/"]\n', 6, "unknown key 'zones'"),
    "wrong type": ('[fleet]\nwarn_agents = "seven"\n', 2, "'fleet.warn_agents' must be int"),
    "bad pattern": ('[agents.a]\nzone = ["ok/", "a[b"]\n', 2, "agent 'a': bad zone pattern 'a[b'"),
    "no zone": ('[agents.a]\nbranch = "x"\n', 1, "agent 'a' has no zone"),
    "bad name": ('[agents."a b"]\nzone = ["x"]\n', 1, "'a b' is not a valid agent name"),
    "newer": ('version = 9\n', 1, "written for a newer git-fleet"),
    "placeholder": ('[agents.a]\nzone = ["a/"]\ncommand = "aider --model {modle}"\n', 3,
                    "agent 'a': unknown placeholder {modle} in its command"),
    "layout": ('[fleet]\nbase = "main"\nlayout = "grid"\n', 3, "'fleet.layout' must be \"windows\" or \"tiled\""),
    "env": ('[agents.a]\nzone = ["a/"]\nenv = {"1X" = "y"}\n', 3, "must map variable names to strings"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("command", [["list"], ["who", "x"], ["zones"], ["add", "n", "--zone", "q/"], ["rm", "a"], ["init"]])
def test_malformed_config_is_reported_with_file_and_line_by_every_command(fleet_repo: Sandbox, case: str,
                                                                           command: list[str]) -> None:
    text, line, words = BROKEN[case]
    cfg = fleet_repo.repo / ".gitfleet.toml"
    cfg.write_text(text)
    res = fleet_repo.fleet(command[0], *command[1:], ok=False)
    first = res.err.splitlines()[0]
    assert first.startswith(f"error: {cfg}:{line}"), res.err
    assert words in first
    assert res.code == 2
    assert cfg.read_text() == text  # nothing rewritten


def test_init_writes_a_commented_config_and_is_safe_to_repeat(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.make_repo({"a": "1"})
    sb.git("switch", "-q", "-c", "trunk")
    sb.fleet("init")
    cfg = sb.repo / ".gitfleet.toml"
    text = cfg.read_text()
    data = tomllib.loads(text)
    assert data["fleet"] == {"base": "trunk", "branch_prefix": "fleet/", "worktree": "../{repo}-{agent}",
                             "warn_agents": 7, "max_agents": 10, "union": [], "sync": "merge", "model": "sonnet",
                             "command": "claude --session-id {session_id} --name {session} --model {model}",
                             "resume": "claude --resume {session_id}", "stagger": 5,
                             "layout": "windows"}
    assert text.count("\n#") >= 10
    cfg.write_text(text + "\n# my edit\n")
    res = sb.fleet("init", "-v")
    assert "# my edit" in cfg.read_text() and "wrote" not in res.err
    assert "installed hooks" in res.err


def test_init_in_a_repository_without_commits(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.run(["git", "init", "-q", str(sb.repo)], cwd=sb.root)
    res = sb.fleet("init")
    assert "base branch 'main' has no commits yet" in res.err
    res = sb.fleet("add", "a", "--zone", "a/", ok=False)
    assert "base 'main' does not exist" in res.err


def test_init_on_a_bare_repository_needs_server(sandbox: Sandbox) -> None:
    sb = sandbox
    sb.run(["git", "init", "-q", "--bare", str(sb.repo)], cwd=sb.root)
    sb.fleet("init", "--server", "--base", "trunk")
    assert sb.git("config", "fleet.base").out.strip() == "trunk"
    assert (sb.repo / "hooks/pre-receive").exists() and not (sb.repo / "hooks/pre-commit").exists()
    res = sb.fleet("list", ok=False)
    assert "bare repository" in res.err


def test_who_names_owners_and_the_deciding_pattern(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**", "!**/*.md")
    sb.add_agent("docs", "*.md", extra=("--allow-overlap",))
    out = sb.fleet("who", "src/backend/api.py", "src/backend/README.md", "Makefile").out.splitlines()
    assert out == ["src/backend/api.py: backend (src/backend/**)",
                   "src/backend/README.md: docs (*.md)",
                   "Makefile: (no agent: the orchestrator's)"]
    data = json.loads(sb.fleet("who", "--json", "src/backend/x.md", "docs/new.md", "src/backend/x.py").out)
    assert data == {"src/backend/x.md": ["docs"], "docs/new.md": ["docs"], "src/backend/x.py": ["backend"]}


def test_who_takes_paths_relative_to_the_current_directory(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**")
    assert sb.fleet("who", "api.py", "../frontend/app.js", cwd=sb.repo / "src/backend").out.splitlines() == [
        "api.py: backend (src/backend/**)", "../frontend/app.js: (no agent: the orchestrator's)"]
    res = sb.fleet("who", "../../outside", cwd=sb.repo / "src", ok=False)
    assert res.code == 2 and "'../../outside' is outside the repository" in res.err


def test_who_from_an_agents_worktree_uses_the_orchestrators_zones(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("backend", "src/backend/**")
    assert sb.fleet("who", "src/backend/api.py", cwd=wt).out == "src/backend/api.py: backend (src/backend/**)\n"


def test_who_and_list_with_several_owners_and_overlaps(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**")
    sb.add_agent("all", "src/", extra=("--allow-overlap",))
    assert sb.fleet("who", "src/backend/api.py").out == "src/backend/api.py: backend (src/backend/**), all (src/)\n"
    out = sb.fleet("zones").out
    assert out.splitlines()[:2] == ["backend  src/backend/**", "all      src/"]
    assert "overlaps:\n  all and backend: both own src/backend/" in out
    data = json.loads(sb.fleet("zones", "--json").out)
    assert data["zones"] == {"backend": ["src/backend/**"], "all": ["src/"]}
    assert data["overlaps"][0]["agents"] == ["all", "backend"]


def test_zones_without_overlaps(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**")
    assert "overlaps" not in sb.fleet("zones").out


def test_hand_edited_agents_in_other_layouts_are_refused_not_mangled(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("version = 4\n", 'version = 4\nagents = { a = { zone = ["a/**"] } }\n'))
    sb.fleet("zones", "--approve")
    before = cfg.read_text()
    res = sb.fleet("add", "b", "--zone", "b/**", ok=False)
    assert "cannot edit the agents in this file automatically" in res.err
    assert cfg.read_text() == before and sb.branches() == ["main"]
