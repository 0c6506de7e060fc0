"""Check report.html in a real browser: headless Chromium (Debian package `chromium`)
renders it, every image must load (naturalWidth > 0), and a screenshot of the first
screen is kept beside the report (report-first-screen.png).

`python -m loadtest.report.browser RESULTS_DIR` prints what it found; exit 1 when an image
did not load, 2 when no Chromium is installed. The report itself carries no script: the
image check runs on a temporary copy with a small snippet appended.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCREENSHOT = "report-first-screen.png"
WINDOW = (1280, 900)
_MARK = "twinproxy-image-check"
_SNIPPET = f"""
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var out = imgs.map(function (i) {{
    return {{alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}};
  }});
  var pre = document.createElement("pre");
  pre.id = "{_MARK}";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}});
</script>
"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass(frozen=True)
class Check:
    images: list[dict[str, object]]  # alt, complete, w, h per <img>, in page order
    screenshot: Path | None

    @property
    def broken(self) -> list[str]:
        return [str(i.get("alt")) for i in self.images if not (i.get("w") or 0) > 0]


def _run(
    args: list[str], profile: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium not installed (Debian package `chromium`)")
    base = [
        exe,
        "--headless",
        "--no-sandbox",  # the lab runs as root on its machines
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run(
        base + args, capture_output=True, text=True, timeout=timeout, check=False
    )


def check(
    html_path: Path, screenshot: Path | None = None, timeout: float = 120
) -> Check:
    """Render html_path; return the loaded state of every image, and write the first
    screen (WINDOW) to screenshot (default: report-first-screen.png beside the report)."""
    html_path = html_path.resolve()
    shot = screenshot or html_path.parent / SCREENSHOT
    with tempfile.TemporaryDirectory(prefix="twinproxy-browser-") as tmp:
        tmpdir = Path(tmp)
        probe = tmpdir / "probe.html"
        text = html_path.read_text()
        probe.write_text(text.replace("</body>", _SNIPPET + "</body>", 1))
        dom = _run(["--dump-dom", probe.as_uri()], tmpdir / "p1", timeout)
        start = dom.stdout.find(f'id="{_MARK}"')
        if start < 0:
            raise RuntimeError(
                f"chromium rendered no image report (rc {dom.returncode}): "
                + dom.stderr.strip()[-500:]
            )
        body = dom.stdout[
            dom.stdout.index(">", start) + 1 : dom.stdout.index("</pre>", start)
        ]
        images = json.loads(body.replace("&quot;", '"').replace("&amp;", "&"))
        shot.parent.mkdir(parents=True, exist_ok=True)
        _run(
            [
                f"--screenshot={shot}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                html_path.as_uri(),
            ],
            tmpdir / "p2",
            timeout,
        )
    return Check(images, shot if shot.is_file() else None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m loadtest.report.browser RESULTS_DIR", file=sys.stderr)
        return 2
    html_path = Path(args[0]) / "report.html"
    if chromium() is None:
        print("browser check: chromium not installed; skipped", file=sys.stderr)
        return 2
    result = check(html_path)
    print(
        f"browser check: {len(result.images)} image(s), {len(result.broken)} not loaded; "
        f"screenshot {result.screenshot}"
    )
    for alt in result.broken:
        print(f"  NOT LOADED: {alt}", file=sys.stderr)
    return 1 if result.broken or result.screenshot is None else 0


if __name__ == "__main__":
    sys.exit(main())
