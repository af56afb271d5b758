"""Per-agent session settings, git fleet-set, git fleet-run and the brief."""

from __future__ import annotations

import tomllib

import pytest

from git_fleet.templates import expand, unknown_placeholder
from helpers import Sandbox


def test_templates_fill_placeholders_shell_quoted() -> None:
    values = {"agent": "api", "session": "api", "model": "opus", "worktree": "/w/agent api",
              "branch": "fleet/api", "zone": "src/api/** !*.md", "task": "task-007", "port": "4001"}
    assert expand("claude --name {session} --model {model}", values) == "claude --name api --model opus"
    assert expand("cd {worktree} && run {zone} {{literal}}", values) == \
        "cd '/w/agent api' && run 'src/api/** !*.md' {literal}"
    assert unknown_placeholder("aider --model {modle}") == "modle"
    assert unknown_placeholder("echo {{not one}} {task} {port}") is None


def test_add_and_set_record_session_settings(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("api", "src/backend/**", extra=("--model", "opus", "--session", "api-main"))
    sb.fleet("set", "api", "--command", "aider --model {model}", "--resume", "aider --restore-chat-history")
    agent = tomllib.loads((sb.repo / ".gitfleet.toml").read_text())["agents"]["api"]
    assert agent == {"zone": ["src/backend/**"], "branch": "fleet/api",
                     "session": "api-main", "model": "opus", "command": "aider --model {model}",
                     "resume": "aider --restore-chat-history"}
    sb.fleet("set", "api", "--zone", "src/backend/**", "--zone", "!**/*.md")
    assert tomllib.loads((sb.repo / ".gitfleet.toml").read_text())["agents"]["api"]["zone"] == [
        "src/backend/**", "!**/*.md"]
    # the new zone is enforced at once
    res = sb.commit(sb.root / "repo-api", {"src/backend/README.md": "x\n"}, "now outside", ok=False)
    assert "modified src/backend/README.md" in res.err


@pytest.mark.parametrize("args, code, words", [
    (["api", "--command", "run {nope}"], 2, "unknown placeholder {nope}"),
    (["api", "--zone", "src/**"], 1, "overlaps the zone of agent 'web'"),
    (["api"], 2, "nothing to change"),
    (["ghost", "--model", "x"], 2, "no agent named 'ghost'"),
])
def test_set_refuses_what_add_refuses(fleet_repo: Sandbox, args: list[str], code: int, words: str) -> None:
    sb = fleet_repo
    sb.add_agent("api", "src/backend/**")
    sb.add_agent("web", "src/frontend/**")
    before = (sb.repo / ".gitfleet.toml").read_text()
    res = sb.fleet("set", *args, ok=False)
    assert res.code == code and words in res.err
    assert (sb.repo / ".gitfleet.toml").read_text() == before


def test_run_uses_the_worktree_and_the_fleet_environment(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("api", "src/backend/**", "!**/*.md", extra=("--model", "opus"))
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace('model = "opus"', 'model = "opus"\nenv = {API_KEY_FILE = "/run/key"}'))
    sb.fleet("task", "add", "build it", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")
    script = ('printf "%s|" "$PWD" "$FLEET_AGENT" "$FLEET_SESSION" "$FLEET_MODEL" "$FLEET_BRANCH" "$FLEET_BUS" '
              '"$FLEET_TASK" "$API_KEY_FILE"; printf "%s" "$FLEET_ZONE"')
    res = sb.run(["git", "fleet-run", "api", "--", "sh", "-c", script])
    fields = res.out.split("|")
    assert fields[:8] == [str(wt), "api", "api", "opus", "fleet/api", str(sb.repo), "task-001", "/run/key"]
    assert fields[8] == "src/backend/**\n!**/*.md"
    assert sb.run(["git", "fleet-run", "api", "--", "sh", "-c", "exit 7"], ok=False).code == 7
    res = sb.run(["git", "fleet-run", "api", "--", "no-such-program-here"], ok=False)
    assert res.code == 1 and "command not found: no-such-program-here" in res.err


def test_the_brief_tells_the_agent_its_zone_branch_bus_and_tasks(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    wt = sb.add_agent("api", "src/backend/**")
    brief = wt / ".fleet/brief.md"
    assert "- `src/backend/**`" in brief.read_text() and "You hold no task now." in brief.read_text()
    sb.fleet("task", "add", "refunds", "--agent", "api")
    sb.fleet("task", "claim", "--agent", "api")
    sb.run(["git", "fleet-run", "api", "--", "true"])
    text = brief.read_text()
    assert f"You work in {wt} on branch fleet/api." in text
    assert f"The task bus is {sb.repo}" in text and "Claimed by you: task-001 refunds" in text
    assert sb.git("status", "--porcelain", cwd=wt).out == ""  # never shows up in git


def test_run_without_a_worktree_is_a_clear_error(fleet_repo: Sandbox) -> None:
    import shutil

    sb = fleet_repo
    wt = sb.add_agent("api", "src/backend/**")
    shutil.rmtree(wt)
    res = sb.fleet("run", "api", "--", "true", ok=False)
    assert res.code == 1 and "agent 'api' has no worktree" in res.err


def _setup_config(sb: Sandbox, text: str) -> None:
    cfg = sb.repo / ".gitfleet.toml"
    cfg.write_text(cfg.read_text().replace("[setup]\ncopy = []\n", text))


def test_add_copies_ignored_files_runs_setup_and_hands_out_ports(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.commit(sb.repo, {".gitignore": ".env\nlocal/\nsetup-ran\n"}, "ignore local files")
    sb.write_files({".env": "SECRET=1\n", "local/settings.json": "{}\n"})
    _setup_config(sb, '[setup]\ncopy = [".env", "local", "missing.txt"]\nrun = "echo $FLEET_PORT > setup-ran"\n'
                      'ports = "4100-4101"\n')
    res = sb.fleet("add", "api", "--zone", "src/backend/**")
    assert "setup.copy: missing.txt does not exist in the main worktree" in res.err
    wt = sb.root / "repo-api"
    assert (wt / ".env").read_text() == "SECRET=1\n" and (wt / "local/settings.json").exists()
    assert (wt / "setup-ran").read_text() == "4100\n"
    sb.fleet("add", "web", "--zone", "src/frontend/**")
    assert (sb.root / "repo-web/setup-ran").read_text() == "4101\n"
    out = sb.run(["git", "fleet-run", "web", "--", "sh", "-c", "echo $FLEET_PORT"]).out
    assert out == "4101\n"
    res = sb.fleet("add", "docs", "--zone", "docs/**", ok=False)
    assert "no free port left in setup.ports (4100-4101)" in res.err


def test_a_failing_setup_is_reported_with_its_output(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    _setup_config(sb, '[setup]\ncopy = []\nrun = "echo installing; echo npm ERR! missing lockfile >&2; exit 4"\n')
    res = sb.fleet("add", "api", "--zone", "src/backend/**", ok=False)
    assert "agent 'api' was added, but its setup" in res.err and "failed (exit 4)" in res.err
    assert "installing" in res.err and "npm ERR! missing lockfile" in res.err
    assert "git fleet-run api" in res.err
    assert (sb.root / "repo-api").is_dir()  # the agent is there; the setup can be run again
