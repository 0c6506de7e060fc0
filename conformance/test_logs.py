"""Access log (contract 10, behaviour.md "Logs"): one line per request, fixed keys in a
fixed order, values that match what happened on the wire."""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import UTC, datetime

from harness import build_request, chunked, free_port, wait_until

KEYS = [
    "ts",
    "client",
    "method",
    "path",
    "status",
    "upstream",
    "attempts",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "request_id",
    "worker",
]
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _records(p, n: int) -> list[tuple[str, list[tuple[str, object]]]]:
    lines = p.wait_access_log(n)
    assert len(lines) == n, lines
    return [(ln, json.loads(ln, object_pairs_hook=list)) for ln in lines]


def _check_json_line(line: str, pairs: list[tuple[str, object]]) -> dict:
    assert [k for k, _ in pairs] == KEYS, line
    rec = dict(pairs)
    assert TS.match(rec["ts"]), rec["ts"]
    assert re.search(r'"duration_ms":\d+\.\d{3}[,}]', line), (
        f"duration_ms not 3 decimals: {line}"
    )
    assert isinstance(rec["status"], int) and isinstance(rec["attempts"], int)
    assert isinstance(rec["bytes_in"], int) and isinstance(rec["bytes_out"], int)
    assert rec["duration_ms"] >= 0
    return rec


def test_json_line_per_request(upstream, proxy):
    p = proxy(upstream(["u1"]))
    req = build_request("POST", "/echo?x=1", [("X-Request-ID", "log-1")], body=b"12345")
    with p.connect() as c:
        c.send(req)
        r = c.read_response()
        assert r.status == 200
        received = c.received
    ((line, pairs),) = _records(p, 1)
    rec = _check_json_line(line, pairs)
    assert rec["client"] == "127.0.0.1"
    assert rec["method"] == "POST"
    assert rec["path"] == "/echo?x=1"
    assert rec["status"] == 200
    assert rec["upstream"] == "u1"
    assert rec["attempts"] == 1
    assert rec["bytes_in"] == len(req)
    assert rec["bytes_out"] == received == r.raw_size
    assert rec["request_id"] == "log-1"


def test_generated_request_id_matches_upstream(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        for _ in range(3):
            echo = c.request("/echo").json()
            sent = [v for n, v in echo["headers"] if n == "X-Request-ID"]
            assert len(sent) == 1
    recs = [_check_json_line(ln, pairs) for ln, pairs in _records(p, 3)]
    assert recs[-1]["request_id"] == sent[0]
    assert len({r["request_id"] for r in recs}) == 3


def test_one_line_per_pipelined_request(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(b"".join(build_request("GET", f"/bytes/{n}") for n in (1, 2, 3)))
        sizes = [c.read_response().raw_size for _ in range(3)]
    recs = [_check_json_line(ln, pairs) for ln, pairs in _records(p, 3)]
    assert [r["path"] for r in recs] == ["/bytes/1", "/bytes/2", "/bytes/3"]
    assert [r["bytes_out"] for r in recs] == sizes


def test_proxy_error_logged(upstream, proxy):
    p = proxy([{"address": f"127.0.0.1:{free_port()}", "name": "dead"}])
    r = p.request("/x", headers=[("X-Request-ID", "err-1")])
    assert r.status == 502
    ((line, pairs),) = _records(p, 1)
    rec = _check_json_line(line, pairs)
    assert (rec["status"], rec["upstream"], rec["attempts"], rec["request_id"]) == (
        502,
        "dead",
        1,
        "err-1",
    )
    assert rec["bytes_out"] == r.raw_size


def test_bad_request_logged_without_upstream(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        r = c.read_response()
    assert r.status == 400
    ((line, pairs),) = _records(p, 1)
    rec = _check_json_line(line, pairs)
    assert (rec["status"], rec["upstream"], rec["attempts"]) == (400, "", 0)
    assert rec["request_id"] == r.get("X-Request-ID")


def test_text_format(upstream, proxy):
    p = proxy(upstream(["u1"]), log={"format": "text"})
    req = build_request("GET", "/bytes/5", [("X-Request-ID", "txt-1")])
    with p.connect() as c:
        c.send(req)
        r = c.read_response()
    assert r.status == 200
    (line,) = p.wait_access_log(1)
    fields = line.split(" ")
    assert [f.split("=", 1)[0] for f in fields] == KEYS, line
    rec = dict(f.split("=", 1) for f in fields)
    assert TS.match(rec["ts"]), rec["ts"]
    assert rec["client"] == "127.0.0.1"
    assert (rec["method"], rec["path"], rec["status"], rec["upstream"]) == (
        "GET",
        "/bytes/5",
        "200",
        "u1",
    )
    assert rec["attempts"] == "1"
    assert rec["bytes_in"] == str(len(req))
    assert rec["bytes_out"] == str(r.raw_size)
    assert re.fullmatch(r"\d+\.\d{3}", rec["duration_ms"]), rec["duration_ms"]
    assert rec["request_id"] == "txt-1"


def test_text_format_quotes_strings_with_spaces(upstream, proxy):
    p = proxy(upstream(["u1"]), log={"format": "text"})
    assert p.request("/", headers=[("X-Request-ID", 'a b"c')]).status == 200
    (line,) = p.wait_access_log(1)
    assert line.endswith(" request_id=" + json.dumps('a b"c') + " worker=0"), line


def test_access_log_off(upstream, proxy, tmp_path):
    p = proxy(upstream(["u1"]), log={"access": "off"})
    assert p.request("/").status == 200
    assert p.stdout_path.read_text() == ""
    assert not any(
        "/" in ln and '"status"' in ln for ln in p.stderr_text().splitlines()
    )


def test_failover_logs_attempts_and_retry(upstream, proxy):
    up = upstream(["live"])
    dead = {"address": f"127.0.0.1:{free_port()}", "name": "dead"}
    p = proxy([dead] + up.entries())
    for _ in range(2):  # round robin: the first starts on "dead"
        assert p.request("/").get("X-Upstream") == "live"
    recs = [_check_json_line(ln, pairs) for ln, pairs in _records(p, 2)]
    # upstream: the last one tried; attempts: how many were tried.
    assert (recs[0]["upstream"], recs[0]["attempts"]) == ("live", 2)
    assert recs[1]["upstream"] == "live" and recs[1]["attempts"] in (1, 2)
    retry = p.wait_event("retry")[0]
    assert retry["level"] in ("info", "warn") and "reason" in retry, retry


def test_start_event_on_stderr(upstream, proxy):
    p = proxy(upstream(["u1"]))
    (ev,) = p.wait_event("start")
    assert ev["level"] == "info"
    assert (ev["listen"], ev["workers"], ev["pid"]) == (
        p.config["listen"],
        1,
        p.proc.pid,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", ev["ts"]), ev


def test_client_gone_before_response_logs_status_0(upstream, proxy):
    p = proxy(upstream(["u1"]))
    c = p.connect()
    # Half a body, then the client disappears: no response can ever be sent.
    c.send(
        build_request(
            "POST", "/echo", [("Content-Length", "100"), ("X-Request-ID", "gone-1")]
        )
    )
    c.send(b"x" * 10)
    time.sleep(0.2)
    c.close()
    ((line, pairs),) = _records(p, 1)
    rec = _check_json_line(line, pairs)
    assert (rec["status"], rec["bytes_out"], rec["request_id"]) == (0, 0, "gone-1")


def test_values_plausible(upstream, proxy):
    p = proxy(upstream(["u1"]))
    before = time.time()
    body = b"x" * 300
    req = build_request(
        "PUT", "/delay/200?then=/echo", [("Transfer-Encoding", "chunked")]
    )
    req += chunked(body[:100], body[100:])
    with p.connect() as c:
        c.send(req)
        r = c.read_response()
    after = time.time()
    assert r.status == 200 and r.json()["body_length"] == 300
    ((line, pairs),) = _records(p, 1)
    rec = _check_json_line(line, pairs)
    ts = datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    # ts is when the request started (millisecond precision).
    assert before - 0.002 <= ts.timestamp() <= after
    assert 200 <= rec["duration_ms"] <= (after - before) * 1000 + 1
    assert rec["bytes_in"] == len(req)  # head and body as framed on the wire
    assert rec["bytes_out"] == r.raw_size


def test_upgrade_logged_once_tunnel_closes(upstream, proxy):
    p = proxy(upstream(["u1"]))
    with p.connect() as c:
        c.send(
            build_request(
                "GET", "/upgrade", [("Upgrade", "x"), ("Connection", "upgrade")]
            )
        )
        assert c.read_response().status == 101
        c.send(b"abc")
        assert c.read_exactly(3) == b"abc"
    ((line, pairs),) = _records(p, 1)
    rec = _check_json_line(line, pairs)
    assert (rec["status"], rec["upstream"], rec["path"]) == (101, "u1", "/upgrade")


def test_access_log_to_stdout(upstream, proxy):
    p = proxy(upstream(["u1"]), log={"access": "stdout"})
    assert p.request("/", headers=[("X-Request-ID", "out-1")]).status == 200
    ok = wait_until(lambda: "out-1" in p.stdout_path.read_text(), 5)
    assert ok, p.stdout_path.read_text()
    (line,) = p.stdout_path.read_text().splitlines()
    assert json.loads(line)["request_id"] == "out-1"


def test_log_level_filters_events(upstream, proxy):
    p = proxy(upstream(["u1"]), log={"level": "warn"})
    assert p.request("/").status == 200
    p.write_config(p.config_path.read_text() + "bogus: 1\n")
    p.signal(signal.SIGHUP)
    p.wait_event("reload_failed")  # an error: logged at level warn
    assert p.events("start") == []  # info: filtered out


def test_registry_tables_in_docs_are_current():
    """docs/behaviour.md's event and reason tables are what conformance/registry.py renders
    from the shared registry files (run it with --write after changing them)."""
    from registry import DOC, rendered_doc

    assert DOC.read_text() == rendered_doc(), (
        "run: .venv/bin/python conformance/registry.py --write"
    )
