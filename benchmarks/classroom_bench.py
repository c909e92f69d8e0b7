"""A class on one local server: N simulated students, each with their own key, do notebook 03's work at once.

    python benchmarks/classroom_bench.py                    # N = 8 students, real model: about 50 min on 2 cores
    python benchmarks/classroom_bench.py --students 40 --epochs 2 --workers 4   # a bigger machine

Each student uploads the 호반스 training file, creates a job (03's local hyperparameters unless --epochs), polls it
every 2 s as notebook 03 does, and, once their model is trained, asks it the 24 held-out questions one after another
(20-token answers). The same class runs twice: first on a server with one training worker (one job at a time, the
server before classroom options), then with --workers. Printed beside the targets of issue 16 item 7:

- time until the whole class has a trained model, and jobs per hour (≥ 2× the one-worker server);
- chat latency p50/p95 of the requests sent while jobs were still training (p50 ≤ 10 s), and of all requests;
- peak memory of the server and its workers together, summed over processes at each sample (≤ 8 GiB).

The keys file is written fresh (one key per student and one instructor key) and passed with --keys.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.local_server_bench import OUTPUT, SYSTEM, PeakMemory, report, start_server, upload  # noqa: E402
from helpers import chat_data, datasets  # noqa: E402
from helpers.hobanse_eval import eval_questions  # noqa: E402
from local_server.keys import make_keys  # noqa: E402

COURSE_EPOCHS = 10  # notebook 03's LOCAL_HYPERPARAMETERS
ANSWER_TOKENS = 20
POLL_SECONDS = 2  # notebook 03 polls the local server every 2 s


def write_keys(path: Path, students: int) -> list[str]:
    """The class's key file, made as an instructor makes it (--make-keys); the students' keys, in order."""
    make_keys(path, students)
    with open(path, newline="", encoding="utf-8") as f:
        return [row["key"] for row in csv.DictReader(f) if row["role"] == "student"]


class Class:
    """What the students saw: when each job finished, and each chat request's latency and whether jobs still ran."""

    def __init__(self, students: int):
        self.students = students
        self.lock = threading.Lock()
        self.finished: list[float] = []
        self.latencies: list[tuple[float, bool]] = []  # (seconds, sent while some job was still training)

    def training(self) -> bool:
        with self.lock:
            return len(self.finished) < self.students


def student(base_url: str, key: str, training_file: Path, questions: list[str], epochs: int, model: str,
            started: float, seen: Class) -> None:
    client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=5, timeout=3600)
    job = client.fine_tuning.jobs.create(model=model, training_file=upload(client, training_file).id,
                                         suffix="hobanse", seed=42, hyperparameters={"n_epochs": epochs})
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(POLL_SECONDS)
        job = client.fine_tuning.jobs.retrieve(job.id)
    if job.status != "succeeded":
        raise SystemExit(f"{job.id} {job.status}: {job.error}")
    with seen.lock:
        seen.finished.append(time.monotonic() - started)
    for question in questions:
        under_training = seen.training()
        asked = time.monotonic()
        client.chat.completions.create(
            model=job.fine_tuned_model, temperature=0, max_tokens=ANSWER_TOKENS,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
        with seen.lock:
            seen.latencies.append((time.monotonic() - asked, under_training))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run_class(students: int, epochs: int, workers: int | None, model: str) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="classroom-bench-"))
    keys = write_keys(scratch / "keys.csv", students)
    options = ["--keys", str(scratch / "keys.csv")] + (["--workers", str(workers)] if workers else [])
    if model != "gemma-3-270m":
        options += ["--model", model]
    process, base_url = start_server(scratch / "data", options)
    memory = PeakMemory(process.pid)
    memory.start()
    try:
        training_file = chat_data.write_jsonl(datasets.hobanse_chat_examples(SYSTEM), scratch / "hobanse.jsonl")
        questions = list(eval_questions()["question"])
        served = openai.OpenAI(api_key=keys[0], base_url=base_url).models.list().data[0].id
        seen = Class(students)
        started = time.monotonic()
        with ThreadPoolExecutor(students) as pool:
            for done in [pool.submit(student, base_url, key, training_file, questions, epochs, served, started, seen)
                         for key in keys]:
                done.result()
        return {"class_seconds": max(seen.finished), "jobs_per_hour": students / max(seen.finished) * 3600,
                "under_training": [s for s, busy in seen.latencies if busy],
                "all": [s for s, _ in seen.latencies], "peak_gib": memory.total_gib()}
    finally:
        memory.stopped.set()
        process.terminate()
        process.wait(60)


def show(name: str, result: dict) -> None:
    print(f"\n{name}", flush=True)
    report("time until every student has a trained model", f"{result['class_seconds'] / 60:.1f} min")
    report("class throughput", f"{result['jobs_per_hour']:.1f} jobs/h")
    busy, every = result["under_training"], result["all"]
    if busy:
        report(f"chat p50 / p95 while jobs train ({len(busy)} requests)",
               f"{percentile(busy, 50):.1f} / {percentile(busy, 95):.1f} s", "p50 ≤ 10 s")
    report(f"chat p50 / p95, all {len(every)} requests", f"{percentile(every, 50):.1f} / {percentile(every, 95):.1f} s")
    report("peak memory, server + workers together", f"{result['peak_gib']:.2f} GiB", "≤ 8 GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=COURSE_EPOCHS, help="epochs per job (03 uses 10)")
    parser.add_argument("--workers", type=int, default=None, help="training workers (default: the server's own)")
    parser.add_argument("--model", default="gemma-3-270m", help="the server's --model (a folder for a quick trial)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the one-worker run")
    args = parser.parse_args()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    print(f"{args.students} students, {args.epochs} epochs each, {ANSWER_TOKENS}-token answers", flush=True)
    baseline = None if args.no_baseline else run_class(args.students, args.epochs, 1, args.model)
    if baseline:
        show("one training worker (one job at a time)", baseline)
    result = run_class(args.students, args.epochs, args.workers, args.model)
    show(f"--workers {args.workers or '(server default)'}", result)
    if baseline:
        report("throughput vs one worker", f"{result['jobs_per_hour'] / baseline['jobs_per_hour']:.2f}×", "≥ 2×")


if __name__ == "__main__":
    main()
