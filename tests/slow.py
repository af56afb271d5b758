"""Write tests/slow.txt, the tests that the quick loop (`pytest -m "not slow"`) leaves out: those
that took THRESHOLD seconds or more (setup, call and teardown) in a full run on this machine.

    .venv/bin/python tests/slow.py              run the suite once with --durations=0 and write it
    .venv/bin/python tests/slow.py OUTPUT.txt   use the output of such a run instead
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

THRESHOLD = 0.45
HERE = Path(__file__).parent
LINE = re.compile(r"^([\d.]+)s (?:call|setup|teardown)\s+(tests/.+?)\s*$", re.M)  # (ids may hold spaces)


def main(argv: list[str]) -> int:
    if argv:
        text = Path(argv[0]).read_text(encoding="utf-8")
    else:
        text = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:randomly", "--durations=0"],
                              cwd=HERE.parent, capture_output=True, text=True).stdout
    took: collections.Counter[str] = collections.Counter()
    for m in LINE.finditer(text):
        took[m.group(2)] += float(m.group(1))
    if not took:
        print("error: no durations found (run pytest with --durations=0)", file=sys.stderr)
        return 1
    slow = sorted(node for node, seconds in took.items() if seconds >= THRESHOLD)
    (HERE / "slow.txt").write_text(
        f"# tests that took {THRESHOLD} s or more in a full run (written by tests/slow.py; the quick loop,\n"
        f"# pytest -m 'not slow', leaves them out). {len(slow)} of {len(took)} timed.\n"
        + "".join(f"{node}\n" for node in slow), encoding="utf-8")
    print(f"{len(slow)} slow tests of {len(took)} timed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
