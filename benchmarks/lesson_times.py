"""How long each notebook takes, for INSTRUCTOR.md's lesson plan: run time measured, reading time estimated.

    python benchmarks/lesson_times.py                 # every notebook in replay mode (no key, no network)
    python benchmarks/lesson_times.py --mode local 03 07 09   # these notebooks in local mode (real training)

Each notebook runs once, top to bottom, with papermill in a fresh kernel (kernel start included, as a learner's
"Run All"). Local mode starts its own server on a free port with a scratch data directory, so a prerequisite
(03 for 04, 07 for 08) must be in the same command. Reading time is not measured: it is the prose's length at
READING_CHARS_PER_MINUTE, printed as an estimate beside the measured run time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.net import free_port  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
READING_CHARS_PER_MINUTE = 500  # an assumption for careful reading of Korean technical prose with code beside it


def prose_characters(notebook: Path) -> int:
    nb = nbformat.read(notebook, as_version=4)
    return sum(len(cell.source) for cell in nb.cells if cell.cell_type == "markdown")


def run_seconds(notebook: Path, output_dir: Path) -> float:
    started = time.monotonic()
    papermill.execute_notebook(str(notebook), str(output_dir / notebook.name), cwd=str(NOTEBOOKS),
                               kernel_name="python3", progress_bar=False)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="notebook numbers (default: all)")
    parser.add_argument("--mode", choices=["replay", "local"], default="replay")
    args = parser.parse_args()
    notebooks = sorted(p for p in NOTEBOOKS.glob("[0-9]*.ipynb")
                       if not args.prefixes or p.name.startswith(tuple(args.prefixes)))
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["COURSE_MODE"] = args.mode
        if args.mode == "local":
            os.environ["COURSE_LOCAL_PORT"] = str(free_port())
            os.environ["COURSE_LOCAL_DATA_DIR"] = str(Path(scratch) / "server")
        print(f"{'notebook':32} {args.mode + ' run':>12} {'prose':>8} {'reading (estimate)':>20}")
        total = 0.0
        for notebook in notebooks:
            seconds = run_seconds(notebook, Path(scratch))
            total += seconds
            chars = prose_characters(notebook)
            print(f"{notebook.stem:32} {seconds:10.0f} s {chars:7,}자 "
                  f"{chars / READING_CHARS_PER_MINUTE:15.0f} min", flush=True)
        print(f"{'total':32} {total:10.0f} s   (reading at {READING_CHARS_PER_MINUTE} characters per minute)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
