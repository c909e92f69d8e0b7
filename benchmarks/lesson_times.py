"""How long each notebook takes, for INSTRUCTOR.md's lesson plan: run time measured, reading time estimated.

    python benchmarks/lesson_times.py                 # every notebook in replay mode (no key, no network)
    python benchmarks/lesson_times.py --mode local 03 07 09   # these notebooks in local mode (real training)
    python benchmarks/lesson_times.py --solutions --mode local 03 07   # the exercises' solutions instead

Each notebook runs once, top to bottom, with papermill in a fresh kernel (kernel start included, as a learner's
"Run All"). Local mode starts its own server on a free port with a scratch data directory, so a prerequisite
(03 for 04, 07 for 08) must be in the same command; the solutions train their own models. In local mode the time the
notebook's jobs spent training (from each job's start event to its finish, read from the server's store) is printed
too. Reading time is not measured: it is the prose's length at READING_CHARS_PER_MINUTE, printed as an estimate beside
the measured run time.
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
from local_server.store import JOB_STARTED, Store  # noqa: E402
from tests.net import free_port  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
READING_CHARS_PER_MINUTE = 500  # an assumption for careful reading of Korean technical prose with code beside it


def prose_characters(notebook: Path) -> int:
    nb = nbformat.read(notebook, as_version=4)
    return sum(len(cell.source) for cell in nb.cells if cell.cell_type == "markdown")


def run_seconds(notebook: Path, output_dir: Path) -> float:
    started = time.monotonic()
    papermill.execute_notebook(str(notebook), str(output_dir / notebook.name), cwd=str(notebook.parent),
                               kernel_name="python3", progress_bar=False)
    return time.monotonic() - started


def training_seconds(data_dir: Path, since: int) -> tuple[int, int]:
    """The jobs created since `since` (epoch seconds) on the local server's store: how many, and their seconds from
    start to finish added up (the jobs train one after another on the default worker)."""
    if not data_dir.is_dir():  # no notebook has started the server yet
        return 0, 0
    store = Store(data_dir)
    jobs = [job for job in store.list_jobs() if job["created_at"] >= since and job["finished_at"]]
    started = {job["id"]: next(e["created_at"] for e in store.events(job["id"]) if e["message"] == JOB_STARTED)
               for job in jobs}
    return len(jobs), sum(job["finished_at"] - started[job["id"]] for job in jobs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prefixes", nargs="*", help="notebook numbers (default: all)")
    parser.add_argument("--mode", choices=["replay", "local"], default="replay")
    parser.add_argument("--solutions", action="store_true", help="time notebooks/solutions/ instead")
    args = parser.parse_args()
    notebooks = sorted(p for p in (SOLUTIONS if args.solutions else NOTEBOOKS).glob("[0-9]*.ipynb")
                       if not args.prefixes or p.name.startswith(tuple(args.prefixes)))
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["COURSE_MODE"] = args.mode
        if args.mode == "local":
            os.environ["COURSE_LOCAL_PORT"] = str(free_port())
            os.environ["COURSE_LOCAL_DATA_DIR"] = str(Path(scratch) / "server")
        print(f"{'notebook':32} {args.mode + ' run':>12} {'prose':>8} {'reading (estimate)':>20}")
        total = 0.0
        for notebook in notebooks:
            since = int(time.time())
            seconds = run_seconds(notebook, Path(scratch))
            total += seconds
            chars = prose_characters(notebook)
            trained = ""
            if args.mode == "local":
                jobs, training = training_seconds(Path(os.environ["COURSE_LOCAL_DATA_DIR"]), since)
                trained = f"   training {training} s ({jobs} jobs)" if jobs else ""
            print(f"{notebook.stem:32} {seconds:10.0f} s {chars:7,}자 "
                  f"{chars / READING_CHARS_PER_MINUTE:15.0f} min{trained}", flush=True)
        print(f"{'total':32} {total:10.0f} s   (reading at {READING_CHARS_PER_MINUTE} characters per minute)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
