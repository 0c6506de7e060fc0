"""Archive a bench run as the committed reference.

    python -m loadtest.report.archive RUN_DIR [DEST]    (DEST: results/reference)

Copies RUN_DIR to DEST (replacing what was there), xz-compresses the raw CSVs (the report
builder reads `NAME.csv.xz` in place of `NAME.csv`), keeps DEST/README.md if one exists
(it is the hand-written account of the run), rebuilds the report in DEST and checks that
nothing was lost on the way: the report rebuilt from the archive must be the text of
RUN_DIR/report.md (so build that one with the current report code first:
`python -m loadtest.report RUN_DIR`). Last, the headless-browser check writes
report-first-screen.png. Then
`python -m loadtest.report.readme` copies its verdict and headline into README.md.
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sys
import tempfile
from pathlib import Path

from loadtest.report.__main__ import main as report_main
from loadtest.report.build import build

ROOT = Path(__file__).resolve().parents[2]


def archive(run: Path, dest: Path) -> Path:
    if not (run / "runs.jsonl").is_file() or not (run / "env.json").is_file():
        raise SystemExit(f"archive: {run} is not a bench run (no runs.jsonl/env.json)")
    keep = (dest / "README.md").read_text() if (dest / "README.md").is_file() else None
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staged = Path(tmp) / dest.name
        shutil.copytree(run, staged)
        for csv in sorted((staged / "raw").glob("*.csv")):
            with (
                csv.open("rb") as src,
                lzma.open(csv.with_name(csv.name + ".xz"), "wb", preset=9) as out,
            ):
                shutil.copyfileobj(src, out)
            csv.unlink()
        if keep is not None:
            (staged / "README.md").write_text(keep)
        md, _ = build(staged)
        before, after = (run / "report.md").read_text(), md.read_text()
        if _figures(before) != _figures(after):
            raise SystemExit(
                f"archive: the report rebuilt from {staged} differs from {run}/report.md"
            )
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    return dest


def _figures(md: str) -> str:
    """report.md without its title (it names the folder) and the build-time line."""
    lines = md.splitlines()[1:]
    return "\n".join(
        ln for ln in lines if not ln.startswith("Built by loadtest.report in")
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument(
        "dest", type=Path, nargs="?", default=ROOT / "results" / "reference"
    )
    args = ap.parse_args(argv)
    dest = archive(args.run, args.dest)
    print(f"archive: {args.run} -> {dest}", file=sys.stderr)
    # the browser check and report-first-screen.png of the archived report
    return report_main([str(dest)])


if __name__ == "__main__":
    raise SystemExit(main())
