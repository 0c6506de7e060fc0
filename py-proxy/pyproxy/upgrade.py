"""upgrade: binary upgrade without a refused connection. Twin: c-proxy/src/upgrade.c.

On SIGUSR2 the running (old) process starts the program again (the same path and
arguments) with one end of an AF_UNIX SOCK_SEQPACKET socketpair as descriptor N and
UPGRADE_ENV=N in its environment, its handled signals blocked from the start. Over that
channel:

    old -> new   "twinproxy-upgrade 1 PID WORKERS NFDS LISTEN ADMIN"   (ADMIN "-": none)
    old -> new   packets of one byte "F" carrying up to UPGRADE_FDS_PER_MSG descriptors
                 each (SCM_RIGHTS), NFDS in all: the WORKERS listening sockets in worker
                 order, then admin.listen's when ADMIN is not "-"
    new -> old   "ready"  once its workers watch the sockets

The new process takes those sockets instead of binding (listen, workers and admin.listen
must be what the old process runs: else a config error, exit 2); on "ready" the old one
stops accepting and drains as on SIGTERM. A channel that closes without "ready" (the new
process failed) leaves the old one serving. The listening sockets never close in between:
no connection is refused (docs/operations.md "Binary upgrade").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from pyproxy.config import Config, ConfigError

UPGRADE_ENV = "TWINPROXY_UPGRADE_FD"  # the new process's channel descriptor
UPGRADE_FDS_PER_MSG = 200  # under the kernel's SCM_MAX_FD (253)
UPGRADE_MAGIC = "twinproxy-upgrade 1"
UPGRADE_HEAD_MAX = 512  # the first packet
# what the new process starts with blocked (it unblocks them once its handlers exist):
# main.HANDLED_SIGNALS
UPGRADE_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2}


@dataclass
class UpgradeOffer:
    """What the old process hands over (struct upgrade_offer)."""

    listen: str  # listen as written (ConfigAddr.text)
    fds: list[int]  # the workers' listening sockets, in worker order
    admin: str | None  # admin.listen as written, None: no admin socket
    admin_fd: int = -1  # admin.listen's socket when admin is not None


class UpgradeError(Exception):
    """The new process could not be started or offered the sockets; str() says why."""


# ---- old side ----------------------------------------------------------------------------------


def program_argv() -> list[str]:
    """This program's command line, to start it again: argv[0] made absolute (a script that
    is not executable runs under this interpreter)."""
    exe = os.path.abspath(sys.argv[0])
    if os.access(exe, os.X_OK):
        return [exe, *sys.argv[1:]]
    return [sys.executable, exe, *sys.argv[1:]]


def upgrade_offer_send(chan: socket.socket, offer: UpgradeOffer) -> None:
    """The offer into chan: the head, then the descriptors in batches (upgrade_spawn's first
    step; unit tests call it alone). Raises OSError."""
    fds = list(offer.fds) + ([offer.admin_fd] if offer.admin is not None else [])
    head = "%s %d %d %d %s %s" % (
        UPGRADE_MAGIC,
        os.getpid(),
        len(offer.fds),
        len(fds),
        offer.listen,
        offer.admin if offer.admin is not None else "-",
    )
    chan.send(head.encode())
    for at in range(0, len(fds), UPGRADE_FDS_PER_MSG):
        socket.send_fds(chan, [b"F"], fds[at : at + UPGRADE_FDS_PER_MSG])


def upgrade_spawn(
    argv: list[str], offer: UpgradeOffer
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start argv as the new process and send it the offer. Returns the process and the
    channel (non-blocking; the caller watches it for upgrade_poll()). Raises UpgradeError."""
    old, new = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        try:
            upgrade_offer_send(old, offer)  # waits in the channel until the new process reads it
        except OSError as e:
            raise UpgradeError("cannot send the sockets: %s" % e.strerror) from None
        env = dict(os.environ)
        env[UPGRADE_ENV] = str(new.fileno())
        # the child inherits this thread's mask: it starts with the signals blocked
        was = signal.pthread_sigmask(signal.SIG_BLOCK, UPGRADE_BLOCKED)
        try:
            proc = subprocess.Popen(argv, pass_fds=(new.fileno(),), env=env, close_fds=True)
        except OSError as e:
            raise UpgradeError("cannot start the new process: %s" % e.strerror) from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, was)
    except BaseException:
        old.close()
        raise
    finally:
        new.close()
    old.setblocking(False)
    return proc, old


def upgrade_poll(chan: socket.socket) -> int:
    """Channel readable: 1 the new process is ready, 0 nothing yet, -1 the channel closed
    without "ready" (the new process failed)."""
    try:
        data = chan.recv(16)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        return -1
    return 1 if data == b"ready" else -1


# ---- new side ----------------------------------------------------------------------------------


def upgrade_channel() -> socket.socket | None:
    """The channel named by UPGRADE_ENV (then removed from the environment), or None for a
    normal start."""
    v = os.environ.pop(UPGRADE_ENV, None)
    if v is None:
        return None
    try:
        fd = int(v)
        if fd < 3:
            return None
        os.fstat(fd)
        return socket.socket(fileno=fd)
    except (ValueError, OSError):
        return None


def upgrade_receive(
    chan: socket.socket, cfg: Config
) -> tuple[list[socket.socket], socket.socket | None]:
    """The old process's listening sockets (cfg.workers of them, in worker order) and its
    admin.listen socket (None without one). The old process must run the same listen,
    workers and admin.listen. Raises ConfigError("FILE:LINE: ...")."""
    workers = max(1, cfg.workers)
    want = workers + (1 if cfg.admin_enabled else 0)
    got: list[int] = []

    def fail(why: str) -> ConfigError:
        for fd in got:
            os.close(fd)
        return ConfigError("%s:%d: %s" % (cfg.path, cfg.listen.line, why))

    try:
        head, fds, _flags, _addr = socket.recv_fds(chan, UPGRADE_HEAD_MAX, 1)
    except OSError:
        raise fail("no upgrade offer from the running process") from None
    got.extend(fds)
    if not head or fds:
        raise fail("no upgrade offer from the running process")
    parts = head.decode("latin-1").split(" ")
    magic = " ".join(parts[:2])
    try:
        if magic != UPGRADE_MAGIC or len(parts) != 7 or not all(p.isdigit() for p in parts[2:5]):
            raise ValueError
        w, nfds = int(parts[3]), int(parts[4])
    except ValueError:
        raise fail("malformed upgrade offer") from None
    listen, admin = parts[5], parts[6]
    has_admin = admin != "-"
    admin_text = cfg.admin_listen.text if cfg.admin_listen is not None else ""
    if (
        listen != cfg.listen.text
        or w != workers
        or has_admin != cfg.admin_enabled
        or (has_admin and admin != admin_text)
        or nfds != want
    ):
        raise fail(
            "listen, workers and admin.listen must stay as the running process has them"
            " across a binary upgrade (restart instead)"
        )
    while len(got) < want:
        try:
            data, fds, _flags, _addr = socket.recv_fds(chan, 8, UPGRADE_FDS_PER_MSG)
        except OSError:
            data, fds = b"", []
        got.extend(fds)
        if data != b"F" or not fds or len(got) > want:
            raise fail("the running process's sockets did not arrive")
    socks: list[socket.socket] = []
    for fd in got:
        s = socket.socket(fileno=fd)
        if not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            for t in socks:
                t.detach()
            s.detach()
            raise fail("a received socket is not listening")
        socks.append(s)
    for s in socks:
        s.setblocking(False)
    return socks[:workers], (socks[workers] if cfg.admin_enabled else None)


def upgrade_ready(chan: socket.socket) -> None:
    """Tell the old process to hand over (it stops accepting and drains); close the channel."""
    try:
        chan.send(b"ready")
    except OSError:
        pass  # the old process is gone (stopped meanwhile): nothing to hand over
    chan.close()
