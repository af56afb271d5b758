"""Caches never decide from a file's time and size that its content is unchanged: a file changed
in place within one timestamp tick keeps both. The commit hook's zone cache is keyed on the
contents it was compiled from. Times are set with os.utime, as a file system with one-second
times would."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from helpers import Sandbox


def edit_in_place(path: Path, old: str, new: str, mtime_ns: int | None = None) -> None:
    """Rewrite `path` in its own inode, same size, and give it back the time it had (or mtime_ns)."""
    assert len(old) == len(new)
    st = os.stat(path)
    text = path.read_text(encoding="utf-8")
    assert old in text
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text.replace(old, new))
    os.utime(path, ns=(st.st_atime_ns, mtime_ns if mtime_ns is not None else st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, mtime_ns or st.st_mtime_ns)


# -- the commit hook's zone cache ---------------------------------------------------------------------

def test_the_hook_sees_a_same_size_edit_made_in_the_tick_of_git_fleet_set(fleet_repo: Sandbox) -> None:
    """The user's editor saves .gitfleet.toml (in place, same size) while `git fleet-set` is
    between writing it and compiling the zone cache: the cache must not pass off fleet-set's zones
    as the file's. The hook then holds web to the zone the file says."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**")
    cfg = sb.repo / ".gitfleet.toml"
    marker = sb.root / "config-written"
    proc = sb.spawn(["git", "fleet-set", "web", "--zone", "src/frontend/**", "--zone", "docs/**"],
                    env={"GIT_FLEET_TEST_PAUSE": "config-written", "GIT_FLEET_TEST_MARKER": str(marker)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    edit_in_place(cfg, '"docs/**"', '"dogs/**"')  # the user narrows it back, within the same tick
    marker.unlink()
    assert proc.wait(timeout=60) == 0
    sb.write_files({"docs/guide.md": "# guide, by web\n"}, web)
    sb.git("add", "docs/guide.md", cwd=web)
    res = sb.git("commit", "-qm", "web writes the guide", cwd=web, ok=False)
    assert "error: commit rejected: agent 'web' changed 1 path(s) outside its zone" in res.err
    assert "zone of 'web': src/frontend/**  dogs/**" in res.err


def test_the_hook_sees_a_same_size_edit_with_the_old_time(fleet_repo: Sandbox) -> None:
    """A same-size edit in place that leaves .gitfleet.toml's time as it was (a one-second file
    system, or a restored mtime) still reaches the hook."""
    sb = fleet_repo
    web = sb.add_agent("web", "src/frontend/**", "docs/**")
    sb.commit(web, {"docs/guide.md": "# guide v2\n"}, "web may write the guide")
    edit_in_place(sb.repo / ".gitfleet.toml", '"docs/**"', '"dogs/**"')
    sb.write_files({"docs/guide.md": "# guide v3\n"}, web)
    sb.git("add", "docs/guide.md", cwd=web)
    res = sb.git("commit", "-qm", "no longer", cwd=web, ok=False)
    assert "zone of 'web': src/frontend/**  dogs/**" in res.err
