"""Continuing a fine-tuned model: a job whose `model` is "ft:…", through the unmodified openai SDK over real HTTP,
with the tiny random model (tests/tiny_model.py)."""
from __future__ import annotations

from pathlib import Path

import openai
import pytest

from helpers import chat_data
from local_server.jobs import run_job
from local_server.server import Settings
from tests.running_server import RunningServer, upload, wait_for

# OpenAI's largest multiplier: lr 2e-3, with which the tiny model learns one sentence in 4 epochs of 10 examples
HYPERPARAMETERS = {"n_epochs": 4, "batch_size": 1, "learning_rate_multiplier": 10}


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    running = RunningServer(Settings(data_dir=tmp_path_factory.mktemp("server-data"), model=str(tiny_model)))
    yield running
    running.close()


def balls(colour: str) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is the color of ball {k}?"},
                          {"role": "assistant", "content": f"The ball is {colour}."}]} for k in range(10)]


def train(client, tmp_path, model: str, colour: str):
    training_file = upload(client, chat_data.write_jsonl(balls(colour), tmp_path / f"{colour}.jsonl"))
    job = client.fine_tuning.jobs.create(model=model, training_file=training_file.id, suffix=colour, seed=1,
                                         hyperparameters=HYPERPARAMETERS)
    assert job.model == model
    return job


def events(client, job_id: str) -> list:
    return list(reversed(client.fine_tuning.jobs.list_events(job_id, limit=1000).data))  # oldest first


def first_step(client, job_id: str) -> dict:
    return next(event.data for event in events(client, job_id) if event.type == "metrics")


def answer(client, model: str) -> str:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the color of ball 3?"}], temperature=0,
        max_tokens=10)
    return completion.choices[0].message.content


def test_a_fine_tuned_model_continues_training_on_new_answers(server, tmp_path):
    client = server.client()
    red = wait_for(client, train(client, tmp_path, server.model, "red").id, ("succeeded", "failed"))
    assert red.status == "succeeded", red.error
    lora = next(event.data for event in events(client, red.id) if event.data and "trainable_parameters" in event.data)
    saved = next(event.data for event in events(client, red.id) if event.data and "adapter_bytes" in event.data)
    adapter = Path(server.local.store.model(red.fine_tuned_model)["adapter_path"])
    assert saved["adapter_bytes"] == (adapter / "adapter_model.safetensors").stat().st_size
    assert 0 < lora["trainable_parameters"] < lora["total_parameters"]

    blue = train(client, tmp_path, red.fine_tuned_model, "blue")
    checkpoint = f"{red.fine_tuned_model}:ckpt-step-10"  # a checkpoint can be continued too
    from_checkpoint = client.fine_tuning.jobs.create(model=checkpoint, training_file=blue.training_file)
    assert from_checkpoint.model == checkpoint
    client.fine_tuning.jobs.cancel(from_checkpoint.id)
    blue = wait_for(client, blue.id, ("succeeded", "failed"))
    assert blue.status == "succeeded", blue.error
    assert blue.model == red.fine_tuned_model
    assert blue.fine_tuned_model.startswith(f"ft:{server.model}:local:blue:")  # named after the root base model

    messages = [event.message for event in events(client, blue.id)]
    assert any(message.startswith(f"미세 조정한 모델 {red.fine_tuned_model} 의 LoRA 어댑터에서 이어서 학습합니다")
               for message in messages)
    blue_lora = next(event.data for event in events(client, blue.id)
                     if event.data and "trainable_parameters" in event.data)
    assert blue_lora == lora  # the parent's adapter, the same size and settings
    # The parent already says "The ball is …": the child starts far better than the base model did on its answers.
    red_start, blue_start = first_step(client, red.id), first_step(client, blue.id)
    assert blue_start["train_loss"] < red_start["train_loss"] - 0.3
    assert blue_start["train_mean_token_accuracy"] > red_start["train_mean_token_accuracy"] + 0.3

    assert answer(client, red.fine_tuned_model) == "The ball is red."
    assert answer(client, blue.fine_tuned_model) == "The ball is blue."


@pytest.mark.parametrize("model", ["ft:tiny-gemma0:local:red:nothere", "ft:other-model:local::abcdefgh"])
def test_an_unknown_fine_tuned_model_cannot_be_continued(tiny_server, tmp_path, model):
    client = tiny_server.client()
    training_file = upload(client, chat_data.write_jsonl(balls("red"), tmp_path / "red.jsonl"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model=model, training_file=training_file.id)
    assert caught.value.body["code"] == "model_not_available" and caught.value.body["param"] == "model"
    assert model in caught.value.body["message"]
    assert client.fine_tuning.jobs.list().data == []


def test_a_parent_deleted_before_the_job_starts_fails_the_job(tiny_server, tmp_path):
    client, store = tiny_server.client(), tiny_server.local.store
    training_file = upload(client, chat_data.write_jsonl(balls("red"), tmp_path / "red.jsonl"))
    parent_job = client.fine_tuning.jobs.create(model=tiny_server.model, training_file=training_file.id)
    parent = tiny_server.finish_without_training(parent_job.id)
    (store.adapters_dir / parent_job.id).mkdir()  # the parent's adapter folder, as training leaves it
    job = client.fine_tuning.jobs.create(model=parent, training_file=training_file.id)
    client.models.delete(parent)

    # What the scheduler does when the job's turn comes (tiny_server's scheduler does not run)
    assert store.update_job(job.id, ("validating_files",), status="running")
    run_job(str(store.data_dir), job.id, tiny_server.model, str(tiny_server.local.model_source), "cpu")
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "failed" and (job.error.code, job.error.param) == ("model_not_available", "model")
    assert job.error.message.startswith(f"이어서 학습할 모델 '{parent}' 이(가) 작업이 시작되기 전에 지워졌습니다")
