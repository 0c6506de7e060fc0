"""upgrade: the socket hand-over of a binary upgrade (docs/operations.md).
Twin: c-proxy/tests/test_upgrade.c. Real sockets: a SEQPACKET pair stands for the channel."""

from __future__ import annotations

import os
import socket

import pytest

from pyproxy.config import Config, ConfigError, config_load_string
from pyproxy.upgrade import (
    UPGRADE_ENV,
    UPGRADE_FDS_PER_MSG,
    UpgradeOffer,
    upgrade_channel,
    upgrade_offer_send,
    upgrade_poll,
    upgrade_ready,
    upgrade_receive,
)


def listening() -> tuple[socket.socket, str]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, "127.0.0.1:%d" % s.getsockname()[1]


def channel() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def config_for(listen: str, workers: int, admin: str | None) -> Config:
    """The running process's config as the new process would read it (listen on line 3)."""
    text = "upstreams:\n  - address: 127.0.0.1:1\nlisten: %s\nworkers: %d\n" % (listen, workers)
    if admin is not None:
        text += "admin:\n  listen: %s\n" % admin
    return config_load_string("t.yaml", text)


def same_socket(a: socket.socket, b: socket.socket) -> bool:
    return a.getsockname() == b.getsockname() and a.fileno() != b.fileno()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_receive_takes_the_offered_sockets() -> None:
    (w0, l0), (w1, _l1), (adm, admin) = listening(), listening(), listening()
    old, new = channel()
    upgrade_offer_send(old, UpgradeOffer(l0, [w0.fileno(), w1.fileno()], admin, adm.fileno()))
    socks, admin_sock = upgrade_receive(new, config_for(l0, 2, admin))
    assert len(socks) == 2 and admin_sock is not None
    assert same_socket(socks[0], w0) and same_socket(socks[1], w1)
    assert same_socket(admin_sock, adm)
    for s in (*socks, admin_sock, w0, w1, adm, old, new):
        s.close()


def test_receive_many_workers_in_batches() -> None:
    n = UPGRADE_FDS_PER_MSG + 7
    lsock, l0 = listening()
    dups = [os.dup(lsock.fileno()) for _ in range(n)]
    old, new = channel()
    upgrade_offer_send(old, UpgradeOffer(l0, dups, None))
    cfg = config_for(l0, n, None)
    socks, admin_sock = upgrade_receive(new, cfg)
    assert admin_sock is None and len(socks) == n
    assert all(same_socket(s, lsock) for s in socks)
    for s in socks:
        s.close()
    for fd in dups:
        os.close(fd)
    for s in (lsock, old, new):
        s.close()


def test_receive_refuses_another_listen() -> None:
    lsock, l0 = listening()
    old, new = channel()
    upgrade_offer_send(old, UpgradeOffer(l0, [lsock.fileno()], None))
    before = open_fds()
    with pytest.raises(ConfigError) as e:
        upgrade_receive(new, config_for("127.0.0.1:1", 1, None))
    assert str(e.value) == (
        "t.yaml:3: listen, workers and admin.listen must stay as the running process has"
        " them across a binary upgrade (restart instead)"
    )
    assert open_fds() == before  # nothing received is left open
    for s in (lsock, old, new):
        s.close()


def test_receive_refuses_other_workers_or_admin() -> None:
    lsock, l0 = listening()
    for workers, admin in ((2, None), (1, "127.0.0.1:2")):
        old, new = channel()
        upgrade_offer_send(old, UpgradeOffer(l0, [lsock.fileno()], None))
        with pytest.raises(ConfigError, match="binary upgrade"):
            upgrade_receive(new, config_for(l0, workers, admin))
        old.close()
        new.close()
    lsock.close()


def test_receive_without_an_offer() -> None:
    old, new = channel()
    old.close()
    with pytest.raises(ConfigError) as e:
        upgrade_receive(new, config_for("127.0.0.1:1", 1, None))
    assert str(e.value) == "t.yaml:3: no upgrade offer from the running process"
    new.close()


def test_poll_ready_and_closed() -> None:
    old, new = channel()
    old.setblocking(False)
    assert upgrade_poll(old) == 0  # nothing yet
    upgrade_ready(new)  # closes its end too
    assert upgrade_poll(old) == 1
    assert upgrade_poll(old) == -1  # then the channel is closed
    old.close()
    old, new = channel()
    new.close()
    assert upgrade_poll(old) == -1  # closed without "ready"
    old.close()


def test_channel_from_environment() -> None:
    os.environ.pop(UPGRADE_ENV, None)
    assert upgrade_channel() is None
    old, new = channel()
    os.environ[UPGRADE_ENV] = str(new.fileno())
    got = upgrade_channel()
    assert got is not None and got.fileno() == new.fileno()
    assert UPGRADE_ENV not in os.environ  # not passed on to what this process starts
    got.detach()
    for bad in ("x", "1"):  # not a number; stdout is no channel
        os.environ[UPGRADE_ENV] = bad
        assert upgrade_channel() is None
    old.close()
    new.close()
