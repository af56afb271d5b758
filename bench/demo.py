"""The demo's wall time: `git fleet-demo` from start to end, in a new directory each run, with an
empty HOME and no git identity (as on a fresh machine). The target is under a minute on a 2-core
machine; the stand-in agents' pace (0.3 s per step, so that the three are seen side by side) is
most of it.

    python bench/demo.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def once() -> float:
    with tempfile.TemporaryDirectory(prefix="fleet-demo-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        start = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "git-fleet-demo"), "-q"], cwd=tmp, env=env,
                              capture_output=True, text=True)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"bench: the demo failed:\n{proc.stderr}")
        return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    args = ap.parse_args()
    times = [once() for _ in range(args.runs)]
    print("| demo | seconds, median (min-max) |\n|---|---|")
    print(f"| git fleet-demo, {os.cpu_count()} cores | {statistics.median(times):.1f} "
          f"({min(times):.1f}-{max(times):.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
