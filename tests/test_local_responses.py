"""Checks that used to run against the offline stand-in and that the local server's own tests do not make:
Windows line endings survive an upload, every response names the server (what recordings use as their source),
and a model made without a suffix has OpenAI's `ft:<base>:<org>::<id>` shape."""
import json

import httpx2
import openai
import pytest

from local_server.jobs import fine_tuned_model_id

LINES = [{"messages": [{"role": "system", "content": "you are factual chatbot."},
                       {"role": "user", "content": f"호반스 질문 {i}"}, {"role": "assistant", "content": f"답 {i}"}]}
         for i in range(10)]
TRAINING = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in LINES).encode()


def test_crlf_upload_round_trips_byte_for_byte(tiny_server):
    client = tiny_server.client()
    data = TRAINING.replace(b"\n", b"\r\n")  # a file saved on Windows: the multipart parsing must keep it as it is
    uploaded = client.files.create(file=("hobanse.jsonl", data), purpose="fine-tune")
    assert (uploaded.bytes, uploaded.status) == (len(data), "processed")
    assert client.files.content(uploaded.id).read() == data
    job = client.fine_tuning.jobs.create(model=tiny_server.model, training_file=uploaded.id)  # 10 examples read
    assert job.status == "validating_files"


def test_every_response_names_the_local_server_and_its_device(tiny_server):
    client = tiny_server.client()
    uploaded = client.files.create(file=("hobanse.jsonl", TRAINING), purpose="fine-tune")
    listed = client.models.with_raw_response.list()
    content = client.files.with_raw_response.content(uploaded.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve("file-unknown")
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model=tiny_server.model, messages=[{"role": "user", "content": "hi"}],
                                       temperature=3)
    unknown_url = httpx2.get(f"{tiny_server.base_url}/nothing-here")
    expected = f"{tiny_server.model}; device=cpu"
    for headers in (listed.headers, content.headers, missing.value.response.headers,
                    invalid.value.response.headers, unknown_url.headers):
        assert headers["x-course-local-server"] == expected
    assert missing.value.response.headers["content-type"] == invalid.value.response.headers["content-type"] \
        == "application/json"


def test_a_model_without_suffix_has_an_empty_suffix_field(tiny_server):
    client = tiny_server.client()
    training = client.files.create(file=("hobanse.jsonl", TRAINING), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_server.model, training_file=training.id)
    model = tiny_server.finish_without_training(job.id)
    assert model == fine_tuned_model_id(tiny_server.model, None, job.id)
    assert model.startswith(f"ft:{tiny_server.model}:local::") and len(model.split(":")) == 5
    assert client.models.retrieve(model).owned_by == "local"
