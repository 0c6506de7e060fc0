"""Loopback ports for servers under test."""

from __future__ import annotations

import random
import socket

_handed_out: set[int] = set()

# Below the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range starts at 32768), so
# an outgoing connection of a proxy or an upstream cannot take the port between the check
# here and the server's own bind.
LOW, HIGH = 20000, 32000


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to on host now, never handed out before by this process."""
    for _ in range(2000):
        port = random.randrange(LOW, HIGH)
        if port in _handed_out:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port")


def is_listening(port: int) -> bool:
    """True when some socket LISTENs on port (read from /proc/net, so checking does not
    open a client connection the server under test would see)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == "0A":
                        return True
        except FileNotFoundError:
            continue
    return False
