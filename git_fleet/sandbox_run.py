"""What runs an agent's command in its sandbox: `PYTHON -I -S .../git_fleet/sandbox_run.py
[--write DIR]... [--links DIR]... [--protect FILE]... [--keep DIR]... [--port N]... [--mask PATH]...
[--clear VAR]... -- COMMAND...` (sandbox.py writes the line). In order: a user and mount
namespace with the local servers' sockets masked, the rest read-only but what it may write, and
/tmp, /var/tmp and /dev/shm of its own (namespaces.py); Landlock (landlock.py); a seccomp
filter (seccomp.py); the variables that lead to those servers cleared; then the command, which
replaces this process. Nothing is left out quietly: a step that fails stops it, exit 126, with
why on stderr; a sandbox is never claimed that is not there."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from git_fleet import landlock, namespaces, seccomp  # noqa: E402 (once the package can be found)

USAGE = ("usage: sandbox_run.py [--write DIR]... [--links DIR]... [--protect FILE]... [--keep DIR]... [--port N]... "
         "[--mask PATH]... [--clear VAR]... -- COMMAND...")


def main(argv: list[str]) -> int:
    options: dict[str, list[str]] = {name: [] for name in ("--write", "--port", "--mask", "--clear", "--protect",
                                                           "--links", "--keep")}
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] not in options or i + 1 >= len(argv):
            print(f"error: {USAGE}", file=sys.stderr)
            return 2
        options[argv[i]].append(argv[i + 1])
        i += 2
    command = argv[i + 1:]
    if not command:
        print(f"error: no command to run\nhint: {USAGE}", file=sys.stderr)
        return 2
    devices = ["/dev/null", "/dev/tty"]
    devices += [os.ttyname(fd) for fd in (0, 1, 2) if os.isatty(fd)]
    if landlock.abi() < landlock.MIN_ABI:
        print(f"error: the sandbox needs Landlock ABI {landlock.MIN_ABI} (this kernel: {landlock.abi()}), so {command[0]} "
              "does not run\nhint: git fleet-doctor says what this system supports", file=sys.stderr)
        return 126
    try:
        namespaces.enter(options["--mask"], keep=options["--write"])
        namespaces.read_only_but([os.path.realpath(w) for w in options["--write"]],
                                 [os.path.realpath(p) for p in options["--protect"]],
                                 [os.path.realpath(d) for d in options["--links"]])
        private = namespaces.private_temporary([*options["--keep"], *options["--write"], *options["--links"],
                                                os.getcwd()])
        os.chdir(os.getcwd())  # (onto the mount bound there just now: the old one is read-only)
        landlock.restrict([os.path.realpath(w) for w in options["--write"]] + private,
                          [int(p) for p in options["--port"]],
                          devices, [os.path.realpath(d) for d in options["--links"]])
        seccomp.install()  # (what Landlock leaves open: typing into the terminal, connects that skip connect())
        namespaces.drop_capabilities()
    except (OSError, ValueError) as e:
        print(f"error: the sandbox could not be made ({e}), so {command[0]} does not run\n"
              "hint: git fleet-doctor says what this system supports", file=sys.stderr)
        return 126
    for name in options["--clear"]:
        os.environ.pop(name, None)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # (a descriptor opened outside is a way out)
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"error: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
        return 127


sys.exit(main(sys.argv[1:]))
