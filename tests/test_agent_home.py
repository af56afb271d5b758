"""Each sandboxed agent's own state directory for its CLI (git_fleet/agent_home.py): made and
seeded from its person's files, kept across starts, never a way into those files; and the real
CLIs run in the sandbox with it, offline against the scripted models (tests/model_server.py,
tests/test_other_agent_clis.py): each completes a turn writing only in its worktree, its TMPDIR
and its own directory, and leaves its person's files byte for byte as they were."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from git_fleet import agent_home
from git_fleet.errors import FleetError
from git_fleet.sandbox import command as sandboxed
from git_fleet.sandbox import support
from helpers import Result, Sandbox
from model_server import ModelServer, Say, ToolUse
from test_other_agent_clis import CodexModel, GeminiModel, _patch

FAR = 4_102_444_800_000  # 2100, in ms: an access token that does not expire during a test


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))


def _person(home: Path) -> None:
    """A person logged in to all three CLIs, with settings of their own."""
    _write(home / ".claude/.credentials.json", {"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-person", "refreshToken": "sk-ant-ort01-person", "expiresAt": FAR,
        "scopes": ["user:inference"], "subscriptionType": "pro"}, "mcpOAuth": {"srv": {"refreshToken": "r"}}})
    _write(home / ".claude/settings.json", {"permissions": {"allow": ["Bash(make:*)"]}})
    _write(home / ".claude.json", {"hasCompletedOnboarding": True, "theme": "dark", "userID": "u1",
                                   "oauthAccount": {"emailAddress": "person@example.com"},
                                   "projects": {"/srv/other": {"allowedTools": ["Bash"], "hasTrustDialogAccepted": True}}})
    _write(home / ".gemini/settings.json", {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False}})
    _write(home / ".gemini/oauth_creds.json", {"access_token": "ya29.person", "refresh_token": "1//person",
                                               "expiry_date": FAR, "token_type": "Bearer"})
    _write(home / ".gemini/google_accounts.json", {"active": "person@example.com", "old": []})
    _write(home / ".gemini/trustedFolders.json", {"/srv/other": "TRUST_FOLDER"})
    _write(home / ".codex/config.toml", 'model = "gpt-5.5"\ncheck_for_update_on_startup = false\n')
    _write(home / ".codex/auth.json", {"OPENAI_API_KEY": None, "tokens": {
        "id_token": "h.e.s", "access_token": "a.person.s", "refresh_token": "rt_person", "account_id": "acc"},
        "last_refresh": "2026-01-01T00:00:00Z"})


def _files(*roots: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for root in roots for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.fixture
def agent(sandbox: Sandbox, hermetic: Path) -> tuple[Path, Path, Path]:
    """A repository, an agent's linked worktree of it and the agent's fleet directory; the
    person's files in HOME: (main, worktree, state_dir)."""
    main = sandbox.make_repo({"README.md": "# project\n"})
    worktree = sandbox.root / "wt"
    sandbox.git("worktree", "add", "-q", "-b", "fleet/a", str(worktree))
    _person(hermetic)
    return main, worktree, main / ".git/fleet/agents/a"


def _prepare(agent: tuple[Path, Path, Path], cli: str | None) -> agent_home.AgentHome:
    main, worktree, state = agent
    return agent_home.prepare(state, cli, worktree, main, Path(os.environ["HOME"]), os.environ)


def test_prepare_makes_each_clis_directory_seeded_from_its_persons_login_and_settings(
        agent: tuple[Path, Path, Path], hermetic: Path) -> None:
    main, worktree, state = agent
    own = state / "home"
    before = _files(hermetic)

    claude = _prepare(agent, "claude")
    assert claude.write == [own]
    assert claude.env == {"CLAUDE_CONFIG_DIR": str(own / ".claude"), "DISABLE_AUTOUPDATER": "1",
                          "XDG_CACHE_HOME": str(own / ".cache"), "XDG_STATE_HOME": str(own / ".local/state")}
    login = json.loads((own / ".claude/.credentials.json").read_text())
    assert login == {"claudeAiOauth": {"accessToken": "sk-ant-oat01-person", "expiresAt": FAR,
                                       "scopes": ["user:inference"], "subscriptionType": "pro"}}  # no refresh token
    assert (own / ".claude/.credentials.json").stat().st_mode & 0o777 == 0o600
    assert (own / ".claude/settings.json").read_bytes() == (hermetic / ".claude/settings.json").read_bytes()
    config = json.loads((own / ".claude/.claude.json").read_text())
    assert config == {"hasCompletedOnboarding": True, "theme": "dark", "userID": "u1",
                      "oauthAccount": {"emailAddress": "person@example.com"},
                      "projects": {str(main.resolve()): {"hasTrustDialogAccepted": True}}}  # no other project

    gemini = _prepare(agent, "gemini")
    assert gemini.env["GEMINI_CLI_HOME"] == str(own) and gemini.write == [own]
    assert gemini.env["GEMINI_CLI_TRUSTED_FOLDERS_PATH"] == str(own / ".gemini/trustedFolders.json")
    for name in ("oauth_creds.json", "google_accounts.json", "settings.json"):  # (Google does not rotate)
        assert (own / ".gemini" / name).read_bytes() == (hermetic / ".gemini" / name).read_bytes(), name
    assert json.loads((own / ".gemini/trustedFolders.json").read_text()) == {str(worktree.resolve()): "TRUST_FOLDER"}

    codex = _prepare(agent, "codex")
    assert codex.env["CODEX_HOME"] == codex.env["CODEX_SQLITE_HOME"] == str(own / ".codex")
    auth = json.loads((own / ".codex/auth.json").read_text())
    assert auth["tokens"] == {"id_token": "h.e.s", "access_token": "a.person.s", "refresh_token": "", "account_id": "acc"}
    config = tomllib.loads((own / ".codex/config.toml").read_text())
    assert config["model"] == "gpt-5.5" and config["projects"] == {str(main.resolve()): {"trust_level": "trusted"}}

    none = _prepare(agent, None)
    assert set(none.env) == {"XDG_CACHE_HOME", "XDG_STATE_HOME"} and none.write == [own]
    assert _files(hermetic) == before  # the person's files only read


def test_prepare_again_keeps_what_the_agent_changed_and_brings_the_persons_login(
        agent: tuple[Path, Path, Path], hermetic: Path) -> None:
    own = agent[2] / "home"
    for cli in ("claude", "codex"):
        _prepare(agent, cli)
    # the agent changes its settings and its config; the person logs in again and changes theirs
    (own / ".claude/settings.json").write_text('{"mine": true}\n')
    config = json.loads((own / ".claude/.claude.json").read_text())
    (own / ".claude/.claude.json").write_text(json.dumps({**config, "theme": "light", "numStartups": 3}))
    (own / ".codex/config.toml").write_text((own / ".codex/config.toml").read_text() + 'model_reasoning_effort = "low"\n')
    _write(hermetic / ".claude/.credentials.json", {"claudeAiOauth": {"accessToken": "sk-ant-oat01-again",
                                                                      "refreshToken": "r2", "expiresAt": FAR}})
    _write(hermetic / ".claude/settings.json", {"theirs": 2})
    _write(hermetic / ".codex/config.toml", 'model = "gpt-6"\n')
    persons = json.loads((hermetic / ".claude.json").read_text())
    _write(hermetic / ".claude.json", {**persons, "theme": "daltonized", "oauthAccount": {"emailAddress": "new@x"}})
    for cli in ("claude", "codex"):
        _prepare(agent, cli)

    assert (own / ".claude/settings.json").read_text() == '{"mine": true}\n'
    config = json.loads((own / ".claude/.claude.json").read_text())
    assert (config["theme"], config["numStartups"]) == ("light", 3)  # the agent's own
    assert config["oauthAccount"] == {"emailAddress": "new@x"}  # the login: the person's
    assert json.loads((own / ".claude/.credentials.json").read_text()) == {
        "claudeAiOauth": {"accessToken": "sk-ant-oat01-again", "expiresAt": FAR}}
    codex = (own / ".codex/config.toml").read_text()
    assert 'model = "gpt-5.5"' in codex and 'model_reasoning_effort = "low"' in codex and "gpt-6" not in codex

    # a copy the agent left as it was follows the person's; a login the person ended goes
    (own / ".claude/settings.json").unlink()
    _prepare(agent, "claude")
    assert json.loads((own / ".claude/settings.json").read_text()) == {"theirs": 2}
    _write(hermetic / ".claude/settings.json", {"theirs": 3})
    (hermetic / ".claude/.credentials.json").unlink()
    _prepare(agent, "claude")
    assert json.loads((own / ".claude/settings.json").read_text()) == {"theirs": 3}
    assert not (own / ".claude/.credentials.json").exists()


def test_nothing_the_agent_puts_in_its_directory_leads_prepare_into_its_persons_files(
        agent: tuple[Path, Path, Path], hermetic: Path) -> None:
    own = agent[2] / "home"
    _prepare(agent, "claude")
    before = _files(hermetic)
    # links to the person's files in place of the agent's, a FIFO where a settings file was
    (own / ".claude/.credentials.json").unlink()
    (own / ".claude/.credentials.json").symlink_to(hermetic / ".claude/settings.json")
    (own / ".claude/.claude.json").unlink()
    (own / ".claude/.claude.json").symlink_to(hermetic / ".claude.json")
    (own / ".claude/settings.json").unlink()
    os.mkfifo(own / ".claude/settings.json")
    _prepare(agent, "claude")  # (returns: the FIFO is never opened for a read that waits)
    assert _files(hermetic) == before
    assert not (own / ".claude/.credentials.json").is_symlink() and not (own / ".claude/.claude.json").is_symlink()
    assert "accessToken" in (own / ".claude/.credentials.json").read_text()

    # the agent's whole directory for the CLI, a link to the person's
    shutil.rmtree(own / ".claude")
    (own / ".claude").symlink_to(hermetic / ".claude")
    with pytest.raises(FleetError, match="is not a directory"):
        _prepare(agent, "claude")
    assert _files(hermetic) == before


# -- the real CLIs, sandboxed -----------------------------------------------------------------------

MISSING = support().missing()
needs_sandbox = pytest.mark.skipif(MISSING is not None, reason=f"no sandbox on this system: {MISSING}")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> Iterator[Path]:
    """Nothing of the caller's agent CLIs' setup in the environment; a TMPDIR of the test's own."""
    for var in list(os.environ):
        if var.startswith(("ANTHROPIC_", "CLAUDE", "GEMINI_", "GOOGLE_", "CODEX_", "OPENAI_")) or var == "AI_AGENT":
            monkeypatch.delenv(var)
    tmp = sandbox.root / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("TMPPREFIX", str(tmp / "zsh"))
    yield tmp


def _run_sandboxed(sb: Sandbox, binary: str, args: list[str], agent: tuple[Path, Path, Path], home: agent_home.AgentHome,
                   tmp: Path, port: int, env: dict[str, str]) -> Result:
    worktree = agent[1]
    line = sandboxed([binary, *args], [str(worktree), str(tmp), *map(str, home.write)], [port],
                     {**os.environ, **env})
    return sb.run_group(line, worktree, {**home.env, **env}, 120)


def _changed(before: dict[Path, bytes], after: dict[Path, bytes]) -> set[Path]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def _only_in(changed: set[Path], *allowed: Path) -> list[Path]:
    return sorted(p for p in changed if not any(p.is_relative_to(a) for a in allowed))


def _digest(files: dict[Path, bytes]) -> dict[Path, str]:
    return {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}


def _before(sandbox: Sandbox, hermetic: Path) -> tuple[dict[Path, str], dict[Path, bytes]]:
    """What the person's files hold (digests), and every file of the person's and the test's, before a run."""
    return _digest(_files(hermetic)), _files(hermetic, sandbox.root)


def _only_its_own(sandbox: Sandbox, hermetic: Path, before: tuple[dict[Path, str], dict[Path, bytes]],
                  agent: tuple[Path, Path, Path], tmp: Path, its_own: str) -> None:
    """After a run: what changed is in the worktree, its TMPDIR and its own state directory (where
    `its_own`, the CLI's transcript, was written), and the person's files are as they were."""
    _, worktree, state = agent
    changed = _changed(before[1], _files(hermetic, sandbox.root))
    assert _only_in(changed, worktree, tmp, state / "home") == []
    assert any(p.is_relative_to(state / "home" / its_own) for p in changed)
    assert _digest(_files(hermetic)) == before[0]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _installed_or_skip(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        pytest.skip(f"{name} is not installed: .ci/run installs it")
    return binary


@needs_sandbox
def test_claude_print_mode_runs_sandboxed_with_its_own_directory_and_the_persons_files_stay(
        sandbox: Sandbox, agent: tuple[Path, Path, Path], hermetic: Path, clean_env: Path) -> None:
    binary = _installed_or_skip("claude")
    _, worktree, _ = agent
    home = _prepare(agent, "claude")
    before = _before(sandbox, hermetic)
    settings = hermetic / ".claude/settings.json"
    script = [ToolUse("Write", {"file_path": str(worktree / "new.py"), "content": "x = 1\n"}),
              # (past Claude Code's own check of a shell redirection to its settings: the sandbox refuses it)
              ToolUse("Bash", {"command": f"python3 -c \"open('{settings}', 'w').write('{{}}')\"", "description": "x"}),
              Say("Done.")]
    with ModelServer(script) as server:
        res = _run_sandboxed(sandbox, binary, ["-p", "go", "--permission-mode", "acceptEdits", "--allowedTools",
                                               "Bash,Read,Edit,Write"], agent, home, clean_env,
                             _port(server.url), server.env())
    assert res.code == 0 and "Done." in res.out, str(res)
    written, refused = server.tool_results()
    assert not written.is_error and (worktree / "new.py").read_text() == "x = 1\n"
    assert refused.is_error and ("Read-only file system" in refused.text or "Permission denied" in refused.text), refused
    _only_its_own(sandbox, hermetic, before, agent, clean_env, ".claude/projects")  # (its transcript)


@needs_sandbox
def test_gemini_print_mode_runs_sandboxed_trusted_in_its_own_directory_and_the_persons_files_stay(
        sandbox: Sandbox, agent: tuple[Path, Path, Path], hermetic: Path, clean_env: Path) -> None:
    """Gemini CLI's -p refuses an untrusted folder (exit 55): the trust is the agent's own."""
    binary = _installed_or_skip("gemini")
    _, worktree, _ = agent
    home = _prepare(agent, "gemini")
    before = _before(sandbox, hermetic)
    script: list[Any] = [{"name": "write_file", "args": {"file_path": "new.py", "content": "x = 1\n"}}, "Done."]
    with GeminiModel(script) as model:
        env = {"GOOGLE_GEMINI_BASE_URL": model.url, "GEMINI_API_KEY": "test-key-for-the-scripted-model"}
        res = _run_sandboxed(sandbox, binary, ["-p", "go", "--yolo", "-m", "gemini-2.5-flash"], agent, home,
                             clean_env, _port(model.url), env)
    assert res.code == 0 and "Done." in res.out, str(res)
    assert (worktree / "new.py").read_text() == "x = 1\n"
    _only_its_own(sandbox, hermetic, before, agent, clean_env, ".gemini/tmp")  # (its chat)


@needs_sandbox
def test_codex_exec_runs_sandboxed_with_its_own_home_and_the_persons_files_stay(
        sandbox: Sandbox, agent: tuple[Path, Path, Path], hermetic: Path, clean_env: Path) -> None:
    binary = _installed_or_skip("codex")
    _, worktree, _ = agent
    (hermetic / ".codex/auth.json").unlink()  # (an API key in the environment, for the scripted provider)
    with CodexModel([_patch("*** Add File: new.py", "+x = 1"), "Done."]) as model:
        config = hermetic / ".codex/config.toml"
        config.write_text(config.read_text() + f'model_provider = "scripted"\n\n[model_providers.scripted]\n'
                          f'name = "Scripted"\nbase_url = "{model.url}/v1"\nwire_api = "responses"\n')
        home = _prepare(agent, "codex")
        before = _before(sandbox, hermetic)
        # (Codex's own sandbox cannot write the worktree from inside this one, measured: its
        # apply_patch answers "Failed to write file" under -s workspace-write; this one is the boundary)
        res = _run_sandboxed(sandbox, binary, ["exec", "-s", "danger-full-access", "go"], agent, home, clean_env,
                             _port(model.url), {"OPENAI_API_KEY": "test-key-for-the-scripted-model"})
    assert res.code == 0 and "Done." in res.out, str(res)
    assert (worktree / "new.py").read_text() == "x = 1\n"
    _only_its_own(sandbox, hermetic, before, agent, clean_env, ".codex/sessions")  # (its rollout)
