"""A GIT_PROXY_COMMAND for git:// that relays to the daemon but hides one ref (the HIDE variable)
from the server's ref advertisement: a client that believes the ref does not exist, as a client
of its own could claim. Usage: GIT_PROXY_COMMAND=hiding_proxy.py HIDE=refs/... git push ..."""

import os
import socket
import sys
import threading

host, port = sys.argv[1], int(sys.argv[2])
hide = os.environ["HIDE"].encode()
server = socket.create_connection((host, port))
out = sys.stdout.buffer


def up() -> None:
    while data := os.read(0, 65536):
        server.sendall(data)
    server.shutdown(socket.SHUT_WR)


threading.Thread(target=up, daemon=True).start()
down = server.makefile("rb")
while True:  # the advertisement, a pkt-line at a time, but the hidden ref's
    size = down.read(4)
    if size == b"0000" or not size:
        out.write(size)
        out.flush()
        break
    body = down.read(int(size, 16) - 4)
    if not (body.rstrip(b"\n").endswith(b" " + hide) and b"\0" not in body):
        out.write(size + body)
        out.flush()
while data := down.read1(65536):
    out.write(data)
    out.flush()
