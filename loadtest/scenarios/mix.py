"""S10: the mixed scenario, replayed by locust's FastHttpUser.

    locust -f loadtest/scenarios/mix.py --headless -u 50 -r 50 -t 30s --host http://127.0.0.1:8080

Every request's time is captured raw through ``events.request`` (response_time is a float
in ms -> integer µs) into ``$TWINPROXY_LOCUST_SAMPLES-<pid>.csv`` with the columns
``ts_us,name,latency_us,status`` (status 0 = no response). The runner merges the files of
all workers. Without the variable nothing is written (plain interactive use).

Each process also counts the TCP connections its clients opened (geventhttpclient's
``ConnectionPool.after_connect`` hook) into ``$TWINPROXY_LOCUST_SAMPLES-<pid>.conns``:
requests / connects is the keep-alive reuse the proxy allowed.
"""

from __future__ import annotations

import atexit
import os
import random

from locust import FastHttpUser, between, events, task

_PATH = os.environ.get("TWINPROXY_LOCUST_SAMPLES")
_file = None
_connects = 0


def _count_connects() -> None:
    try:
        from geventhttpclient import connectionpool
    except ImportError:  # pragma: no cover - locust always brings it
        return
    orig = connectionpool.ConnectionPool.after_connect

    def after_connect(self, sock):  # type: ignore[no-untyped-def]
        global _connects
        _connects += 1
        return orig(self, sock)

    connectionpool.ConnectionPool.after_connect = after_connect


_count_connects()
_BODY_1K = b"x" * 1024


def _open() -> None:
    global _file
    if _PATH and _file is None:
        # kept open for the whole run (closed at quitting/exit): one write per request
        name = f"{_PATH}-{os.getpid()}.csv"
        _file = open(name, "w", buffering=1 << 20, encoding="ascii")  # noqa: SIM115
        atexit.register(_close)


def _close() -> None:
    global _file
    if _PATH:
        try:
            with open(f"{_PATH}-{os.getpid()}.conns", "w", encoding="ascii") as f:
                f.write(f"{_connects}\n")
        except OSError:
            pass
    if _file is not None:
        _file.flush()
        _file.close()
        _file = None


@events.init.add_listener
def _on_init(environment, **_kw):
    _open()


@events.request.add_listener
def _on_request(
    request_type,
    name,
    response_time,
    response_length,
    response=None,
    context=None,
    exception=None,
    start_time=None,
    **_kw,
):
    if _file is None:
        return
    status = 0
    if response is not None:
        status = int(getattr(response, "status_code", 0) or 0)
    ts_us = int((start_time or 0) * 1e6)
    _file.write(f"{ts_us},{name},{round(response_time * 1000)},{status}\n")


@events.test_stop.add_listener
def _on_stop(environment, **_kw):
    if _file is not None:
        _file.flush()


@events.quitting.add_listener
def _on_quit(environment, **_kw):
    _close()


class MixUser(FastHttpUser):
    """A plausible API client mix: small reads dominate, some larger bodies, uploads,
    a slow call and an error path. Think time keeps users independent, not a flood."""

    wait_time = between(0.0, 0.01)

    @task(10)
    def small(self) -> None:
        self.client.get("/bytes/0", name="GET /bytes/0")

    @task(5)
    def one_k(self) -> None:
        self.client.get("/bytes/1024", name="GET /bytes/1024")

    @task(2)
    def sixteen_k(self) -> None:
        self.client.get("/bytes/16384", name="GET /bytes/16384")

    @task(2)
    def upload(self) -> None:
        self.client.post("/echo", data=_BODY_1K, name="POST /echo 1KiB")

    @task(1)
    def chunked(self) -> None:
        self.client.get("/chunked/8192", name="GET /chunked/8192")

    @task(1)
    def slow(self) -> None:
        self.client.get(f"/delay/{random.choice((1, 5, 10))}", name="GET /delay/N")

    @task(1)
    def not_found(self) -> None:
        with self.client.get(
            "/status/404", name="GET /status/404", catch_response=True
        ) as r:
            if r.status_code == 404:
                r.success()
