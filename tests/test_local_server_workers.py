"""Parallel training (`--workers N`): a server with two workers, over real HTTP through the openai SDK, tiny model."""
from __future__ import annotations

import os
import signal

import pytest

from helpers import chat_data, datasets
from local_server import jobs
from local_server.__main__ import parse_args
from local_server.server import Settings
from tests.net import wait_until
from tests.running_server import RunningServer, upload, wait_for
from tests.tiny_model import make_tiny_model

LONG = {"n_epochs": 50}  # 750 steps: trains far longer than any test here waits


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tiny_model = make_tiny_model(tmp_path_factory.mktemp("workers") / "tiny-gemma0")  # its id on the server
    running = RunningServer(Settings(data_dir=tmp_path_factory.mktemp("server-data"), model=str(tiny_model),
                                     workers=2))
    yield running
    running.close()


@pytest.fixture
def client(server):
    client = server.client()
    yield client
    wait_until(lambda: not server.local.scheduler.workers, jobs.CANCEL_GRACE_SECONDS + 30, "every worker to end")


@pytest.fixture
def training_file(client, tmp_path):
    return upload(client, chat_data.write_jsonl(datasets.hobanse_chat_examples(), tmp_path / "train.jsonl")).id


def create(client, training_file, suffix, hyperparameters):
    return client.fine_tuning.jobs.create(model="tiny-gemma0", training_file=training_file, suffix=suffix,
                                          hyperparameters=hyperparameters).id


def both_running(client, job_ids):
    return all(client.fine_tuning.jobs.retrieve(job_id).status == "running" for job_id in job_ids)


def steps(client, job_id) -> list[int]:
    return [e.data["step"] for e in client.fine_tuning.jobs.list_events(job_id, limit=1000) if e.type == "metrics"]


def both_training(client, job_ids):
    """Both jobs running and each past its first training step."""
    return both_running(client, job_ids) and all(steps(client, job_id) for job_id in job_ids)


def test_two_workers_train_two_jobs_at_once_each_with_its_share_of_the_cores(client, training_file):
    job_ids = [create(client, training_file, f"pair{n}", {"n_epochs": 3}) for n in range(2)]
    wait_until(lambda: both_running(client, job_ids), 60, "both jobs running at the same time")
    threads = []
    for job_id in job_ids:
        done = wait_for(client, job_id, ("succeeded", "failed"))
        assert done.status == "succeeded", done.error
        first = next(e for e in client.fine_tuning.jobs.list_events(job_id, limit=1000)
                     if e.message.startswith("이 컴퓨터에서"))
        assert f"CPU 스레드 {first.data['threads']}개" in first.message
        threads.append(first.data["threads"])
        if hasattr(os, "nice"):  # chats come first: the worker runs at a lower priority than the server
            assert first.data["niceness"] == min(19, os.nice(0) + jobs.TRAINING_NICENESS)
    assert threads == [jobs.threads_per_worker(2)] * 2
    assert sum(threads) <= max(2, jobs.available_cores())  # on one core (Settings allows it), one thread each


def test_cancelling_one_of_two_running_jobs_leaves_the_other_training(client, server, training_file):
    cancelled, other = (create(client, training_file, name, LONG) for name in ("cancelled", "other"))
    wait_until(lambda: both_training(client, [cancelled, other]), 120, "both jobs training")
    assert client.fine_tuning.jobs.cancel(cancelled).status == "cancelled"
    wait_until(lambda: cancelled not in server.local.scheduler.workers, jobs.CANCEL_GRACE_SECONDS + 30,
               "the cancelled job's worker to end")
    step_then = max(steps(client, other))
    wait_until(lambda: max(steps(client, other)) > step_then, 60, "the other job to train on")
    assert client.fine_tuning.jobs.retrieve(other).status == "running"
    client.fine_tuning.jobs.cancel(other)


def test_a_crashed_worker_fails_only_its_job(client, server, training_file):
    crashed, other = (create(client, training_file, name, LONG) for name in ("crashed", "other"))
    wait_until(lambda: both_training(client, [crashed, other]), 120, "both jobs training")
    os.kill(server.local.scheduler.workers[crashed].process.pid, signal.SIGKILL)  # as the out-of-memory killer does
    failed = wait_for(client, crashed, ("failed",), timeout=30)
    assert failed.error.code == "training_crashed" and "exit code -9" in failed.error.message
    step_then = max(steps(client, other))
    wait_until(lambda: max(steps(client, other)) > step_then, 60, "the other job to train on")
    assert client.fine_tuning.jobs.retrieve(other).status == "running"
    client.fine_tuning.jobs.cancel(other)


@pytest.mark.parametrize("workers", ["0", "-1", str(jobs.available_cores() + 1)])
def test_workers_outside_one_to_the_cores_is_a_command_line_error(workers, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--workers", workers])
    assert exited.value.code == 2 and "--workers" in capsys.readouterr().err


def test_the_default_follows_the_machine_and_the_threads_never_outnumber_the_cores(monkeypatch):
    assert parse_args([]).workers == jobs.default_workers()
    for cores, default in ((1, 1), (2, 1), (8, 4)):
        monkeypatch.setattr(jobs, "available_cores", lambda: cores)
        assert jobs.default_workers() == default
        for workers in range(1, cores + 1):
            assert 1 <= jobs.threads_per_worker(workers) and jobs.threads_per_worker(workers) * workers <= cores
    assert jobs.threads_per_worker(3) == 2  # 8 cores: two threads for each of 3 workers, 2 cores left over
