"""Named points where a test stops a command, to kill it at that exact moment or let it go on, or
makes it fail as a bug would.

With GIT_FLEET_TEST_PAUSE=point, the command writes the file GIT_FLEET_TEST_MARKER when it gets
there and waits until the test removes it. Without it, a pause costs one environment lookup."""

from __future__ import annotations

import os
import time


def pause(point: str) -> None:
    if os.environ.get("GIT_FLEET_TEST_PAUSE") == point:
        marker = os.environ["GIT_FLEET_TEST_MARKER"]
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(point)
        while os.path.exists(marker):
            time.sleep(0.02)


def crash(point: str) -> None:
    """With GIT_FLEET_TEST_CRASH=point, fail here as a bug would: how the tests see what a person
    sees of one (one line, exit 3, the traceback in a log), in a real installed command."""
    if os.environ.get("GIT_FLEET_TEST_CRASH") == point:
        raise RuntimeError(f"a crash asked for at {point} (GIT_FLEET_TEST_CRASH)")
