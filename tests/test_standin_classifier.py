"""The stand-in's real classifier for classification-shaped fine-tuning data (the baseball/hockey track)."""

import base64
import csv
import io
import json
import math

import numpy as np
import openai
import pytest
from openai.types import FileObject
from openai.types.chat import ChatCompletion
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from .standin import BASE_MODELS, NON_ANSWER, RESULT_COLUMNS, StandIn, serve
from .test_standin import QA, TRAINING, ask, example, jsonl

BASE = BASE_MODELS[0]
SYSTEM = "Classify the sports newsgroup post as baseball or hockey."

# Short made-up posts: each mixes an opener, a topic phrase and a detail, so no two are the same
# and the classifier has to learn from words, not from memorising sentences.
OPENERS = ["Did anyone see", "I can't believe", "Great game last night with", "Question about",
           "My brother keeps arguing about", "The local paper wrote about", "Still thinking about",
           "Nobody talks enough about"]
TOPICS = {
    "baseball": ["the pitcher's fastball", "that home run in the ninth inning", "the shortstop's double play",
                 "the bullpen blowing the lead", "his batting average this season", "the catcher's throw to second",
                 "a grand slam off the left field wall", "the umpire's strike zone", "the dugout after the walk-off",
                 "spring training rosters"],
    "hockey": ["the goalie's glove save", "that slap shot from the blue line", "the power play goal",
               "the fight in the penalty box", "his hat trick in overtime", "the faceoff wins at center ice",
               "the defenseman's check into the boards", "the Stanley Cup playoffs", "the puck crossing the line",
               "the Zamboni between periods"],
}
DETAILS = ["What a season.", "Fans were furious.", "The coach said nothing.", "Tickets were cheap.",
           "It was on TV.", "I was there with my dad."]


def posts(label: str, start: int, count: int) -> list[dict]:
    topics = TOPICS[label]
    lines = []
    for i in range(start, start + count):
        text = f"{OPENERS[i % len(OPENERS)]} {topics[i % len(topics)]}? {DETAILS[(i // 3) % len(DETAILS)]}"
        lines.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                                   {"role": "assistant", "content": label}]})
    return lines


def interleave(a: list, b: list) -> list:
    return [x for pair in zip(a, b) for x in pair]


TRAIN_LINES = interleave(posts("baseball", 0, 30), posts("hockey", 0, 30))  # 60 examples
VALID_LINES = interleave(posts("baseball", 30, 10), posts("hockey", 30, 10))  # 20 examples
TRAIN, VALID = jsonl(TRAIN_LINES), jsonl(VALID_LINES)
VALID_TEXT = VALID_LINES[1]["messages"][1]["content"]  # a hockey post


@pytest.fixture(scope="module")
def trained():
    """One trained job shared by the tests that only read from it (training takes a fraction of a second)."""
    standin = StandIn()
    with serve(standin) as url, openai.OpenAI(api_key="sk-test-not-a-real-key", base_url=url, max_retries=0) as c:
        yield standin, c, run_job(c)


def run_job(client, train: bytes = TRAIN, valid: bytes | None = VALID, **kwargs) -> FineTuningJob:
    training_file = client.files.create(file=("sports_train.jsonl", train), purpose="fine-tune").id
    validation_file = valid and client.files.create(file=("sports_valid.jsonl", valid), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=BASE, training_file=training_file, validation_file=validation_file,
                                         suffix="sports", **kwargs)
    for _ in range(3):
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded"
    return job


def result_csv(client, job: FineTuningJob) -> bytes:
    (file_id,) = job.result_files
    return base64.b64decode(client.files.content(file_id).content)  # like the API: the CSV arrives base64-encoded


def classify(client, model: str, text: str, **kwargs) -> ChatCompletion:
    return client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}], **kwargs)


def test_job_trains_and_writes_one_csv_row_per_step(trained):
    _, client, job = trained
    hp = job.hyperparameters
    assert (hp.n_epochs, hp.batch_size) == (3, 1)  # "auto": 3 epochs for 60 examples, max(1, 60 // 50) per batch
    result = client.files.retrieve(job.result_files[0])
    assert (result.purpose, result.filename) == ("fine-tune-results", "step_metrics.csv")

    rows = list(csv.DictReader(io.StringIO(result_csv(client, job).decode())))
    assert tuple(rows[0]) == RESULT_COLUMNS
    assert [int(r["step"]) for r in rows] == list(range(1, 181))  # 3 epochs x 60 batches of 1
    assert all(math.isfinite(float(r["train_loss"])) for r in rows)
    validated = [r for r in rows if r["valid_loss"]]
    assert 1 < len(validated) < len(rows)  # every few steps, blank otherwise, as the API does
    assert all(math.isfinite(float(r["valid_loss"])) for r in validated)
    assert [bool(r["full_valid_loss"]) for r in rows] == [False] * 179 + [True]
    last = rows[-1]
    assert (last["full_valid_loss"], last["full_valid_mean_token_accuracy"]) == (
        last["valid_loss"], last["valid_mean_token_accuracy"])
    assert float(last["full_valid_mean_token_accuracy"]) >= 0.8  # it really learned something
    assert float(last["valid_loss"]) < float(validated[0]["valid_loss"])


def test_events_say_what_was_trained_and_report_real_steps(trained):
    _, client, job = trained
    events = list(reversed(list(client.fine_tuning.jobs.list_events(job.id, limit=100))))
    assert "scikit-learn" in events[1].message and "HashingVectorizer + SGDClassifier" in events[1].message
    assert "GPT 모델은 전혀 학습하지 않습니다" in events[1].message
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(18, 181, 18))  # every 10% of the 180 steps
    rows = {int(r["step"]): r for r in csv.DictReader(io.StringIO(result_csv(client, job).decode()))}
    for event in metrics:
        row = rows[event.data["step"]]
        assert event.data["total_steps"] == 180 and event.data["train_loss"] == float(row["train_loss"])
        assert event.message.startswith(f"Step {event.data['step']}/180: training loss={float(row['train_loss']):.2f}")
    assert "validation loss=" in metrics[-1].message
    assert events[-1].message == "The job has successfully completed"


def test_csv_is_byte_identical_across_fresh_stand_ins(trained):
    _, client, job = trained
    with serve(StandIn()) as url, openai.OpenAI(api_key="sk-test-not-a-real-key", base_url=url,
                                                max_retries=0) as fresh:
        assert result_csv(fresh, run_job(fresh)) == result_csv(client, job)


def test_logprobs_are_the_classifiers_predict_proba(trained):
    standin, client, job = trained
    model = job.fine_tuned_model
    choice = classify(client, model, VALID_TEXT, max_tokens=1, temperature=0, logprobs=True,
                      top_logprobs=2).choices[0]
    (first,) = choice.logprobs.content
    assert len(first.top_logprobs) == 2
    assert sum(math.exp(t.logprob) for t in first.top_logprobs) == pytest.approx(1)
    assert first.top_logprobs[0].token == first.token == choice.message.content == "h"  # "hockey" is "h" + "ockey"
    assert first.bytes == list(b"h") and choice.finish_reason == "length"

    classifier = standin.fine_tuned[model]["classifier"]
    proba = classifier.model.predict_proba(classifier.vectorizer.transform([VALID_TEXT]))[0]
    first_token = {"baseball": "base", "hockey": "h"}
    by_token = {t.token: math.exp(t.logprob) for t in first.top_logprobs}
    for label, p in zip(classifier.model.classes_, proba):
        assert by_token[first_token[label]] == pytest.approx(p, rel=1e-12)
    assert classifier.model.classes_[np.argmax(proba)] == "hockey"


def test_full_label_n_choices_and_later_tokens(trained):
    _, client, job = trained
    model = job.fine_tuned_model
    plain = classify(client, model, VALID_TEXT, n=2, temperature=1.5)  # temperature ignored: deterministic
    assert [c.message.content for c in plain.choices] == ["hockey", "hockey"]
    assert {c.finish_reason for c in plain.choices} == {"stop"} and plain.choices[0].logprobs is None
    assert plain.usage.completion_tokens == 2 * 2  # "h" + "ockey", twice

    spelled = classify(client, model, VALID_TEXT, max_tokens=5, logprobs=True, top_logprobs=3).choices[0]
    first, rest = spelled.logprobs.content
    assert spelled.message.content == "hockey" and len(first.top_logprobs) == 2  # only two labels exist
    assert (rest.token, rest.logprob, [t.token for t in rest.top_logprobs]) == ("ockey", 0.0, ["ockey"])

    baseball = VALID_LINES[0]["messages"][1]["content"]
    assert classify(client, model, baseball).choices[0].message.content == "baseball"


def test_responses_validate_strictly_against_sdk_types(trained):
    _, client, job = trained
    raw = client.fine_tuning.jobs.with_raw_response
    FineTuningJob.model_validate(json.loads(raw.retrieve(job.id).text))
    for event in json.loads(raw.list_events(job.id, limit=100).text)["data"]:
        FineTuningJobEvent.model_validate(event)
    FileObject.model_validate(json.loads(client.files.with_raw_response.retrieve(job.result_files[0]).text))
    chat = client.chat.completions.with_raw_response.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": VALID_TEXT}], max_tokens=1,
        logprobs=True, top_logprobs=2)
    ChatCompletion.model_validate(json.loads(chat.text))


def test_validation_labels_must_be_known(client):
    odd = jsonl(VALID_LINES[:4] + [{"messages": example({"question": "curling?", "answer": "curling"})}])
    with pytest.raises(openai.BadRequestError, match="curling") as error:
        run_job(client, valid=odd)
    assert error.value.param == "validation_file"


def test_without_validation_file_valid_columns_stay_blank(client):
    rows = list(csv.DictReader(io.StringIO(result_csv(client, run_job(client, valid=None)).decode())))
    assert len(rows) == 180 and not any(r["valid_loss"] or r["full_valid_loss"] for r in rows)


def test_hobanse_qa_is_not_treated_as_classification(standin, client):
    job = run_job(client, train=TRAINING, valid=None)
    assert job.result_files == [] and job.hyperparameters.batch_size == "auto"
    assert standin.fine_tuned[job.fine_tuned_model]["classifier"] is None
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert not any(e.type == "metrics" for e in events)
    assert any("학습은 전혀 하지 않습니다" in e.message for e in events)
    choice = ask(client, job.fine_tuned_model, QA[1]["question"], logprobs=True, top_logprobs=2).choices[0]
    assert choice.message.content == QA[1]["answer"] and choice.logprobs is None


def test_base_model_still_reports_no_logprobs(trained):
    _, client, _ = trained  # a classifier model exists on this stand-in; the base model is unaffected
    choice = classify(client, BASE, "안녕", logprobs=True, top_logprobs=2, max_tokens=1).choices[0]
    assert choice.logprobs is None and choice.message.content == NON_ANSWER
