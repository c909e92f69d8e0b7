"""Fine-tuning jobs: a scheduler thread in the server and up to `workers` training worker processes at a time, the
queue fair.

Each worker is a separate process so the server keeps answering while a job trains, its memory is
returned when it ends, and a crash in training cannot take the API down. Jobs move
validating_files → queued → running → succeeded | failed | cancelled, exactly as OpenAI's do; the
rest wait `queued`, in round-robin order of their owners (start_order), each told its place in the queue. The CPU
cores are divided between the workers (threads_per_worker). Jobs on the same base model do not share one pass over it:
batching their rows gained at most 1.19x per thread here (README). Everything a job produces (events, checkpoints, the
model) goes through the Store, so it survives a restart. A job whose `model` is a fine-tuned model of this server
continues training that model's adapter, as OpenAI allows; the new model is named after the base model, like OpenAI's.
"""
from __future__ import annotations

import base64
import csv
import io
import itertools
import multiprocessing
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import chat_data

from .base_model import DEFAULT_MODEL
from .errors import disk_full_message, is_disk_full
from .store import JOB_STARTED, Store, now
from .training import BASE_LEARNING_RATE, RESULT_COLUMNS, TrainingSpec, resolve_hyperparameters, train

CANCEL_GRACE_SECONDS = 30  # a cancelled worker stops within a step; after this it is terminated
EXIT_DISK_FULL = 28  # a worker's exit code when the disk was too full even to record why (errno ENOSPC)
CORES_PER_DEFAULT_WORKER = 2  # see default_workers
# How much lower a training worker's CPU priority is than the server's (Unix nice). A chat answer is waited for at
# the screen and a job is not: with equal priority, 8 students' chats while one job trained took p50 47.8 s, at +10
# 3.5 s (benchmarks/classroom_bench.py). The kernel then gives the server about ten times the worker's share of a
# contested core, and training still has every core the server leaves idle.
TRAINING_NICENESS = 10


def available_cores() -> int:
    """The cores this process may run on (a container or taskset may allow fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """--workers when not given: one worker for every two cores, at least one. A worker keeps its share of the cores
    even when it trains alone, so a learner alone with the server (the course's case) still trains their one job on two
    threads. On this 2-core machine, quiet, 4 호반스 jobs took 109 s on one two-thread worker and 111 s on two
    one-thread workers, with 1.3 GiB more memory (each worker holds its own copy of the base model); only a busy
    machine favoured one-thread workers (README, benchmarks/parallel_training_bench.py): 8 students training and
    chatting at once finished 1.27x sooner on two (benchmarks/classroom_bench.py), so a class server may raise it."""
    return max(1, available_cores() // CORES_PER_DEFAULT_WORKER)


def threads_per_worker(workers: int) -> int:
    """Each worker's share of the cores, so that the workers together never ask for more threads than there are cores.
    All the cores go to training, none are held back for the serving engine in the server process: it is idle
    between chat requests (a learner trains, then asks), and a core reserved for it would stand idle through every
    training job. While a chat request runs during training, the two share the cores and both slow down."""
    return max(1, available_cores() // workers)


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's shape `ft:<base>:<org>:<suffix>:<id>`; the organisation of a local model is `local`."""
    return f"ft:{base}:local:{suffix or ''}:{job_id.removeprefix('ftjob-')[:8]}"


# The packaged GGUF (base_model.GGUF_SHA256) as gguf.GGUFReader lists it: despite the name Q4_K_M, only 24M of its
# 268M weights are 4-bit (Q4_K, attn_output); the embedding and attn_v are Q8_0 (169M), attn_q/k and ffn_gate/up
# Q5_0 (63M), ffn_down Q6_K (12M).
PACKAGED_WEIGHTS = f"{DEFAULT_MODEL} Q4_K_M GGUF (quantised to 4-8 bits)"


def base_weights_origin(base_model_id: str, model_source: str, dtype: str) -> str:
    """Where the frozen base weights come from, in a few words for the learner (the LoRA event shows it)."""
    source = Path(model_source)
    if base_model_id == DEFAULT_MODEL and source.parts[-2:] == ("hf", DEFAULT_MODEL):  # prepare_model's conversion
        return f"{PACKAGED_WEIGHTS}, expanded to {dtype}"
    if source.is_dir():
        return f"the folder {source} (Hugging Face weights, not a GGUF), loaded as {dtype}"
    return f"{model_source} from the Hugging Face Hub (not a GGUF), loaded as {dtype}"


def read_examples(store: Store, file_id: str) -> list[list[dict]]:
    file = store.file(file_id)
    if file is None:
        raise ValueError(f"파일 {file_id} 이(가) 지워졌습니다 (file not found).")
    return [example["messages"] for example in chat_data.read_jsonl(store.file_path(file))]


def start_order(queued: list[dict], last_start: dict[str | None, int]) -> list[dict]:
    """The order queued jobs will start in, a fair queue: round-robin by owner. The owner whose job started least
    recently (or never; ties: who queued first) goes first, then the next owner, and so on; then each owner's second
    job in the same order of owners (after a round, the owners' last starts are in that order). An owner's own jobs go
    in creation order. Jobs without an owner (a server without --keys) are one owner."""
    by_owner: dict[str | None, list[dict]] = {}
    for job in sorted(queued, key=lambda j: j["seq"]):
        by_owner.setdefault(job["owner"], []).append(job)
    owners = sorted(by_owner, key=lambda owner: (last_start.get(owner, 0), by_owner[owner][0]["seq"]))
    rounds = itertools.zip_longest(*(by_owner[owner] for owner in owners))
    return [job for round_ in rounds for job in round_ if job is not None]


@dataclass
class Worker:
    """A running training worker process and when its job was seen cancelled (for CANCEL_GRACE_SECONDS)."""
    process: multiprocessing.Process
    cancelled_at: float | None = None


class Scheduler(threading.Thread):
    """Moves jobs along and runs at most `workers` training worker processes at a time, one job each."""

    def __init__(self, store: Store, base_model_id: str, model_source: str, device: str, dtype: str = "float32",
                 poll_seconds: float = 0.2, workers: int = 1):
        super().__init__(name="job-scheduler", daemon=True)
        self.store, self.base_model_id = store, base_model_id
        self.model_source, self.device, self.dtype = model_source, device, dtype
        self.poll_seconds = poll_seconds
        self.max_workers, self.threads = workers, threads_per_worker(workers)
        self.workers: dict[str, Worker] = {}  # by job id
        self.queue_places: dict[str, int] = {}  # queued job id -> the place its latest queue event announced
        self._stopping = threading.Event()

    def recover(self) -> None:
        """After a restart: a job that was training when the server died cannot resume."""
        for job in self.store.jobs_with_status("running"):
            message = ("서버가 학습 도중 멈춰서 이 작업은 실패로 처리되었습니다. 같은 작업을 다시 만드세요 "
                       "(the server stopped while this job was running).")
            self.store.update_job(job["id"], status="failed", finished_at=now(), estimated_finish=None,
                                  error={"code": "server_restarted", "message": message, "param": None},
                                  event=message, level="error")

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)  # no tick runs after this: the workers below are all there are
        for worker in self.workers.values():
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self.workers.values():
            worker.process.join(10)

    def run(self) -> None:
        last_failure = None
        while not self._stopping.wait(self.poll_seconds):
            try:
                self._tick()
                last_failure = None
            except Exception:  # the scheduler must outlive any one bad job
                failure = traceback.format_exc()
                if failure != last_failure:  # a failure that repeats every tick (a full disk) is printed once
                    print(failure, file=sys.stderr, flush=True)
                last_failure = failure

    def _tick(self) -> None:
        for job in self.store.jobs_with_status("validating_files"):
            self._validate(job)
        for job_id in list(self.workers):
            self._watch_worker(job_id)
        if len(self.workers) < self.max_workers:  # one start a tick: the next tick sees the new worker
            queued = self.store.jobs_with_status("queued")
            if queued:
                self._start(self._next_job(queued))
        self._announce_queue_places()

    def _next_job(self, queued: list[dict]) -> dict:
        """The queued job to start now: the head of the fair queue."""
        return start_order(queued, self.store.last_start_by_owner())[0]

    def _announce_queue_places(self) -> None:
        """An event for each queued job whose place in the queue is new or has changed: its place and when it may
        start. The estimate: the running job ends at its estimated_finish (known after its first step; until then, one
        average job from now), and every job ahead in the queue takes as long as the jobs that succeeded on this server
        took on average (start to finish), shared out over the workers as they come free."""
        places = {job["id"]: place for place, job in enumerate(
            start_order(self.store.jobs_with_status("queued"), self.store.last_start_by_owner()), start=1)}
        moved = {job_id: place for job_id, place in places.items() if self.queue_places.get(job_id) != place}
        self.queue_places = places
        if not moved:
            return
        average = self.store.average_job_seconds()
        if average is not None:  # when each worker is free: a running job's estimated_finish, an idle worker now
            free_at = sorted([max(job["estimated_finish"] or now() + round(average), now())
                              for job in self.store.jobs_with_status("running")]
                             + [now()] * max(0, self.max_workers - len(self.workers)))
        for job_id, place in moved.items():
            if average is None:
                start, when = None, "예상 시작 시각은 이 서버에서 첫 작업이 끝나면 알려 드립니다"
            else:  # the jobs ahead take the workers in turn, each as long as the average
                start = free_at[(place - 1) % len(free_at)] + round((place - 1) // len(free_at) * average)
                took = f"{average:.0f}초" if average < 90 else f"{average / 60:.0f}분"
                when = (f"예상 시작 약 {time.strftime('%H:%M', time.localtime(start))} (이 서버에서 끝난 작업의 "
                        f"평균 {took} 기준)")
            self.store.add_event(job_id, f"대기열 {place}번째, {when} (queue position {place})",
                                 data={"queue_position": place, "estimated_start": start})

    def _validate(self, job: dict) -> None:
        try:
            n_examples = len(read_examples(self.store, job["training_file"]))
            resolved = resolve_hyperparameters(n_examples, **job["hyperparameters"])
        except ValueError as err:
            self._fail(job["id"], "invalid_training_file", str(err), "training_file", ("validating_files",))
            return
        self.store.update_job(job["id"], ("validating_files",), status="queued", hyperparameters=resolved,
                              event="Files validated, moving job to queued state")

    def _start(self, job: dict) -> None:
        if not self.store.update_job(job["id"], ("queued",), status="running", event=JOB_STARTED):
            return
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks copied
        process = context.Process(target=run_job, name=f"train-{job['id']}", daemon=True,
                                  args=(str(self.store.data_dir), job["id"], self.base_model_id,
                                        self.model_source, self.device, self.dtype, self.threads,
                                        TRAINING_NICENESS))
        try:
            process.start()
        except Exception as err:  # noqa: BLE001 - e.g. no memory for a new process: the job fails, the queue goes on
            self._fail(job["id"], "training_crashed", f"학습 프로세스를 시작하지 못했습니다: {type(err).__name__}: {err}",
                       None, ("running",))
            return
        self.workers[job["id"]] = Worker(process)

    def _watch_worker(self, job_id: str) -> None:
        job, worker = self.store.job(job_id), self.workers[job_id]
        if worker.process.is_alive():
            if job["status"] == "cancelled":
                worker.cancelled_at = worker.cancelled_at or time.monotonic()
                if time.monotonic() - worker.cancelled_at > CANCEL_GRACE_SECONDS:
                    worker.process.terminate()
            return
        worker.process.join()
        if job["status"] == "running" and worker.process.exitcode == EXIT_DISK_FULL:
            self._fail(job["id"], "disk_full", disk_full_message(self.store.data_dir), None, ("running",))
        elif job["status"] == "running":  # the process ended without finishing the job: it crashed
            self._fail(job["id"], "training_crashed",
                       f"학습 프로세스가 예기치 않게 끝났습니다 (exit code {worker.process.exitcode}). "
                       "메모리가 부족했을 수 있습니다: 배치 크기를 줄이거나 다른 프로그램을 닫고 다시 만드세요.",
                       None, ("running",))
        del self.workers[job_id]

    def _fail(self, job_id: str, code: str, message: str, param: str | None, states: tuple[str, ...]) -> None:
        fail_job(self.store, job_id, code, message, param, states)


def fail_job(store: Store, job_id: str, code: str, message: str, param: str | None, states: tuple[str, ...]) -> None:
    error = {"code": code, "message": message, "param": param}
    store.update_job(job_id, states, status="failed", error=error, finished_at=now(), estimated_finish=None,
                     event=message, level="error")


class _JobSink:
    """What the training module reports, turned into job events, checkpoints and an estimate (TrainingSink)."""

    def __init__(self, store: Store, job: dict, model_id: str):
        self.store, self.job, self.model_id = store, job, model_id
        self.started = time.monotonic()

    def message(self, text: str, data: dict | None = None) -> None:
        self.store.add_event(self.job["id"], text, data=data)

    def metrics(self, row: dict) -> None:
        step, total = row["step"], row["total_steps"]
        self.store.add_event(self.job["id"], f"Step {step}/{total}: training loss={row['train_loss']:.2f}"
                             + (f", validation loss={row['valid_loss']:.2f}" if row.get("valid_loss") is not None
                                else ""), type="metrics", data=row)
        per_step = (time.monotonic() - self.started) / step
        self.store.update_job(self.job["id"], ("running",), estimated_finish=now() + round(per_step * (total - step)))

    def checkpoint(self, step: int, epoch: int, adapter_dir: Path, metrics: dict) -> None:
        self.store.add_checkpoint(self.job["id"], step, f"{self.model_id}:ckpt-step-{step}", adapter_dir,
                                  {"step": step, **metrics})
        self.store.add_event(self.job["id"], f"Checkpoint created at step {step}")

    def should_stop(self) -> bool:
        """Cancelled, or the server is gone: a daemon worker is ended only by a server that exits normally, and one
        that is killed (SIGKILL, out of memory, a closed terminal) would leave it training for nobody. The job stays
        "running" and the next server's recover() marks it failed."""
        server = multiprocessing.parent_process()  # None when run_job is called in the test process itself
        return (server is not None and not server.is_alive()) or self.store.job(self.job["id"])["status"] != "running"


def result_csv(rows: list[dict]) -> bytes:
    """The result file as OpenAI serves it: a CSV of per-step metrics, base64-encoded."""
    out = io.StringIO()
    writer = csv.DictWriter(out, RESULT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in RESULT_COLUMNS})
    return base64.b64encode(out.getvalue().encode("utf-8"))


def run_job(data_dir: str, job_id: str, base_model_id: str, model_source: str, device: str,
            dtype: str = "float32", threads: int | None = None, niceness: int = 0) -> None:
    """The training worker process: train one job for real and record everything it produces. `threads`: this
    worker's share of the cores (threads_per_worker); None keeps torch's (when called in the test process itself).
    `niceness`: how much to lower this process's CPU priority (TRAINING_NICENESS); 0 when called in the test process."""
    if threads is not None:  # before any torch work: the inter-op pool can only be sized before it starts
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    if niceness and hasattr(os, "nice"):  # Windows has no nice(); there the worker keeps the server's priority
        os.nice(niceness)
    store = Store(Path(data_dir))
    job = store.job(job_id)
    try:
        threads = torch.get_num_threads()
        store.add_event(job_id, f"이 컴퓨터에서 {base_model_id} 모델을 LoRA 로 학습합니다 (장치: {device}, {dtype}, "
                                f"CPU 스레드 {threads}개). OpenAI 서버가 아니라 이 과정의 로컬 서버가 만든 작업입니다.",
                        data={"device": device, "dtype": dtype, "threads": threads,
                              "niceness": os.nice(0) if hasattr(os, "nice") else None})
        parent_adapter = None
        if job["model"] != base_model_id:  # continue training a fine-tuned model (api.create_job checked it existed)
            parent = store.model(job["model"])
            if parent is None or not Path(parent["adapter_path"]).is_dir():
                fail_job(store, job_id, "model_not_available",
                         f"이어서 학습할 모델 '{job['model']}' 이(가) 작업이 시작되기 전에 지워졌습니다. 있는 모델로 작업을 "
                         f"다시 만드세요 (The model {job['model']} does not exist anymore).", "model", ("running",))
                return
            parent_adapter = Path(parent["adapter_path"])
            store.add_event(job_id, f"미세 조정한 모델 {job['model']} 의 LoRA 어댑터에서 이어서 학습합니다. 새 모델의 "
                                    f"이름은 기본 모델 {base_model_id} 로 시작합니다 (continuing from {job['model']}).")
        hyper = job["hyperparameters"]
        model_id = fine_tuned_model_id(base_model_id, job["suffix"], job_id)
        spec = TrainingSpec(
            base_model=model_source, device=device, base_dtype=dtype, parent_adapter=parent_adapter,
            base_weights=base_weights_origin(base_model_id, model_source, dtype),
            training=read_examples(store, job["training_file"]),
            validation=read_examples(store, job["validation_file"]) if job["validation_file"] else None,
            n_epochs=hyper["n_epochs"], batch_size=hyper["batch_size"],
            learning_rate=BASE_LEARNING_RATE * hyper["learning_rate_multiplier"], seed=job["seed"],
            output_dir=store.adapters_dir / job_id)
        outcome = train(spec, _JobSink(store, job, model_id))
        if outcome.stopped:
            return
        store.finish_job(job_id, model_id, outcome.final_adapter, result_csv(outcome.rows), outcome.trained_tokens)
    except Exception as err:  # any failure ends the job as failed with a message, never half-done
        traceback.print_exc()
        disk_full = is_disk_full(err)
        message = (disk_full_message(store.data_dir) if disk_full else str(err) if isinstance(err, ValueError)
                   else f"학습 중 오류가 났습니다: {type(err).__name__}: {err}")
        try:
            fail_job(store, job_id, "disk_full" if disk_full else "training_error", message, None, ("running",))
        except Exception:
            if not disk_full:
                raise
            sys.exit(EXIT_DISK_FULL)  # not even room for the job's row: the scheduler records it when it can
