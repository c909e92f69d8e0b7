"""Every response the local server gives, and every one the course's recordings hold, fits OpenAI's published API:
it parses with the openai SDK's own types, and a field is null only where the OpenAPI spec allows null (issue 18.13).

The SDK types cannot tell "may be left out" from "may be null" (both are `Optional[...] = None`), so the fields
the spec makes nullable are listed here, from openai/openai-openapi (openapi.json at f85dbe2): every other field
that has no value must be left out. Paths: `a.b` a field in a field, `a[].b` a field of each item of a list.
"""
from __future__ import annotations

import json
import re

import httpx2
import pytest
from openai.types import Completion, FileDeleted, FileObject, Model, ModelDeleted
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from tests.test_notebooks import RECORDINGS

JOB_NULLABLE = {"error", "error.param", "fine_tuned_model", "finished_at", "trained_tokens", "validation_file",
                "estimated_finish", "integrations", "metadata"}
LOGPROB_NULLABLE = {"bytes", "top_logprobs[].bytes"}
CHAT_NULLABLE = {"choices[].message.content", "choices[].message.refusal", "choices[].logprobs",
                 "choices[].logprobs.content", "choices[].logprobs.refusal",
                 *(f"choices[].logprobs.content[].{p}" for p in LOGPROB_NULLABLE)}
ERROR_NULLABLE = {"error.param", "error.code"}  # the spec's Error object


def _list(item_type, item_nullable: set[str], page_nullable: set[str] = frozenset()):
    return item_type, {f"data[].{p}" for p in item_nullable} | set(page_nullable), True


# (method, path pattern) -> (SDK type, paths that may be null, whether the type is that of each item of `data`)
ENDPOINTS = {
    ("GET", r"/models"): _list(Model, set()),
    ("GET", r"/models/.+"): (Model, set(), False),
    ("DELETE", r"/models/.+"): (ModelDeleted, set(), False),
    ("POST", r"/files"): (FileObject, set(), False),
    # first_id/last_id: the spec types them as strings, but an empty page has no first or last file
    ("GET", r"/files"): _list(FileObject, set(), {"first_id", "last_id"}),
    ("GET", r"/files/[^/]+"): (FileObject, set(), False),
    ("DELETE", r"/files/[^/]+"): (FileDeleted, set(), False),
    ("POST", r"/fine_tuning/jobs"): (FineTuningJob, JOB_NULLABLE, False),
    ("GET", r"/fine_tuning/jobs"): _list(FineTuningJob, JOB_NULLABLE),
    ("GET", r"/fine_tuning/jobs/[^/]+"): (FineTuningJob, JOB_NULLABLE, False),
    ("POST", r"/fine_tuning/jobs/[^/]+/cancel"): (FineTuningJob, JOB_NULLABLE, False),
    ("GET", r"/fine_tuning/jobs/[^/]+/events"): _list(FineTuningJobEvent, set()),
    ("GET", r"/fine_tuning/jobs/[^/]+/checkpoints"): _list(FineTuningJobCheckpoint, set(), {"first_id", "last_id"}),
    ("POST", r"/chat/completions"): (ChatCompletion, CHAT_NULLABLE, False),
    ("POST", r"/completions"): (Completion, {"choices[].logprobs"}, False),
}


def null_paths(value, where: str = "") -> list[str]:
    """Where the JSON has null, as `a[].b` paths."""
    if isinstance(value, dict):
        return [p for key, item in value.items()
                for p in ([f"{where}{key}"] if item is None else null_paths(item, f"{where}{key}."))]
    if isinstance(value, list):
        return [p for item in value for p in null_paths(item, f"{where.rstrip('.')}[].")]
    return []


def contract_problems(method: str, path: str, status: int, body) -> list[str]:
    """What in one response breaks the contract: not parsed by the SDK type, or null where the spec forbids it."""
    if status >= 400:
        return [f"{method} {path}: null at {p}" for p in null_paths(body) if p not in ERROR_NULLABLE]
    kind, nullable, each_of_data = next(spec for (m, pattern), spec in ENDPOINTS.items()
                                        if m == method and re.fullmatch(pattern, path))
    for item in body["data"] if each_of_data else [body]:
        kind.model_validate(item)
    return [f"{method} {path}: null at {p}" for p in null_paths(body) if p not in nullable]


# ------------------------------------------------------------------------------------------------ a fresh server
def test_fresh_server_responses_fit_the_spec(tiny_server):
    seen: list[tuple[str, str, int, object]] = []

    def call(method: str, path: str, **kwargs):
        response = httpx2.request(method, f"{tiny_server.base_url}{path}", timeout=60, **kwargs)
        if response.headers["content-type"] == "application/json":
            seen.append((method, path, response.status_code, response.json()))
        return response.json() if response.headers["content-type"] == "application/json" else response

    lines = [{"messages": [{"role": "user", "content": f"질문 {i}"}, {"role": "assistant", "content": f"답 {i}"}]}
             for i in range(10)]
    content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
    call("GET", "/files")  # empty
    file = call("POST", "/files", files={"file": ("train.jsonl", content)}, data={"purpose": "fine-tune"})
    call("GET", "/files")
    call("GET", f"/files/{file['id']}")
    plain = call("POST", "/fine_tuning/jobs", json={"model": tiny_server.model, "training_file": file["id"]})
    named = call("POST", "/fine_tuning/jobs", json={"model": tiny_server.model, "training_file": file["id"],
                                                    "suffix": "x", "metadata": {"k": "v"}})
    call("POST", f"/fine_tuning/jobs/{plain['id']}/cancel")
    model = tiny_server.finish_without_training(named["id"])
    tiny_server.local.store.add_event(named["id"], "Step 1/1: training loss=1.00", type="metrics",
                                      data={"step": 1, "train_loss": 1.0})
    for job in (plain, named):
        call("GET", f"/fine_tuning/jobs/{job['id']}")
        call("GET", f"/fine_tuning/jobs/{job['id']}/events")
        call("GET", f"/fine_tuning/jobs/{job['id']}/checkpoints")
    call("GET", "/fine_tuning/jobs")
    call("GET", "/models")
    call("GET", f"/models/{model}")
    chat = {"model": tiny_server.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    call("POST", "/chat/completions", json=chat)
    call("POST", "/chat/completions", json={**chat, "logprobs": True, "top_logprobs": 2})
    call("POST", "/completions", json={"model": tiny_server.model, "prompt": "hi", "max_tokens": 2})
    call("POST", "/completions", json={"model": tiny_server.model, "prompt": "hi", "max_tokens": 2, "logprobs": 2})
    call("GET", "/files/file-nope")
    call("POST", "/chat/completions", json={**chat, "temperature": 9})
    call("DELETE", f"/models/{model}")
    call("DELETE", f"/files/{file['id']}")

    assert len(seen) == 24
    assert [p for method, path, status, body in seen for p in contract_problems(method, path, status, body)] == []


# ------------------------------------------------------------------------------------------------ the recordings
@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.stem)
def test_recorded_responses_fit_the_spec(recording):
    problems = []
    for interaction in json.loads(recording.read_text(encoding="utf-8"))["interactions"]:
        request, response = interaction["request"], interaction["response"]
        if "json" in response:
            problems += contract_problems(request["method"], request["path"], response["status"], response["json"])
    assert problems == []
