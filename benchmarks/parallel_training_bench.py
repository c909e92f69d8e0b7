"""Parallel training in the local server with the real packaged model: K 호반스 jobs on `--workers 1` vs more, and
what one shared pass over the base model for several jobs could gain instead.

    python benchmarks/parallel_training_bench.py                      # both parts, 10 epochs a job (slow)
    python benchmarks/parallel_training_bench.py --epochs 1 --steps 3  # what the README's figures used
    python benchmarks/parallel_training_bench.py --part jobs --workers 1 2 --jobs 4 --epochs 10
    python benchmarks/parallel_training_bench.py --part steps

jobs: for each worker count, `python -m local_server --workers W` on a free loopback port with a fresh data directory;
K jobs on the 호반스 file with notebook 03's local hyperparameters (10 epochs, learning rate x1, batch auto = 1) are
created at once; prints the wall time until all have succeeded, jobs per hour, each worker's torch threads (from the
job's first event) and the peak of the summed resident memory of the server and its workers (VmRSS from /proc,
sampled every 0.2 s; Linux only).

steps: bounds what a shared pass (the jobs that train the same base model at once run as the rows of one batch, each
row with its own LoRA) could gain over separate workers. The server trains one example at a time (batch 1,
gradient accumulation), so: one process with all the cores stepping batch 1 (--workers 1), one single-thread process
per core stepping batch 1 at the same time (--workers = cores), and one single-thread process stepping batch 1, then a
padded batch of 2 and 4 (a shared pass for 2 or 4 jobs in one worker's thread, counted without the per-row LoRA's own
cost, so an upper bound on its gain over the same thread training one job). Each is reported as training examples
per second over all its processes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.local_server_bench import SYSTEM, PeakMemory, report, start_server, upload  # noqa: E402
from helpers import chat_data, datasets  # noqa: E402
from local_server.jobs import available_cores  # noqa: E402

STEP_TIMEOUT_SECONDS = 900
NOTEBOOK_03_HYPERPARAMETERS = {"n_epochs": 10, "learning_rate_multiplier": 1.0}  # its LOCAL_HYPERPARAMETERS


def class_of_jobs(workers: int, n_jobs: int, epochs: int) -> float:
    """Run n_jobs 호반스 jobs on a server with `workers` workers; print the figures; return the wall seconds."""
    process, base_url = start_server(Path(tempfile.mkdtemp(prefix=f"parallel-bench-w{workers}-")),
                                    ["--workers", str(workers)])
    memory = PeakMemory(process.pid)
    memory.start()
    client = openai.OpenAI(api_key="local", base_url=base_url, max_retries=0, timeout=600)
    try:
        path = chat_data.write_jsonl(datasets.hobanse_chat_examples(SYSTEM),
                                     Path(tempfile.mkdtemp()) / "hobanse_train.jsonl")
        training_file = upload(client, path).id
        started = time.monotonic()
        jobs = [client.fine_tuning.jobs.create(model="gemma-3-270m", training_file=training_file, seed=42,
                                               suffix=f"bench{n}",
                                               hyperparameters={**NOTEBOOK_03_HYPERPARAMETERS, "n_epochs": epochs})
                for n in range(n_jobs)]
        most_running = 0
        while True:
            jobs = [client.fine_tuning.jobs.retrieve(job.id) for job in jobs]
            most_running = max(most_running, sum(job.status == "running" for job in jobs))
            if all(job.status in ("succeeded", "failed", "cancelled") for job in jobs):
                break
            time.sleep(1)
        seconds = time.monotonic() - started
        failed = [f"{job.id}: {job.status} {job.error}" for job in jobs if job.status != "succeeded"]
        if failed:
            raise SystemExit("\n".join(failed))
        threads = [next(e.data["threads"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)
                        if e.data and "threads" in e.data) for job in jobs]
        label = f"--workers {workers}, {n_jobs} jobs x {epochs} epochs"
        report(f"{label}: most jobs running at once", f"{most_running}", f"≤ {workers}")
        report(f"{label}: torch threads per worker", f"{threads[0]}", f"x {workers} ≤ {available_cores()} cores")
        report(f"{label}: wall time until all succeeded", f"{seconds:.0f} s")
        report(f"{label}: jobs per hour", f"{n_jobs * 3600 / seconds:.1f}")
        report(f"{label}: peak RSS, server + workers", f"{memory.total_gib():.2f} GiB", "≤ 8 GiB (issue 16.7)")
        return seconds
    finally:
        memory.stopped.set()
        process.terminate()
        process.wait(30)


def _step_rate(threads: int, batch: int, steps: int, start: multiprocessing.Barrier, rates) -> None:
    """In a fresh process: LoRA training steps on `batch` padded 호반스 examples; puts examples per second."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from local_server.base_model import DEFAULT_MODEL, DTYPES, pick_dtype, prepare_model
    from local_server.chat_format import use_turn_format
    from local_server.server import CACHE_DIR
    from local_server.training import BASE_LEARNING_RATE, LORA, encode_example

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    source = prepare_model(DEFAULT_MODEL, CACHE_DIR / "models", progress=lambda *a: None)
    tokenizer = use_turn_format(AutoTokenizer.from_pretrained(source))
    model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[pick_dtype("cpu")])
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=BASE_LEARNING_RATE)
    encoded = [encode_example(tokenizer, e["messages"]) for e in datasets.hobanse_chat_examples(SYSTEM)]

    def step(number):
        rows = [encoded[(number * batch + i) % len(encoded)] for i in range(batch)]
        width = max(len(ids) for ids, _ in rows)  # right padding, masked out of attention and loss
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
        predicts = torch.zeros_like(labels, dtype=torch.bool)
        predicts[:, :-1] = labels[:, 1:] != -100
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=predicts, use_cache=False).logits
        F.cross_entropy(logits.flatten(end_dim=-2).float(), labels[:, 1:][predicts[:, :-1]]).backward()
        optimizer.step()
        optimizer.zero_grad()

    step(0)  # warm-up
    start.wait(timeout=STEP_TIMEOUT_SECONDS)  # a sibling that died breaks the barrier instead of hanging here
    started = time.monotonic()
    for number in range(1, steps + 1):
        step(number)
    rates.put(steps * batch / (time.monotonic() - started))


def step_rates(processes: int, threads: int, batch: int, steps: int) -> float:
    """Examples per second summed over `processes` processes stepping at the same time."""
    context = multiprocessing.get_context("spawn")
    start, rates = context.Barrier(processes), context.Queue()
    running = [context.Process(target=_step_rate, args=(threads, batch, steps, start, rates))
               for _ in range(processes)]
    for process in running:
        process.start()
    total = sum(rates.get(timeout=STEP_TIMEOUT_SECONDS) for _ in running)  # a died process: queue.Empty
    for process in running:
        process.join()
    return total


def shared_pass_bound(steps: int) -> None:
    cores = available_cores()
    one_worker = step_rates(1, cores, 1, steps)
    report(f"1 worker, {cores} threads, batch 1 (--workers 1)", f"{one_worker:.3g} ex/s")
    separate = step_rates(cores, 1, 1, steps)
    report(f"{cores} workers, 1 thread each, batch 1 (--workers {cores})", f"{separate:.3g} ex/s",
           f"{separate / one_worker:.2f}x --workers 1")
    single = step_rates(1, 1, 1, steps)
    report("1 process, 1 thread, batch 1", f"{single:.3g} ex/s")
    for jobs in (2, 4):
        shared = step_rates(1, 1, jobs, steps)
        report(f"1 process, 1 thread, padded batch {jobs} (a shared pass for {jobs} jobs in one worker, upper bound)",
               f"{shared:.3g} ex/s", f"{shared / single:.2f}x batch 1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["jobs", "steps", "both"], default="both")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (jobs)")
    parser.add_argument("--jobs", type=int, default=4, help="호반스 jobs created at once (jobs)")
    parser.add_argument("--epochs", type=int, default=NOTEBOOK_03_HYPERPARAMETERS["n_epochs"], help="(jobs)")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per process (steps)")
    args = parser.parse_args()
    print(f"{available_cores()} cores; other work on this machine slows every figure alike only if it is steady",
          flush=True)
    if args.part in ("steps", "both"):
        shared_pass_bound(args.steps)
    if args.part in ("jobs", "both"):
        seconds = {workers: class_of_jobs(workers, args.jobs, args.epochs) for workers in args.workers}
        first = args.workers[0]
        for workers in args.workers[1:]:
            report(f"throughput, --workers {workers} vs --workers {first}", f"{seconds[first] / seconds[workers]:.2f}x",
                   "≥ 2x for a class (issue 16.7)")


if __name__ == "__main__":
    main()
