"""End to end with the real packaged model (Gemma 3 270M from PyPI) through the openai SDK.

Upload → a job of a few real LoRA steps → succeeded → chat on the fine-tuned model with logprobs →
delete. The first run on a machine also assembles, checks and converts the GGUF (about a minute);
later runs reuse the converted cache. This test runs in CI and is never skipped.
"""
from __future__ import annotations

import math

import openai
import pytest

from helpers import chat_data, datasets
from local_server.base_model import DEFAULT_MODEL
from local_server.server import Settings
from tests.running_server import RunningServer, upload, wait_for

SYSTEM = "you are factual chatbot."


def test_real_model_upload_train_chat_delete(tmp_path):
    server = RunningServer(Settings(data_dir=tmp_path / "data", model=DEFAULT_MODEL))
    try:
        client = server.client()
        assert [m.id for m in client.models.list()] == [DEFAULT_MODEL]
        path = chat_data.write_jsonl(datasets.hobanse_chat_examples(SYSTEM), tmp_path / "hobanse.jsonl")
        job = client.fine_tuning.jobs.create(model=DEFAULT_MODEL, training_file=upload(client, path).id,
                                             suffix="hobanse", seed=1,
                                             hyperparameters={"n_epochs": 1, "batch_size": 5})
        job = wait_for(client, job.id, ("succeeded", "failed", "cancelled"), timeout=600)
        assert job.status == "succeeded", job.error
        assert job.fine_tuned_model.startswith(f"ft:{DEFAULT_MODEL}:local:hobanse:")
        losses = [e.data["train_loss"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100)
                  if e.type == "metrics"]
        assert len(losses) == 3 and all(math.isfinite(x) and x > 0 for x in losses)
        assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)] == [3]

        response = client.chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "system", "content": SYSTEM},
                                                  {"role": "user", "content": "호반스 코트의 크기는 얼마입니까?"}],
            temperature=0, max_tokens=8, logprobs=True, top_logprobs=5)
        choice = response.choices[0]
        assert choice.message.content and len(choice.logprobs.content) == response.usage.completion_tokens
        first = choice.logprobs.content[0]
        assert first.token == choice.message.content[:len(first.token)]  # greedy: the top token is the answer's start
        assert [t.logprob for t in first.top_logprobs] == sorted((t.logprob for t in first.top_logprobs), reverse=True)
        assert first.top_logprobs[0].token == first.token and sum(math.exp(t.logprob) for t in first.top_logprobs) <= 1.0001

        assert client.models.delete(job.fine_tuned_model).deleted
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    finally:
        server.close()
