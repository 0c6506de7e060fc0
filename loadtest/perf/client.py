"""Fixed-count keep-alive GET client for loadtest/perf/per_request.sh.

    python3 client.py HOST PORT TOTAL CONNS

Opens CONNS connections (TCP_NODELAY), keeps one request in flight on each until TOTAL
responses came back, checks every response is ``HTTP/1.1 200`` with a Content-Length
body, and prints ``done TOTAL``. Exits non-zero on any other status or an early close.
Standard library only, so it runs with any python3.
"""

from __future__ import annotations

import selectors
import socket
import sys

REQ = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: perfclient\r\nAccept: */*\r\n\r\n"


def main(argv: list[str]) -> int:
    host, port, total, conns = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    sel = selectors.DefaultSelector()
    sent = done = 0
    state: dict[socket.socket, bytes] = {}
    for _ in range(min(conns, total)):
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state[s] = b""
        sel.register(s, selectors.EVENT_READ)
        s.sendall(REQ)
        sent += 1
    while done < total:
        events = sel.select(10)
        if not events:
            print(f"timeout after {done} responses", file=sys.stderr)
            return 1
        for key, _ in events:
            s = key.fileobj
            assert isinstance(s, socket.socket)
            d = s.recv(65536)
            if not d:
                print(
                    f"connection closed early after {done} responses", file=sys.stderr
                )
                return 1
            buf = state[s] + d
            while True:
                h = buf.find(b"\r\n\r\n")
                if h < 0:
                    break
                head = buf[:h].decode("latin-1")
                if not head.startswith("HTTP/1.1 200"):
                    print("bad response: " + head.splitlines()[0], file=sys.stderr)
                    return 1
                cl = 0
                for line in head.split("\r\n")[1:]:
                    k, v = line.split(":", 1)
                    if k.strip().lower() == "content-length":
                        cl = int(v)
                if len(buf) < h + 4 + cl:
                    break
                buf = buf[h + 4 + cl :]
                done += 1
                if sent < total:
                    s.sendall(REQ)
                    sent += 1
            state[s] = buf
    for s in state:
        s.close()
    print("done", done)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
