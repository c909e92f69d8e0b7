"""Benchmark of the local fine-tuning server with the real packaged model: each figure beside its target.

    python benchmarks/local_server_bench.py                  # a few minutes on a 2-core CPU
    python benchmarks/local_server_bench.py --newsgroups     # also trains baseball/hockey (several minutes more)
    python benchmarks/local_server_bench.py --serving-only   # only the chat latency under concurrent requests (~2 min)

It starts `python -m local_server` on a free loopback port with a fresh data directory (the converted
model cache is the server's default one, so only the very first run converts the GGUF), then drives it with the openai SDK
exactly as the notebooks do. Peak memory is each process's VmHWM from /proc (Linux only).
Answers and scores go to benchmarks/output/ for reading.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import openai
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import chat_data, classification, datasets  # noqa: E402
from helpers.hobanse_eval import eval_questions, score_answer  # noqa: E402
from tests.net import free_port, wait_until  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "output"
SYSTEM = "you are factual chatbot."


def report(name: str, value: str, target: str = "") -> None:
    print(f"{name:<58} {value:>14}   {target}", flush=True)


class PeakMemory(threading.Thread):
    """Samples VmHWM (peak resident memory) of a process and its children until stopped."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peaks, self.stopped = pid, {}, threading.Event()
        self.peak_total = 0  # the most the server and its workers held at one sample, together (VmRSS summed)

    def run(self):
        while not self.stopped.wait(0.2):
            total = 0
            for pid in [self.pid, *children(self.pid)]:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                peak, now = re.search(r"VmHWM:\s+(\d+)", status), re.search(r"VmRSS:\s+(\d+)", status)
                if peak:  # a process that has exited but not been reaped (a zombie) has no memory figures
                    self.peaks[pid] = max(self.peaks.get(pid, 0), int(peak.group(1)))
                    total += int(now.group(1))
            self.peak_total = max(self.peak_total, total)

    def gib(self, pid: int | None = None) -> float:
        if pid is not None:
            return self.peaks.get(pid, 0) / 2**20
        return max((kb for p, kb in self.peaks.items() if p != self.pid), default=0) / 2**20

    def total_gib(self) -> float:
        return self.peak_total / 2**20


def children(pid: int) -> list[int]:
    """All descendants: a process started from a thread is listed under that thread's task, not the main one."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [grandchild for child in found for grandchild in children(child)]


def start_server(data_dir: Path, options: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "local_server", "--port", str(port), "--data-dir", str(data_dir),
                                *options], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        print("  server:", line.rstrip(), flush=True)
        if line.startswith("로컬 미세 조정 서버"):
            load = float(re.search(r"\(([\d.]+)초에 불러옴\)", line).group(1))
            report("model load from the converted cache", f"{load:.1f} s", "≤ 5 s")
            break
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # keep draining
    wait_until(lambda: health(port), 120, "the server to listen")  # it prints its line before it binds the port
    return process, f"http://127.0.0.1:{port}/v1"


def health(port: int) -> bool:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    except httpx2.TransportError:
        return False


def upload(client, path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


def train(client, path, suffix, valid_path=None, **hyperparameters):
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(model="gemma-3-270m", training_file=upload(client, path).id, suffix=suffix,
                                         validation_file=upload(client, valid_path).id if valid_path else None,
                                         seed=42, hyperparameters=hyperparameters or None)
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.5)
        job = client.fine_tuning.jobs.retrieve(job.id)
    if job.status != "succeeded":
        raise SystemExit(f"job {job.status}: {job.error}")
    return job, time.monotonic() - started


def ask_all(client, model, questions, max_tokens=60):
    def ask(question):
        response = client.chat.completions.create(
            model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            temperature=0, max_tokens=max_tokens)
        return response.choices[0].message.content
    with ThreadPoolExecutor(len(questions)) as pool:
        return list(pool.map(ask, questions))


def latencies(client, model, questions, stagger: float, max_tokens=40) -> list[float]:
    """Seconds each request waited for its own answer, sent all at once (stagger 0) or one every `stagger` seconds.

    Few-shot text continued until the line ends (stop "\\n", as notebook 04 asks the base model): answers of
    different lengths, so a batch's rows finish at different steps."""
    examples = "\n\n".join(f"질문: {q}\n답: {a}" for q, a in datasets.hobanse_qa().head(3).itertuples(index=False))

    def ask(numbered):
        number, question = numbered
        time.sleep(number * stagger)
        started = time.monotonic()
        client.completions.create(model=model, prompt=f"{examples}\n\n질문: {question}\n답:", stop=["\n"],
                                  temperature=0, max_tokens=max_tokens)
        return time.monotonic() - started
    with ThreadPoolExecutor(len(questions)) as pool:
        return list(pool.map(ask, enumerate(questions)))


def report_latencies(what: str, seconds: list[float], target: str = "") -> None:
    p50, p95 = (float(pd.Series(seconds).quantile(q)) for q in (0.5, 0.95))
    report(f"{what}: p50 / p95", f"{p50:.1f} / {p95:.1f} s", target)


def serving(client, model: str, concurrent: int) -> None:
    questions = list(eval_questions()["question"][:concurrent])
    report_latencies(f"{concurrent} requests sent together", latencies(client, model, questions, 0),
                     "p50 < p95 (each answer returns when its own row is done)")
    report_latencies(f"{concurrent} requests, one every 0.5 s", latencies(client, model, questions, 0.5),
                     "later requests join the running batch")


def score_posts(client, model, posts, system):
    def ask(text):
        choice = client.chat.completions.create(
            model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
            max_tokens=1, temperature=0, logprobs=True, top_logprobs=2).choices[0]
        return classification.label_probabilities(choice.logprobs.content[0].top_logprobs)[0]
    started = time.monotonic()
    with ThreadPoolExecutor(len(posts)) as pool:
        probabilities = list(pool.map(ask, posts))
    return probabilities, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--newsgroups", action="store_true", help="also fine-tune baseball/hockey (slow)")
    parser.add_argument("--serving-only", action="store_true",
                        help="only the latency of concurrent requests to the base model (no training)")
    parser.add_argument("--concurrent", type=int, default=8, help="requests in the latency figures (default 8)")
    args = parser.parse_args()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="local-server-bench-"))
    process, base_url = start_server(data_dir)
    memory = PeakMemory(process.pid)
    memory.start()
    client = openai.OpenAI(api_key="local", base_url=base_url, max_retries=0, timeout=600)
    try:
        serving(client, "gemma-3-270m", args.concurrent)
        if args.serving_only:
            return
        qa = datasets.hobanse_qa()
        path = chat_data.write_jsonl(datasets.hobanse_chat_examples(SYSTEM), OUTPUT / "hobanse_train.jsonl")
        job, seconds = train(client, path, "hobanse")
        report(f"호반스 15 pairs, default epochs ({job.hyperparameters.n_epochs}): create → succeeded",
               f"{seconds:.1f} s", "≤ 90 s")
        report("peak RSS while training (worker process)", f"{memory.gib():.2f} GiB", "≤ 4 GiB")

        evals = eval_questions()
        started = time.monotonic()
        held_out = ask_all(client, job.fine_tuned_model, list(evals["question"]))
        report("24 held-out 호반스 answers (≤ 60 tokens) sent together", f"{time.monotonic() - started:.1f} s",
               "≤ 60 s")
        trained = ask_all(client, job.fine_tuned_model, list(qa["question"]))
        exact = sum(a.strip() == b.strip() for a, b in zip(trained, qa["answer"]))
        scores = [score_answer(a, f) for a, f in zip(held_out, evals["facts"])]
        report("training questions answered exactly", f"{exact}/15")
        report("held-out questions fully right (score_answer = 1)", f"{sum(s == 1 for s in scores)}/24")
        pd.DataFrame({"question": qa["question"], "trained_answer": qa["answer"], "model_answer": trained}).to_csv(
            OUTPUT / "hobanse_training_answers.csv", index=False)
        pd.DataFrame({"question": evals["question"], "facts": evals["facts"], "model_answer": held_out,
                      "score": scores}).to_csv(OUTPUT / "hobanse_held_out_answers.csv", index=False)

        bunch = datasets.newsgroups_sample()
        train_df, valid_df, _ = classification.prepare_split(bunch)
        system = classification.SYSTEM_MESSAGE
        _, seconds = score_posts(client, job.fine_tuned_model, list(valid_df["prompt"]), system)
        report(f"{len(valid_df)} baseball/hockey posts scored with logprobs, sent together", f"{seconds:.1f} s",
               "≤ 6 s")
        if args.newsgroups:
            train_path, valid_path = classification.write_chat_files(train_df, valid_df, system, OUTPUT)
            zero_shot, _ = score_posts(client, "gemma-3-270m", list(valid_df["prompt"]), system)
            job, seconds = train(client, train_path, "baseball-hockey", valid_path)
            report(f"baseball/hockey {len(train_df)}/{len(valid_df)}, {job.hyperparameters.n_epochs} epochs, "
                   f"batch {job.hyperparameters.batch_size}", f"{seconds:.0f} s")
            report("peak RSS while training (worker process)", f"{memory.gib():.2f} GiB", "≤ 4 GiB")
            tuned, _ = score_posts(client, job.fine_tuned_model, list(valid_df["prompt"]), system)
            for name, probabilities in (("zero-shot base model", zero_shot), ("fine-tuned", tuned)):
                predicted = ["baseball" if p["baseball"] >= 0.5 else "hockey" for p in probabilities]
                accuracy = (pd.Series(predicted, index=valid_df.index) == valid_df["completion"]).mean()
                report(f"baseball/hockey held-out accuracy, {name}", f"{accuracy:.2f}")
        report("peak RSS while serving (server process)", f"{memory.gib(process.pid):.2f} GiB", "≤ 2.5 GiB")
    finally:
        memory.stopped.set()
        process.terminate()
        process.wait(30)


if __name__ == "__main__":
    main()
