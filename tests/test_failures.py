"""A bug as a person meets it: one error: line naming the command, exit 3, no traceback on the
screen, the whole traceback in a log whose path is printed; a crashing hook refuses the commit."""

from __future__ import annotations

import os
import re
from pathlib import Path

from helpers import Sandbox

CRASH = {"GIT_FLEET_TEST_CRASH": "command"}


def logged(err: str) -> Path:
    found = re.search(r"^hint: the traceback is in (\S+); please report it", err, re.M)
    assert found, err
    return Path(found.group(1))


def test_a_bug_in_a_command_is_one_line_and_a_log_in_the_git_directory(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    res = sb.run(["git", "fleet-status"], env=CRASH, ok=False)
    assert res.code == 3 and "Traceback" not in res.out + res.err, res
    assert res.err.startswith("error: git fleet-status failed unexpectedly: RuntimeError: a crash asked for"), res
    log = logged(res.err)
    assert log.parent == sb.repo / ".git/fleet/crashes", log
    text = log.read_text()
    assert "git fleet-status" in text and "Traceback (most recent call last)" in text and "RuntimeError" in text


def test_outside_a_repository_the_log_goes_to_the_state_directory(sandbox: Sandbox, tmp_path: Path) -> None:
    state = tmp_path / "state"
    res = sandbox.run(["git", "fleet-list"], cwd=tmp_path, env={**CRASH, "XDG_STATE_HOME": str(state)}, ok=False)
    assert res.code == 3 and logged(res.err).parent == state / "git-fleet", res
    default = sandbox.run(["git", "fleet-list"], cwd=tmp_path, env=CRASH, ok=False)
    assert logged(default.err).parent == Path(os.environ["HOME"]) / ".local/state/git-fleet", default


def test_a_git_directory_that_cannot_be_written_sends_the_log_to_the_state_directory(fleet_repo: Sandbox,
                                                                                     tmp_path: Path) -> None:
    sb = fleet_repo
    crashes = sb.repo / ".git/fleet/crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    crashes.chmod(0o500)
    try:
        if os.access(crashes, os.W_OK):  # root writes anywhere: make the place a file instead
            crashes.chmod(0o700)
            crashes.rmdir()
            crashes.write_text("not a directory\n")
        res = sb.run(["git", "fleet-list"], env={**CRASH, "XDG_STATE_HOME": str(tmp_path / "state")}, ok=False)
    finally:
        if crashes.is_dir():
            crashes.chmod(0o700)
    assert res.code == 3 and logged(res.err).parent == tmp_path / "state/git-fleet", res


def test_a_crashing_commit_hook_refuses_the_commit_and_says_where_the_traceback_is(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    sb.add_agent("backend", "src/backend/**")
    wt = sb.root / "repo-backend"
    (wt / "src/backend/api.py").write_text("def api(): return 3\n")
    sb.git("add", "-A", cwd=wt)
    before = sb.head("fleet/backend")
    res = sb.git("commit", "-qm", "in zone", cwd=wt, env={"GIT_FLEET_TEST_CRASH": "check"}, ok=False)
    assert "error: git fleet-check --hook pre-commit failed unexpectedly: RuntimeError" in res.err, res
    assert "Traceback" not in res.err and logged(res.err).is_file(), res
    assert sb.head("fleet/backend") == before, "the hook failed closed: nothing was committed"
    sb.git("commit", "-qm", "in zone", cwd=wt)  # and without the bug, the same commit passes


def test_old_logs_are_trimmed_to_the_newest(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    crashes = sb.repo / ".git/fleet/crashes"
    crashes.mkdir(parents=True)
    for n in range(25):
        (crashes / f"crash-20200101-0000{n:02d}-1.log").write_text("old\n")
    log = logged(sb.run(["git", "fleet-list"], env=CRASH, ok=False).err)
    kept = sorted(p.name for p in crashes.iterdir())
    assert len(kept) == 20 and log.name in kept and "crash-20200101-000000-1.log" not in kept


def test_a_command_in_a_directory_removed_under_the_shell_says_so(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    gone = sb.repo / "gone"
    gone.mkdir()
    res = sb.run(["sh", "-c", f"cd {gone} && rmdir {gone} && git fleet-status"], ok=False)
    assert res.code == 2 and "Traceback" not in res.out + res.err, res
    assert res.err.startswith("error: the current directory does not exist any more"), res


def test_a_bug_in_a_directory_whose_name_is_not_utf8_is_still_logged(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    odd = os.fsencode(sb.repo) + b"/d\xff"
    os.mkdir(odd)
    res = sb.run(["git", "fleet-list"], cwd=Path(os.fsdecode(odd)), env=CRASH, ok=False)
    assert res.code == 3 and "Traceback" not in res.out + res.err, res
    assert "d\\udcff" in logged(res.err).read_text() or "d\\xff" in logged(res.err).read_text()


def test_where_no_log_can_be_written_the_line_says_so(sandbox: Sandbox, tmp_path: Path) -> None:
    state = tmp_path / "state-is-a-file"
    state.write_text("not a directory\n")
    res = sandbox.run(["git", "fleet-list"], cwd=tmp_path, env={**CRASH, "XDG_STATE_HOME": str(state)}, ok=False)
    assert res.code == 3 and "Traceback" not in res.out + res.err, res
    assert "hint: its traceback could not be written anywhere; please report it" in res.err, res


def test_a_bug_in_a_directory_removed_under_the_shell_is_logged_with_that_said(fleet_repo: Sandbox) -> None:
    sb = fleet_repo
    gone = sb.repo / "gone"
    gone.mkdir()
    res = sb.run(["sh", "-c", f"cd {gone} && rmdir {gone} && git fleet-status"], env=CRASH, ok=False)
    assert res.code == 3 and "Traceback" not in res.out + res.err, res
    assert "cwd: (cannot be read: No such file or directory)" in logged(res.err).read_text()
