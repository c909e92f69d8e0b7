"""The local fine-tuning server through the unmodified openai SDK, over real HTTP, with a tiny random model.

Every object is parsed with the SDK's own pydantic types (`model_validate`, which checks field types
and literals strictly), so a shape the SDK would not accept fails here.
"""
from __future__ import annotations

import base64
import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pandas as pd
import pytest
from openai.types import Completion, FileDeleted, FileObject, Model, ModelDeleted
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from helpers import chat_data, datasets
from local_server.jobs import RESULT_COLUMNS
from local_server.server import Settings
from tests.net import wait_until
from tests.running_server import RunningServer, upload, wait_for
from tests.tiny_model import ROOT, make_tiny_model

SYSTEM = "you are factual chatbot."


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    running = RunningServer(Settings(data_dir=tmp_path_factory.mktemp("server-data"), model=str(tiny_model)))
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def hobanse_jsonl(tmp_path, name="train.jsonl", examples=None):
    return chat_data.write_jsonl(examples or datasets.hobanse_chat_examples(SYSTEM), tmp_path / name)


# ------------------------------------------------------------------------------------------------ files
def test_files_create_list_retrieve_content_delete(client, tmp_path):
    path = hobanse_jsonl(tmp_path)
    first, second = upload(client, path), upload(client, path)
    FileObject.model_validate(client.with_raw_response.files.retrieve(first.id).http_response.json())
    assert (first.filename, first.bytes, first.purpose, first.status) == ("train.jsonl", path.stat().st_size,
                                                                          "fine-tune", "processed")

    page = client.files.list(purpose="fine-tune", limit=1)
    assert [f.id for f in page.data] == [second.id] and page.has_more
    listed = client.with_raw_response.files.list(purpose="fine-tune").http_response.json()
    assert listed["first_id"] == second.id and listed["last_id"] is not None and not listed["has_more"]
    assert [f.id for f in client.files.list(purpose="fine-tune", after=second.id, limit=1).data] == [first.id]
    assert client.files.list(purpose="fine-tune-results").data == [] or all(
        f.purpose == "fine-tune-results" for f in client.files.list(purpose="fine-tune-results"))

    assert client.files.content(first.id).read() == path.read_bytes()
    deleted = client.with_raw_response.files.delete(first.id).http_response.json()
    FileDeleted.model_validate(deleted)
    assert deleted == {"id": first.id, "object": "file", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(first.id)


@pytest.mark.parametrize("content, expected", [
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
     b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
     b'{"messages": [oops]}\n', "3번째 줄"),
    (b'{"messages": [{"role": "user", "content": "only a question"}]}\n', "1번째 줄"),
    ("한글".encode("cp949") + b"\n", "UTF-8"),
    (b"", "비어"),
])
def test_bad_training_files_are_refused_with_their_line(client, tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    before = len(client.files.list().data)
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, path)
    body = caught.value.body
    assert expected in body["message"] and body["code"] == "invalid_file_format" and body["param"] == "file"
    assert len(client.files.list().data) == before  # nothing stored


def test_example_longer_than_the_context_is_refused(client, server, tmp_path):
    examples = datasets.hobanse_chat_examples(SYSTEM)
    examples[4]["messages"][1]["content"] = "호반스 " * (server.local.context_length + 10)
    with pytest.raises(openai.BadRequestError) as caught:
        upload(client, hobanse_jsonl(tmp_path, examples=examples))
    assert "5번째 줄" in caught.value.body["message"] and "컨텍스트" in caught.value.body["message"]


def test_upload_size_limit(tiny_model, tmp_path):
    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model), max_upload_bytes=1_000))
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            upload(running.client(), hobanse_jsonl(tmp_path))
        assert caught.value.status_code == 413 and caught.value.body["code"] == "file_too_large"
    finally:
        running.close()


# ------------------------------------------------------------------------------------------------ jobs
def test_job_lifecycle_events_checkpoints_result_file_and_models(client, tmp_path):
    train = upload(client, hobanse_jsonl(tmp_path))
    valid = upload(client, hobanse_jsonl(tmp_path, "valid.jsonl", datasets.hobanse_chat_examples(SYSTEM)[:4] * 3))
    created = client.with_raw_response.fine_tuning.jobs.create(
        model="tiny-gemma0", training_file=train.id, validation_file=valid.id, suffix="hobanse", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}})
    job = FineTuningJob.model_validate(created.http_response.json())
    assert job.status == "validating_files" and job.hyperparameters.n_epochs == 2
    assert job.hyperparameters.learning_rate_multiplier == "auto"

    job = wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
    assert job.status == "succeeded", job.error
    FineTuningJob.model_validate(client.with_raw_response.fine_tuning.jobs.retrieve(job.id).http_response.json())
    assert job.fine_tuned_model.startswith("ft:tiny-gemma0:local:hobanse:")
    assert job.hyperparameters.model_dump() == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0}
    assert job.seed == 7 and job.trained_tokens > 0 and job.finished_at >= job.created_at
    total_steps = 2 * 4  # 15 examples in batches of 4, two epochs

    events = client.with_raw_response.fine_tuning.jobs.list_events(job.id, limit=100).http_response.json()["data"]
    for event in events:
        FineTuningJobEvent.model_validate(event)
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events), reverse=True)
    messages = [e["message"] for e in reversed(events)]
    assert messages[0] == f"Created fine-tuning job: {job.id}" and messages[-1] == "The job has successfully completed"
    metrics = [e for e in reversed(events) if e["type"] == "metrics"]
    assert [e["data"]["step"] for e in metrics] == list(range(1, total_steps + 1))
    assert metrics[-1]["message"].startswith(f"Step {total_steps}/{total_steps}: training loss=")
    assert {"step", "total_steps", "train_loss", "train_mean_token_accuracy"} <= set(metrics[0]["data"])
    assert {"valid_loss", "valid_mean_token_accuracy"} <= set(metrics[-1]["data"])

    checkpoints = client.with_raw_response.fine_tuning.jobs.checkpoints.list(job.id).http_response.json()
    for checkpoint in checkpoints["data"]:
        FineTuningJobCheckpoint.model_validate(checkpoint)
    assert [c["step_number"] for c in checkpoints["data"]] == [8, 4]  # one per epoch, newest first
    assert checkpoints["data"][1]["fine_tuned_model_checkpoint"] == f"{job.fine_tuned_model}:ckpt-step-4"

    csv_bytes = base64.b64decode(client.files.content(job.result_files[0]).read())
    results = pd.read_csv(io.BytesIO(csv_bytes))
    assert tuple(results.columns) == RESULT_COLUMNS and list(results["step"]) == list(range(1, total_steps + 1))
    assert results["full_valid_loss"].notna().tolist() == [False] * (total_steps - 1) + [True]
    assert results["train_loss"].tolist() == pytest.approx([e["data"]["train_loss"] for e in metrics])
    assert client.files.retrieve(job.result_files[0]).purpose == "fine-tune-results"

    models = client.with_raw_response.models.list().http_response.json()["data"]
    for model in models:
        Model.model_validate(model)
    ids = [m["id"] for m in models]
    assert {"tiny-gemma0", job.fine_tuned_model, f"{job.fine_tuned_model}:ckpt-step-4"} <= set(ids)

    for model in (job.fine_tuned_model, f"{job.fine_tuned_model}:ckpt-step-4"):
        answer = client.with_raw_response.chat.completions.create(
            model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "호반스 코트의 크기는?"}],
            max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
        completion = ChatCompletion.model_validate(answer.http_response.json())
        assert completion.model == model and len(completion.choices[0].logprobs.content[0].top_logprobs) == 3

    deleted = client.with_raw_response.models.delete(job.fine_tuned_model).http_response.json()
    ModelDeleted.model_validate(deleted)
    assert deleted["deleted"] is True
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"
    assert job.fine_tuned_model not in [m.id for m in client.models.list()]


def test_jobs_wait_queued_and_cancel_stops_training(client, tmp_path):
    train = upload(client, hobanse_jsonl(tmp_path))
    long_job = client.fine_tuning.jobs.create(model="tiny-gemma0", training_file=train.id, suffix="long",
                                              hyperparameters={"n_epochs": 50})
    next_job = client.fine_tuning.jobs.create(model="tiny-gemma0", training_file=train.id, suffix="next",
                                              hyperparameters={"n_epochs": 1})
    wait_for(client, long_job.id, ("running",))
    assert wait_for(client, next_job.id, ("queued",)).status == "queued"  # one job trains at a time

    wait_until(lambda: [e for e in client.fine_tuning.jobs.list_events(long_job.id, limit=5) if e.type == "metrics"],
               120, "the long job's first training step")
    cancelled = client.fine_tuning.jobs.cancel(long_job.id)
    assert cancelled.status == "cancelled"
    done = wait_for(client, next_job.id, ("succeeded", "failed"), timeout=120)
    assert done.status == "succeeded", done.error
    long_job = client.fine_tuning.jobs.retrieve(long_job.id)
    assert long_job.status == "cancelled" and long_job.fine_tuned_model is None
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(long_job.id, limit=1000) if e.type == "metrics"]
    assert max(steps) < 50 * 15  # stopped long before the end
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(long_job.id)

    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [next_job.id] and listed.has_more
    assert [j.id for j in client.fine_tuning.jobs.list(after=next_job.id, limit=1).data] == [long_job.id]


@pytest.mark.parametrize("change, status, code", [
    ({"model": "gpt-4.1-mini-2025-04-14"}, 400, "model_not_available"),
    ({"training_file": "file-doesnotexist"}, 400, "invalid_file"),
    ({"hyperparameters": {"n_epochs": 0}}, 400, "invalid_hyperparameters"),
    ({"method": {"type": "dpo"}}, 400, "unsupported_method"),
    ({"suffix": "x" * 65}, 400, "invalid_value"),
])
def test_bad_job_requests(client, tmp_path, change, status, code):
    train = upload(client, hobanse_jsonl(tmp_path))
    with pytest.raises(openai.APIStatusError) as caught:
        client.fine_tuning.jobs.create(**{"model": "tiny-gemma0", "training_file": train.id, **change})
    assert caught.value.status_code == status and caught.value.body["code"] == code


def test_too_few_examples(client, tmp_path):
    few = upload(client, hobanse_jsonl(tmp_path, examples=datasets.hobanse_chat_examples(SYSTEM)[:9]))
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="tiny-gemma0", training_file=few.id)
    assert "최소 10개" in caught.value.body["message"] and caught.value.body["code"] == "invalid_n_examples"


def test_unknown_ids_get_404(client):
    for call in (lambda: client.fine_tuning.jobs.retrieve("ftjob-nope"),
                 lambda: client.fine_tuning.jobs.list_events("ftjob-nope"),
                 lambda: client.files.content("file-nope"),
                 lambda: client.models.retrieve("ft:tiny-gemma0:local:x:nope"),
                 lambda: client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert set(caught.value.response.json()["error"]) == {"message", "type", "param", "code"}


def test_base_model_cannot_be_deleted(client):
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.models.delete("tiny-gemma0")
    assert caught.value.body["type"] == "permission_error"
    assert client.models.retrieve("tiny-gemma0").owned_by == "local"


# ------------------------------------------------------------------------------------------------ chat
def test_chat_completion_shape_usage_and_parameters(client, server):
    response = client.with_raw_response.chat.completions.create(
        model="tiny-gemma0", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "호반스는?"}],
        max_completion_tokens=4, temperature=1, top_p=0.9, seed=3, n=2, stop=["\n\n"])
    completion = ChatCompletion.model_validate(response.http_response.json())
    assert len(completion.choices) == 2 and completion.choices[0].finish_reason in ("stop", "length")
    prompt = server.local.render_chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "호반스는?"}])
    assert completion.usage.prompt_tokens == len(prompt)
    assert completion.usage.completion_tokens <= 8
    again = client.chat.completions.create(
        model="tiny-gemma0", messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "호반스는?"}],
        max_completion_tokens=4, temperature=1, top_p=0.9, seed=3, n=2, stop=["\n\n"])
    assert [c.message.content for c in again.choices] == [c.message.content for c in completion.choices]


def test_legacy_completions_continue_plain_text(client, server):
    response = client.with_raw_response.completions.create(model="tiny-gemma0", prompt="대한민국의 수도는",
                                                           max_tokens=3, temperature=0, logprobs=5)
    completion = Completion.model_validate(response.http_response.json())
    choice = completion.choices[0]
    assert completion.usage.prompt_tokens == len(server.local.render_text("대한민국의 수도는"))
    assert len(choice.logprobs.tokens) == completion.usage.completion_tokens
    assert "".join(choice.logprobs.tokens).startswith(choice.text)
    assert all(len(top) == 5 for top in choice.logprobs.top_logprobs)
    assert choice.logprobs.text_offset[0] == 0


@pytest.mark.parametrize("change, param", [
    ({"top_logprobs": 3}, "logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"temperature": 3}, "temperature"),
    ({"stream": True}, "stream"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
])
def test_bad_chat_requests(client, change, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": "tiny-gemma0", "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 2, **change})
    assert caught.value.body["param"] == param


def test_concurrent_requests_all_answered(client):
    def ask(i):
        return client.chat.completions.create(model="tiny-gemma0", max_tokens=3, temperature=0,
                                              messages=[{"role": "user", "content": f"질문 {i}"}])
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    assert all(a.choices[0].message.content is not None for a in answers)
    assert len({a.id for a in answers}) == 20


def test_errors_have_openai_shape_for_unknown_urls(server):
    response = httpx2.get(f"{server.base_url}/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"


def test_a_bug_is_a_500_in_openai_shape_that_names_the_server(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(server.local.store, "list_files", broken)
    response = httpx2.get(f"{server.base_url}/files")
    assert response.status_code == 500 and response.json()["error"]["code"] == "server_error"
    assert "disk on fire" in response.json()["error"]["message"]
    assert response.headers["x-course-local-server"] == "tiny-gemma0; device=cpu"  # recordings can name the source


def test_a_worker_that_cannot_start_fails_its_job_and_the_queue_goes_on(client, server, tmp_path, monkeypatch):
    import multiprocessing.context

    def cannot_start(self):
        raise OSError("no memory for a new process")
    train = upload(client, hobanse_jsonl(tmp_path))
    with monkeypatch.context() as patch:
        patch.setattr(multiprocessing.context.SpawnProcess, "start", cannot_start)
        job = wait_for(client, client.fine_tuning.jobs.create(model="tiny-gemma0", training_file=train.id).id,
                       ("succeeded", "failed"))
    assert job.status == "failed" and "no memory" in job.error.message
    assert server.local.scheduler.workers == {}


# ------------------------------------------------------------------------------------------------ state and safety
def test_state_survives_a_restart_and_a_running_job_fails(tiny_model, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_model))
    first = RunningServer(settings)
    client = first.client()
    train = upload(client, hobanse_jsonl(tmp_path))
    job = client.fine_tuning.jobs.create(model="tiny-gemma0", training_file=train.id, hyperparameters={"n_epochs": 1})
    job = wait_for(client, job.id, ("succeeded", "failed"))
    interrupted = first.local.store.add_job(model="tiny-gemma0", training_file=train.id, seed=1,
                                            hyperparameters={"n_epochs": 1, "batch_size": 1,
                                                             "learning_rate_multiplier": 1.0})
    first.local.scheduler.stop()  # as if the server died while this job trained
    first.local.store.update_job(interrupted["id"], status="running")
    first.close()

    second = RunningServer(settings)
    try:
        client = second.client()
        assert client.files.retrieve(train.id).bytes == train.bytes
        assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == job.fine_tuned_model
        assert client.chat.completions.create(model=job.fine_tuned_model, max_tokens=2,
                                              messages=[{"role": "user", "content": "hi"}]).choices
        failed = client.fine_tuning.jobs.retrieve(interrupted["id"])
        assert failed.status == "failed" and failed.error.code == "server_restarted"
    finally:
        second.close()


def test_api_key_required_when_set(tiny_model, tmp_path):
    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model), api_key="class-key-123"))
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            running.client("wrong-key").models.list()
        assert caught.value.body["code"] == "invalid_api_key"
        assert caught.value.response.headers["x-course-local-server"] == "tiny-gemma0; device=cpu"
        assert [m.id for m in running.client("class-key-123").models.list()] == ["tiny-gemma0"]
    finally:
        running.close()


def test_other_addresses_need_an_api_key():
    result = subprocess.run([sys.executable, "-m", "local_server", "--host", "0.0.0.0"], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, env={"PATH": "", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "--api-key" in result.stderr
