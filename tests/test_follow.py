"""helpers.follow: status lines as polled, and a progress bar from the job's metrics events, the same in replay."""
from __future__ import annotations

import re

import httpx2
import openai
import pytest
from nbval.plugin import coalesce_streams
from nbformat.v4 import new_output

from helpers import chat_data, course, datasets, follow, paths
from helpers.recordings import RecordingTransport
from local_server.server import Settings
from tests.running_server import RunningServer, upload

JOB = "ftjob-1"
POLL = 0.2  # seconds between polls against the real server (replay does not wait)


def last_frames(text: str) -> str:
    """What a notebook shows (and nbval compares): every line as its last '\\r' frame."""
    return coalesce_streams([new_output("stream", name="stdout", text=text)])[0].text


def fake_api(polls):
    """An API whose job goes through `polls`: (status, newest metrics data or None) for each retrieve."""
    seen = {"retrieve": 0}

    def handler(request):
        if request.url.path.endswith("/events"):
            status, data = polls[seen["retrieve"] - 1]
            events = [{"id": "ev-2", "object": "fine_tuning.job.event", "created_at": 2, "level": "info",
                       "message": "Checkpoint created", "type": "message"}]
            if data:
                events.append({"id": "ev-1", "object": "fine_tuning.job.event", "created_at": 1, "level": "info",
                               "message": f"Step {data['step']}", "type": "metrics", "data": data})
            return httpx2.Response(200, json={"object": "list", "data": events, "has_more": False})
        status, _ = polls[seen["retrieve"]]
        seen["retrieve"] += 1
        return httpx2.Response(200, json={
            "id": JOB, "object": "fine_tuning.job", "created_at": 1, "model": "m", "organization_id": "org",
            "status": status, "training_file": "file-1", "validation_file": None, "result_files": [], "seed": 1,
            "hyperparameters": {"n_epochs": 1}, "error": None, "fine_tuned_model": None, "finished_at": None,
            "trained_tokens": None})
    return handler


def step(n, total=10, loss=1.0):
    return {"step": n, "total_steps": total, "train_loss": loss, "train_mean_token_accuracy": 0.5}


def test_status_once_each_and_one_bar_that_moves_with_the_steps(capsys):
    polls = [("validating_files", None), ("running", None), ("running", step(3, loss=2.5)),
             ("running", step(3, loss=2.5)), ("running", step(7, loss=0.5)), ("succeeded", step(10, loss=0.0123))]
    client = openai.OpenAI(api_key="x", base_url="https://api.test/v1", max_retries=0,
                           http_client=openai.DefaultHttpxClient(transport=httpx2.MockTransport(fake_api(polls))))
    job = follow.follow(client, JOB, poll_seconds=0)
    out = capsys.readouterr().out
    assert job.status == "succeeded"
    assert last_frames(out) == ("상태: validating_files\n상태: running\n"
                                "학습 100%|██████████| 10/10 단계, 학습 손실 0.01\n상태: succeeded\n")
    frames = re.findall(r"\d+/10 단계[^\r\n]*", out)  # a frame per new step; the repeated step 3 adds none
    assert frames == ["3/10 단계, 학습 손실 2.50", "7/10 단계, 학습 손실 0.50", "10/10 단계, 학습 손실 0.01",
                      "10/10 단계, 학습 손실 0.01"]  # the last one: close() leaves the final frame


def test_a_job_already_ended_at_the_first_poll_still_shows_its_progress(capsys):
    polls = [("failed", step(4))]
    client = openai.OpenAI(api_key="x", base_url="https://api.test/v1", max_retries=0,
                           http_client=openai.DefaultHttpxClient(transport=httpx2.MockTransport(fake_api(polls))))
    assert follow.follow(client, JOB, poll_seconds=0).status == "failed"
    assert last_frames(capsys.readouterr().out) == "학습  40%|████      | 4/10 단계, 학습 손실 1.00\n상태: failed\n"


@pytest.fixture
def server(tiny_model, tmp_path):
    running = RunningServer(Settings(data_dir=tmp_path / "server-data", model=str(tiny_model)))
    yield running
    running.close()


def test_real_training_on_the_local_server_then_the_same_output_in_replay(server, clean_env, capsys):
    """The local server's metrics events carry what the bar needs; replaying the recording shows the same."""
    tmp_path = clean_env
    recording = paths.RECORDINGS_DIR / "follow.json"
    transport = RecordingTransport(httpx2.HTTPTransport(), recording, server.base_url, "시험", "follow")
    client = openai.OpenAI(api_key="x", base_url=server.base_url, max_retries=0, timeout=60,
                           http_client=openai.DefaultHttpxClient(transport=transport))
    path = chat_data.write_jsonl(datasets.hobanse_chat_examples(), tmp_path / "train.jsonl")
    job = client.fine_tuning.jobs.create(model=server.model, training_file=upload(client, path).id,
                                         method={"type": "supervised", "supervised": {"hyperparameters": {
                                             "n_epochs": 1, "batch_size": 1}}})
    assert follow.follow(client, job.id, poll_seconds=POLL).status == "succeeded"
    recorded = capsys.readouterr().out
    shown = last_frames(recorded)
    assert re.search(r"^학습 100%\|██████████\| 15/15 단계, 학습 손실 \d+\.\d\d$", shown, re.MULTILINE), shown
    statuses = re.findall(r"^상태: (\w+)$", shown, re.MULTILINE)
    assert statuses[-1] == "succeeded" and len(statuses) == len(set(statuses))
    assert set(statuses) <= {"validating_files", "queued", "running", "succeeded"}

    replay_client = course.connect("replay", "follow")
    capsys.readouterr()  # the line that says replay mode
    assert follow.follow(replay_client, job.id, poll_seconds=POLL).status == "succeeded"
    replayed = capsys.readouterr().out
    assert replayed == shown and "\r" not in replayed  # what the recorded run left on screen, without its frames
