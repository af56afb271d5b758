"""Each sandboxed agent's own state directory for its CLI: made, seeded from the person's login
and settings, kept. A writable ~/.claude, ~/.claude.json, ~/.gemini or ~/.codex would let an
agent add hooks or settings that then run in its person's own, unsandboxed sessions; so each
agent's CLI keeps its state in `STATE_DIR/home` instead (the only directory of this module the
sandbox lets it write), pointed there by the CLI's own variable, read from each CLI's code:

- Claude Code (2.1.197): CLAUDE_CONFIG_DIR, for settings.json, .credentials.json, projects/ and
  its global config, then `$CLAUDE_CONFIG_DIR/.claude.json` rather than ~/.claude.json.
- Gemini CLI (0.61.0): GEMINI_CLI_HOME, which stands for the home directory (its `.gemini/` is
  made inside); GEMINI_CLI_TRUSTED_FOLDERS_PATH too, which would otherwise win where set.
- Codex (0.171.0): CODEX_HOME (a directory that must exist), and CODEX_SQLITE_HOME, which would
  otherwise win where set.
- Every agent: XDG_CACHE_HOME and XDG_STATE_HOME under it (Claude Code's logs and installer
  locks, its shell tools' caches): never the person's ~/.cache, where a tool may keep what
  it later runs (pre-commit's hook repositories).

Seeding, at every prepare, cheaply: the login is the person's, mirrored (gone where the person
logged out), without the refresh token where the provider rotates it (Claude Code's and Codex's:
a refresh by the agent would end the person's login), so a copied login lasts as long as its
access token and the next prepare brings the person's current one; Google does not rotate, so
Gemini CLI's is copied whole. A settings file is copied where the agent has none, and again when
the person's changes while the agent's copy is still the one copied (the hash of what was
written is kept in `.fleet-seeded`); one the agent changed is its own. The trust that lets the
fleet's hooks run (agent_trust.py) is written into the agent's own files, never the person's.

Nothing flows back: the person's files are only read; the agent's directory, which the agent
may have filled with symbolic links or FIFOs, is written through descriptors opened without
following links, and each file replaced by a rename, never written through.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import agent_trust
from .errors import FleetError

RECORD = ".fleet-seeded"  # what prepare last wrote of each seeded file: {name: sha256}
MAX_READ = 32 << 20  # bytes of a file of the agent's read, at most (its own to grow)


@dataclass(frozen=True)
class AgentHome:
    env: dict[str, str]  # to set in the agent's environment
    write: list[Path]  # what its CLI must be able to write (its TMPDIR aside)


def prepare(state_dir: Path, cli: str | None, worktree: Path, main: Path, home: Path,
            env: Mapping[str, str]) -> AgentHome:
    """The agent's own directory for its CLI (`cli`: claude, gemini, codex or None) made in
    `state_dir` and seeded from the files of its person (`home`, `env`)."""
    root = state_dir / "home"
    state_dir.mkdir(parents=True, exist_ok=True)
    with _Dir.open(state_dir, "home") as top:
        variables = {"XDG_CACHE_HOME": str(top.sub(".cache").path),
                     "XDG_STATE_HOME": str(top.sub(".local").sub("state").path)}
        record = _Record(top)
        if cli == "claude":
            variables |= _claude(top.sub(".claude"), record, main, home, env)
        elif cli == "gemini":
            variables |= _gemini(top.sub(".gemini"), record, worktree, home, env)
        elif cli == "codex":
            variables |= _codex(top.sub(".codex"), record, main, home, env)
        record.save()
    return AgentHome(variables, [root])


# -- Claude Code ------------------------------------------------------------------------------------

# what of the person's ~/.claude.json a session needs to start without a dialog, where the
# agent's has none: onboarding done (and its theme), the answer on an API key in the environment
CLAUDE_START = ("hasCompletedOnboarding", "lastOnboardingVersion", "theme", "userID", "customApiKeyResponses",
                "bypassPermissionsModeAccepted", "hasAcknowledgedCostThreshold")
CLAUDE_LOGIN = ("oauthAccount", "primaryApiKey")  # the account, and a Console login's key: the person's


def _claude(own: _Dir, record: _Record, main: Path, home: Path, env: Mapping[str, str]) -> dict[str, str]:
    theirs = Path(env.get("CLAUDE_CONFIG_DIR") or home / ".claude")
    legacy = theirs / ".config.json"  # (read instead of .claude.json where it exists, as Claude Code does)
    config = legacy if legacy.is_file() else Path(env.get("CLAUDE_CONFIG_DIR") or home) / ".claude.json"
    login = _json(_person(theirs / ".credentials.json"))
    oauth = login.get("claudeAiOauth") if isinstance(login.get("claudeAiOauth"), dict) else None
    # (as Claude Code's own SDK copies a login into another config dir: without its refresh token)
    _mirror(own, ".credentials.json", None if oauth is None else
            _dumps({"claudeAiOauth": {k: v for k, v in oauth.items() if k != "refreshToken"}}))
    _seed(own, record, "settings.json", _person(theirs / "settings.json"))
    person = _json(_person(config))
    before = own.read(".claude.json")
    data = _json(before)
    for key in CLAUDE_START:
        if key in person and key not in data:
            data[key] = person[key]
    for key in CLAUDE_LOGIN:
        data.pop(key, None)
        if key in person:
            data[key] = person[key]
    if not agent_trust.claude_trusted(data, main):
        data["projects"] = {}
        agent_trust.claude_trusted(data, main)
    if (new := _dumps(data)) != before:
        own.write(".claude.json", new)
    return {"CLAUDE_CONFIG_DIR": str(own.path), "DISABLE_AUTOUPDATER": "1"}  # (its install is the person's)


# -- Gemini CLI -------------------------------------------------------------------------------------

def _gemini(own: _Dir, record: _Record, worktree: Path, home: Path, env: Mapping[str, str]) -> dict[str, str]:
    theirs = Path(env.get("GEMINI_CLI_HOME") or home) / ".gemini"
    # (Google's refresh tokens are not rotated by a refresh: the agent's refresh ends nobody's login)
    for name in ("oauth_creds.json", "google_accounts.json"):
        _mirror(own, name, _person(theirs / name))
    _seed(own, record, "settings.json", _person(theirs / "settings.json"))
    before = own.read("trustedFolders.json")
    rules = _json(before)
    agent_trust.gemini_trusted(rules, [worktree])
    if (new := _dumps(rules)) != before:
        own.write("trustedFolders.json", new)
    return {"GEMINI_CLI_HOME": str(own.path.parent), "GEMINI_CLI_TRUSTED_FOLDERS_PATH": str(own.path / "trustedFolders.json")}


# -- Codex ------------------------------------------------------------------------------------------

def _codex(own: _Dir, record: _Record, main: Path, home: Path, env: Mapping[str, str]) -> dict[str, str]:
    theirs = Path(env.get("CODEX_HOME") or home / ".codex")
    auth = _person(theirs / "auth.json")
    login = _json(auth)
    tokens = login.get("tokens")
    if isinstance(tokens, dict) and tokens.get("refresh_token"):
        # (a string, as Codex reads it, that no refresh can use: Codex's refresh tokens rotate)
        auth = _dumps({**login, "tokens": {**tokens, "refresh_token": ""}})
    _mirror(own, "auth.json", auth)

    def trusted(text: bytes) -> bytes:
        return agent_trust.codex_trusted(text.decode("utf-8", "replace"), main)[0].encode()

    _seed(own, record, "config.toml", _person(theirs / "config.toml") or b"", trusted)
    return {"CODEX_HOME": str(own.path), "CODEX_SQLITE_HOME": str(own.path)}


# -- the person's files, read -----------------------------------------------------------------------

def _person(path: Path) -> bytes | None:
    """A file of the person's, or None where it is missing or not a regular file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        return path.read_bytes()
    except OSError:
        return None


def _json(raw: bytes | None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _dumps(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


# -- the agent's directory, written -----------------------------------------------------------------

class _Dir:
    """A directory of the agent's, open: every name in it made, read and replaced relative to
    its descriptor, never through a symbolic link (the agent may have put one anywhere in it)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path
        self.children: list[_Dir] = []

    @classmethod
    def open(cls, parent: Path, name: str) -> _Dir:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return cls(fd, parent).sub(name)
        finally:
            os.close(fd)

    def sub(self, name: str) -> _Dir:
        """The directory `name` in this one, made if missing; a FleetError if it is anything but
        a directory (a link the agent made to one of its person's, say)."""
        with suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=self.fd)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError as e:
            raise FleetError(f"{self.path / name} is not a directory ({e.strerror}): an agent's CLI state is not "
                             "written there", f"remove it; the next start makes it afresh: rm {self.path / name}") from None
        child = _Dir(fd, self.path / name)
        self.children.append(child)
        return child

    def read(self, name: str) -> bytes | None:
        """The file's bytes; None where it is missing, not a regular file (a link, a FIFO) or huge."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_READ:
                return None
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """`name` replaced by a file holding `data`, durably (as durable.replace does, but relative
        to the directory's descriptor: a link put in the path's place is never followed)."""
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            os.fsync(fd)
            os.close(fd)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with suppress(OSError):  # (the name gone, whether or not it was renamed)
                os.unlink(tmp, dir_fd=self.fd)
            raise
        os.fsync(self.fd)

    def remove(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return
        os.fsync(self.fd)

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        for child in self.children:
            child.__exit__()
        os.close(self.fd)


class _Record:
    """What prepare last wrote of each seeded file, by hash: the agent's copy still that one is
    the person's to refresh; another is the agent's own."""

    def __init__(self, top: _Dir) -> None:
        self.top = top
        self.hashes = {k: v for k, v in _json(top.read(RECORD)).items() if isinstance(v, str)}
        self.before = dict(self.hashes)

    def save(self) -> None:
        if self.hashes != self.before:
            self.top.write(RECORD, _dumps(self.hashes))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mirror(own: _Dir, name: str, login: bytes | None) -> None:
    """The login as the person's is now: written where it differs, gone where the person has none."""
    if login is None:
        own.remove(name)
    elif own.read(name) != login:
        own.write(name, login)


def _seed(own: _Dir, record: _Record, name: str, theirs: bytes | None,
          then: Callable[[bytes], bytes] = lambda b: b) -> None:
    """A settings file seeded from the person's (None: they have none), passed through `then`
    (the trust added): copied where the agent has none or still has what was copied last; the
    agent's own changed one kept, only given what `then` adds."""
    key = str(own.path.relative_to(record.top.path) / name)
    have = own.read(name)
    if have is None or _sha(have) == record.hashes.get(key):
        if theirs is None:
            return
        new = then(theirs)
        if new != have:
            own.write(name, new)
        record.hashes[key] = _sha(new)
    elif (new := then(have)) != have:
        own.write(name, new)
