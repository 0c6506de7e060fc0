"""loadtest/profile: stack collapsing, the category rules, the flame graph renderer, the
per-request table and the report's "Where the time goes" section (present and absent)."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from anywhere: `pytest loadtest/tests`
    sys.path.insert(0, str(ROOT))

from loadtest.profile import flame, perreq, stacks
from loadtest.report.common import Ctx
from loadtest.report.doc import Image, Para, Table, to_html, to_markdown
from loadtest.report.load import Results
from loadtest.report.sections import SECTIONS
from loadtest.report.sections import s13_where_time_goes as where_time_goes

PERF_SCRIPT = """\
c-proxy  4829 11985.272667:    1001001 cpu-clock:\x20
\tffffffff82063c35 tcp_sendmsg_locked+0x5 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
\t          10ab59 __libc_send+0x19 (inlined)
\t            c9ac client_flush+0x7fc (inlined)
\t            c9ac client_run+0x7fc (/w/c-proxy/build/c-proxy)
\t            8e70 ev_run+0x800 (/usr/lib/x86_64-linux-gnu/libev.so.4.0.0)
\t            53f1 main+0xac1 (/w/c-proxy/build/c-proxy)

c-proxy  4829 11985.273667:    1001001 cpu-clock:\x20
\t           9c451 __memmove_avx_unaligned_erms+0x1 (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t            c9ac client_run+0x7fc (/w/c-proxy/build/c-proxy)
\t            8e70 ev_run+0x800 (/usr/lib/x86_64-linux-gnu/libev.so.4.0.0)
\t            53f1 main+0xac1 (/w/c-proxy/build/c-proxy)

c-proxy  4829 11985.274667:    1001001 cpu-clock:\x20
\t            1111 llhttp__internal__run+0x10 (/w/c-proxy/build/c-proxy)
\t            2222 llhttp_execute+0x10 (/w/c-proxy/build/c-proxy)
\t            c9ac client_run+0x7fc (/w/c-proxy/build/c-proxy)
\t            53f1 main+0xac1 (/w/c-proxy/build/c-proxy)

c-proxy  4829 11985.275667:    1001001 cpu-clock:\x20
\t           9c451 __memmove_avx_unaligned_erms+0x1 (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t            c9ac client_run+0x7fc (/w/c-proxy/build/c-proxy)
\t            8e70 ev_run+0x800 (/usr/lib/x86_64-linux-gnu/libev.so.4.0.0)
\t            53f1 main+0xac1 (/w/c-proxy/build/c-proxy)
"""


def test_collapse_perf_merges_equal_stacks_and_names_inlined_frames() -> None:
    got = stacks.collapse_perf(PERF_SCRIPT.splitlines(keepends=True))
    assert sum(got.values()) == 4
    memmove = [s for s in got if "__memmove" in s]
    assert len(memmove) == 1 and got[memmove[0]] == 2  # two equal samples: one line
    kernel = next(s for s in got if "tcp_sendmsg" in s).split(";")
    assert kernel[0] == "c-proxy"  # the comm is the root
    assert kernel[-1] == "tcp_sendmsg_locked ([kernel])"  # leaf last, offset stripped
    # an inlined frame takes the object of the real frame it was inlined into
    assert "client_flush (/w/c-proxy/build/c-proxy)" in kernel


def test_classify_perf_stacks() -> None:
    got = stacks.collapse_perf(PERF_SCRIPT.splitlines(keepends=True))
    cats = Counter[str]()
    for s, n in got.items():
        cats[stacks.classify(s.split(";"), pyspy=False)] += n
    # kernel leaf -> kernel; memmove under client_run -> proxy; llhttp -> llhttp
    assert cats == Counter({"kernel": 1, "proxy": 2, "llhttp": 1})
    assert stacks.shares(got, pyspy=False)["proxy"] == 50.0


def test_classify_pyspy_frames() -> None:
    base = [
        "0x7f595244524a (libc.so.6)",
        "<module> (py-proxy)",
        "BaseEventLoop._run_once (asyncio/base_events.py)",
    ]

    def cat(*leaf: str) -> str:
        return stacks.classify(base + list(leaf), pyspy=True)

    assert cat() == "event loop"
    assert cat("ClientConn.process (pyproxy/client.py)") == "proxy"
    assert cat(
        "ClientConn.process (pyproxy/client.py)",
        "PyDict_GetItem (libpython3.11.so.1.0)",
    ) == ("interpreter")
    assert (
        cat("ResponseParser.feed (pyproxy/http1.py)", "feed_data (parser.c)")
        == "llhttp"
    )
    assert cat("llhttp__internal__run (llhttp.c)") == "llhttp"
    assert cat("sock_send (socketmodule.c)", "send (libc.so.6)") == "kernel"
    assert cat("sock_send (socketmodule.c)", "malloc (libc.so.6)") == "interpreter"
    assert cat("emit (logging/__init__.py)") == "other"
    # a syscall wrapper counts as kernel only for py-spy (perf sees the kernel itself)
    assert (
        stacks.classify(["main (/x/c-proxy)", "send (libc.so.6)"], pyspy=False)
        == "proxy"
    )


def test_flame_svg_is_xml_with_proportional_boxes() -> None:
    svg = flame.render(
        {"a (x);b (x)": 3, "a (x);c ([kernel])": 1},
        "title <&>",
        lambda f: stacks.frame_category(f, pyspy=False),
    )
    tree = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    titles = {
        g.find(f"{ns}title").text: float(g.find(f"{ns}rect").get("width"))  # type: ignore[union-attr, arg-type]
        for g in tree.iter(f"{ns}g")
    }
    width = {t.split(":")[0]: w for t, w in titles.items() if t}
    assert abs(width["b (x)"] - 3 * width["c ([kernel])"]) < 0.05
    assert abs(width["all"] - width["a (x)"]) < 0.05
    assert "title &lt;&amp;&gt;" in svg
    assert flame.COLOURS["kernel"] in svg


def test_perreq_table_takes_medians(tmp_path: Path) -> None:
    lines = [
        {"kind": "c-proxy", "tool": "callgrind", "n": 100, "per_request": v}
        for v in (8000, 9000, 8500)
    ] + [
        {
            "kind": "nullproxy",
            "tool": "strace",
            "n": 100,
            "per_request": 4.25,
            "breakdown": "splice 4.00",
        }
    ]
    (tmp_path / "per_request.jsonl").write_text(
        "\n".join(json.dumps(x) for x in lines) + "\ntorn{", encoding="utf-8"
    )
    assert perreq.main(["perreq", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "per_request.json").read_text(encoding="utf-8"))
    by = {r["contender"]: r for r in doc["rows"]}
    assert [r["contender"] for r in doc["rows"]] == ["nullproxy", "c-proxy"]
    assert by["c-proxy"]["callgrind"]["per_request"] == 8500
    assert by["c-proxy"]["strace"]["per_request"] is None
    md = (tmp_path / "per_request.md").read_text(encoding="utf-8")
    assert "8,500" in md and "not run" in md and "splice 4.00" in md


def _ctx(root: Path) -> Ctx:
    return Ctx(res=Results(root=root, env={}, runs=[]), plots_dir=root / "plots")


def test_section_registered_after_the_scenarios() -> None:
    assert SECTIONS[-1] is where_time_goes.section


def test_section_without_profile_says_not_run(tmp_path: Path) -> None:
    blocks = where_time_goes.section(_ctx(tmp_path))
    text = to_markdown(blocks)
    assert "not run" in text
    assert not any(isinstance(b, (Image, Table)) for b in blocks)


def test_section_with_profile(tmp_path: Path) -> None:
    prof = tmp_path / "profile"
    prof.mkdir()
    (prof / "c-proxy.perf.collapsed").write_text(
        "".join(
            f"{s} {n}\n"
            for s, n in stacks.collapse_perf(PERF_SCRIPT.splitlines(True)).items()
        ),
        encoding="utf-8",
    )
    (prof / "meta.json").write_text(
        json.dumps(
            {
                "rate": 1000,
                "seconds": 5,
                "windows": {"c-proxy.perf": {"cpu_us_per_request": 12.5}},
            }
        ),
        encoding="utf-8",
    )
    stacks.report(prof)
    assert (prof / "c-proxy.perf.svg").is_file()
    blocks = where_time_goes.section(_ctx(tmp_path))
    images = [b for b in blocks if isinstance(b, Image)]
    assert [i.rel for i in images] == ["profile/c-proxy.perf.svg"]
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].rows[0][:4] == ("c-proxy", "perf", "4", "25.0")  # kernel 1 of 4
    assert tables[0].rows[0][-1] == "12.5"
    # the per-request table was not run: said so, no table made up
    assert any(
        isinstance(b, Para) and "Per-request" in b.text and "not run" in b.text
        for b in blocks
    )
    html = to_html(blocks, "t")
    assert "data:image/svg+xml;base64," in html
    assert "![flame graph: c-proxy (perf)](profile/c-proxy.perf.svg)" in to_markdown(
        blocks
    )
