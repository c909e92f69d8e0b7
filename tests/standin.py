"""Offline stand-in for the few OpenAI endpoints the course notebooks call.

Nobody who builds this course can reach OpenAI, so the shipped recordings are made against
this local server. It never passes itself off as a model: every response carries the header
``X-Offline-Stand-In: 1`` (the recorder labels such recordings "offline stand-in"), and every
chat answer is either a real model answer quoted in the lecture slides, an answer copied from
the training data or from the prompt's own material (labelled, see tests/standin_answers.py), or a
Korean non-answer that says plainly what it is. It reports no log-probabilities for chat models.

One exception is trained for real: when a fine-tuning file is classification-shaped (a few labels
as answers, e.g. 20newsgroups "baseball"/"hockey"), the job fits a small scikit-learn classifier
(HashingVectorizer + SGDClassifier, mini-batch partial_fit) on the uploaded training file. Its
result CSV is that run's per-step loss/accuracy, the "fine-tuned" model answers with the
classifier's most probable label, and its logprobs are the classifier's log predict_proba. The job
events say so; none of it is GPT output.

State lives in memory and a fake clock ticks one second per request, so the same calls give
byte-identical responses (ids, timestamps and all).

    python -m tests.standin --port 8765    # from the repository root; prints the base URL to give the SDK
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import math
import re
import threading
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier

from helpers.recordings import parse_multipart
from helpers.chat_data import count_tokens, default_epochs, get_encoding
from tests import standin_answers

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BASE_MODELS = ("gpt-4.1-mini-2025-04-14", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14")
SHUTDOWN_DATE = "2027-01-14"  # COURSE.md: these dated snapshots and fine-tunes on them shut down then
ORG = "your-org"
ORGANIZATION_ID = "org-standin"
DEFAULT_SEED = 42  # the API draws a random seed; a fixed one keeps recordings reproducible
STANDIN_HEADER = ("X-Offline-Stand-In", "1")
FINGERPRINT = "offline-stand-in"
ROLES = {"system", "user", "assistant"}
MIN_EXAMPLES = 10

CREATION_NOTICE = (
    "[오프라인 대역] 이 작업은 OpenAI가 아니라 이 과정의 오프라인 대역(stand-in) 서버가 흉내 낸 것이며, "
    "실제 학습은 전혀 하지 않습니다. 만들어지는 모델은 학습 데이터에 있는 질문에는 학습 데이터의 답을, "
    "강의 슬라이드에 실린 질문에는 슬라이드에 찍힌 실제 모델의 답을 그대로 돌려주고, "
    "그 밖의 질문에는 '오프라인 대역'이라고 표시된 안내문만 돌려줍니다."
)
CLASSIFIER_NOTICE = (
    "[오프라인 대역] 이 작업은 OpenAI가 아니라 이 과정의 오프라인 대역(stand-in) 서버가 흉내 낸 것이며, "
    "GPT 모델은 전혀 학습하지 않습니다. 학습 데이터가 분류 형태(답이 몇 가지 레이블뿐)이므로, 대역은 올린 학습 "
    "파일로 작은 scikit-learn 분류기(HashingVectorizer + SGDClassifier)를 실제로 학습합니다. 결과 파일의 "
    "손실·정확도, 만들어지는 모델의 답(가장 확률이 높은 레이블)과 logprobs(분류기 확률의 로그)는 모두 이 "
    "분류기에서 나온 값입니다."
)
START_TIME = 1795219200  # 2026-11-21 00:00 UTC: fake clock start, so recordings are reproducible

NON_ANSWER = (
    "[오프라인 대역 응답] 이 글은 모델의 답이 아닙니다. 지금 응답한 것은 이 과정의 오프라인 대역(stand-in) "
    "서버이며, 이 질문에 대한 실제 모델의 답은 기록되어 있지 않습니다. "
    "강사가 API 키로 다시 기록(record 모드)하면 이 자리가 실제 모델의 답으로 바뀝니다."
)



class ApiError(Exception):
    """An error answered in OpenAI's JSON shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class Request:
    query: dict[str, str]
    content_type: str
    body: bytes

    def json(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiError(400, "We could not parse the JSON body of your request.")
        return data

    def int_param(self, name: str, default: int) -> int:
        try:
            value = int(self.query.get(name, default))
        except ValueError:
            value = 0
        if value >= 1:
            return value
        raise ApiError(400, f"Invalid '{name}': expected a positive integer.", name)


@dataclass
class Job:
    public: dict  # exactly what the API returns
    suffix: str | None
    trained_tokens: int
    answers: dict[str, str]  # normalised user content -> trained assistant answer
    events: list[dict] = field(default_factory=list)  # oldest first
    classifier: Classifier | None = None  # only for classification-shaped training data
    steps: list[dict] = field(default_factory=list)  # the classifier's per-step metrics (result CSV rows)


def normalise(text: str) -> str:
    return " ".join(text.split())


def quote_key(text: str) -> str:
    """Slide questions were typed by hand: ignore all whitespace and a trailing question mark."""
    return "".join(text.split()).rstrip("?？")


def text_of(content: Any) -> str:
    """Chat content is a string or a list of parts; only text parts count here."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def parse_chat_jsonl(data: bytes, param: str) -> list[list[dict]]:
    """Check a fine-tuning file line by line and return its examples' message lists."""
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ApiError(400, f"Invalid file format for {param}: the file is not UTF-8 text.", param,
                       "invalid_file_format") from None
    examples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except ValueError:
            raise ApiError(400, f"Invalid file format for {param}: line {number} is not valid JSON.", param,
                           "invalid_file_format") from None
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
        ):
            raise ApiError(400, f"Invalid file format for {param}: line {number} must be an object with a "
                           "'messages' list of {role, content}, role one of system/user/assistant and content a "
                           "string.", param, "invalid_file_format")
        if not any(m["role"] == "assistant" for m in messages):
            raise ApiError(400, f"Invalid file format for {param}: line {number} has no assistant message to "
                           "train on.", param, "invalid_file_format")
        examples.append(messages)
    return examples


def trained_answers(examples: list[list[dict]]) -> dict[str, str]:
    """Each user message answered by the assistant message right after it."""
    answers = {}
    for messages in examples:
        for asked, answered in zip(messages, messages[1:]):
            if asked["role"] == "user" and answered["role"] == "assistant":
                answers[normalise(asked["content"])] = answered["content"]
    return answers


# --- a real classifier for classification-shaped data ------------------------------------------

RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                  "full_valid_loss", "full_valid_mean_token_accuracy")  # as in the API's step_metrics.csv
MIN_LOGPROB = -9999.0  # log(0) = -inf is not valid JSON, so a label with probability ~0 gets this floor


def final_answer(messages: list[dict]) -> str:
    return [m["content"] for m in messages if m["role"] == "assistant"][-1]


def asked_text(messages: list[dict]) -> str:
    """The text being classified: the last user message (system instructions are the same in every example)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def class_labels(examples: list[list[dict]]) -> list[str] | None:
    """The sorted labels if the answers look like classification (2-10 values, each seen twice, with
    more examples than 2 per label), else None: 15 distinct 호반스 answers are Q&A, not classes."""
    counts = Counter(final_answer(m) for m in examples)
    if 2 <= len(counts) <= 10 and min(counts.values()) >= 2 and len(examples) > 2 * len(counts):
        return sorted(counts)
    return None


@dataclass
class Classifier:
    vectorizer: HashingVectorizer
    model: SGDClassifier

    def proba(self, text: str) -> dict[str, float]:
        return {str(label): float(p) for label, p in
                zip(self.model.classes_, self.model.predict_proba(self.vectorizer.transform([text]))[0])}

    def label(self, text: str) -> str:
        proba = self.proba(text)
        return max(proba, key=proba.get)

    def logprobs(self, text: str, n_tokens: int, top: int) -> list[dict]:
        """Token logprobs of the chosen label, as a model that picks a label and then spells it.

        A token's probability is the classifier's probability of the labels that continue with it, given
        the tokens already written (natural log, like the API). For the first token that is each label's
        first token with log(predict_proba), summed where labels share it; once only the chosen label
        fits, its further tokens get logprob 0.0 and top_logprobs holds just that token.
        """
        encoding = get_encoding()
        proba = self.proba(text)
        spelled = {label: encoding.encode(label) for label in proba}
        chosen = spelled[max(proba, key=proba.get)]

        def entry(token: int, mass: float) -> dict:
            raw = encoding.decode_single_token_bytes(token)
            return {"token": raw.decode("utf-8", "replace"), "bytes": list(raw),
                    "logprob": max(MIN_LOGPROB, math.log(mass)) if mass > 0 else MIN_LOGPROB}

        content = []
        for i, token in enumerate(chosen[:n_tokens]):
            mass: Counter[int] = Counter()
            for label, tokens in spelled.items():
                if tokens[:i] == chosen[:i] and len(tokens) > i:
                    mass[tokens[i]] += proba[label]
            total = sum(mass.values())
            ranked = sorted(mass, key=lambda t: (-mass[t], t))[:top]
            content.append({**entry(token, mass[token] / total),
                            "top_logprobs": [entry(t, mass[t] / total) for t in ranked]})
        return content


def batch_metrics(model: SGDClassifier, classes: list[str], features, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy (natural log) and accuracy; one label counts as one 'token' here. Computed directly
    rather than with sklearn's log_loss, whose input checks took half of the training time."""
    if hasattr(model, "coef_"):
        proba = model.predict_proba(features)
    else:  # before the first update the model knows nothing: every label equally likely
        proba = np.full((len(labels), len(classes)), 1 / len(classes))
    picked = proba[np.arange(len(labels)), np.searchsorted(classes, labels)]  # classes are sorted, like classes_
    loss = -np.mean(np.log(np.clip(picked, 1e-15, 1.0)))  # clipped like log_loss: no infinite loss
    accuracy = np.mean(np.asarray(classes)[proba.argmax(axis=1)] == labels)
    return round(float(loss), 6), round(float(accuracy), 6)


def auto_batch_size(n_examples: int) -> int:
    """The stand-in's "auto" rule (about 2% of the examples, 1 to 256), so a job has tens to a few hundred steps."""
    return max(1, min(256, n_examples // 50))


def train_classifier(train: list[list[dict]], valid: list[list[dict]], n_epochs: int, batch_size: int,
                     seed: int) -> tuple[Classifier, list[dict]]:
    """Fit for real, one mini-batch per step, and return the model and one metrics row per step.

    train_* are measured on the step's batch just before that step's update (as a training step's forward
    pass sees it: measured after, a batch of one is always already learned). valid_* cover the whole
    validation file after the update, every `valid_every` steps and on the last step, blank otherwise (the
    API also leaves blanks); full_valid_* repeat the last step's valid_* on the last row only.
    """
    # HashingVectorizer is stateless (no vocabulary to fit), so every mini-batch is featurised the
    # same way before and after more data arrives: exactly what incremental partial_fit needs.
    vectorizer = HashingVectorizer(n_features=2**18)
    # average=True keeps the running mean of the weights (averaged SGD): with batches of one, the last step's
    # weights swing with the last example seen, the average is the steadier model a finished job should serve.
    model = SGDClassifier(loss="log_loss", average=True, random_state=seed)
    features = vectorizer.transform([asked_text(m) for m in train])
    labels = np.array([final_answer(m) for m in train])
    valid_features = vectorizer.transform([asked_text(m) for m in valid]) if valid else None
    valid_labels = np.array([final_answer(m) for m in valid])
    classes = class_labels(train)
    order = np.random.RandomState(seed)  # the example order, reshuffled every epoch
    total_steps = n_epochs * math.ceil(len(train) / batch_size)
    valid_every = max(1, total_steps // 20)
    rows = []
    for _ in range(n_epochs):
        shuffled = order.permutation(len(train))
        for start in range(0, len(train), batch_size):
            batch = shuffled[start:start + batch_size]
            row = dict.fromkeys(RESULT_COLUMNS)
            row["step"] = len(rows) + 1
            row["train_loss"], row["train_accuracy"] = batch_metrics(model, classes, features[batch], labels[batch])
            model.partial_fit(features[batch], labels[batch], classes=classes)
            last = row["step"] == total_steps
            if valid and (row["step"] % valid_every == 0 or last):
                row["valid_loss"], row["valid_mean_token_accuracy"] = batch_metrics(model, classes, valid_features,
                                                                                    valid_labels)
                if last:
                    row["full_valid_loss"], row["full_valid_mean_token_accuracy"] = (
                        row["valid_loss"], row["valid_mean_token_accuracy"])
            rows.append(row)
    return Classifier(vectorizer, model), rows


def metrics_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    writer.writerows([["" if row[c] is None else row[c] for c in RESULT_COLUMNS] for row in rows])
    return out.getvalue().encode()


def page(items: list[dict], request: Request, default_limit: int) -> dict:
    """A cursor page: items after the one named by ?after=, at most ?limit= of them."""
    after = request.query.get("after")
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    limit = request.int_param("limit", default_limit)
    chosen = items[start:start + limit]
    return {"object": "list", "data": chosen, "has_more": start + limit < len(items)}


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.", "model",
                    "model_not_found")


class StandIn:
    """All state of the stand-in server; `respond` answers one HTTP request."""

    def __init__(self, data_dir: Path = DATA_DIR, start_time: int = START_TIME):
        self.refuse_fine_tuning = False  # True: job creation answers 403, like an org that lost fine-tuning
        quotes = json.loads((data_dir / "hobanse" / "slide_quotes.json").read_text(encoding="utf-8"))["quotes"]
        self.slide_answers = {(q["model_kind"], quote_key(q["question"])): q["answer"] for q in quotes}
        self.start_time = start_time
        self.now = start_time
        self.requests = 0
        self.counters: Counter[str] = Counter()
        self.files: dict[str, dict] = {}
        self.file_bytes: dict[str, bytes] = {}
        self.jobs: dict[str, Job] = {}
        self.fine_tuned: dict[str, dict] = {}  # model id -> {"model": public dict, "answers": ...}
        self.lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------

    def respond(self, method: str, target: str, content_type: str, body: bytes) -> tuple[int, str, bytes]:
        """Answer one request: (status, content type, body)."""
        with self.lock:
            self.now = self.start_time + self.requests
            self.requests += 1
            url = urlsplit(target)
            request = Request({k: v[-1] for k, v in parse_qs(url.query).items()}, content_type, body)
            status = 200
            try:
                result = self.route(method, url.path, request)
            except ApiError as error:
                status, result = error.status, error.body()
            except Exception:  # answer like the API would, and show the bug on the console
                traceback.print_exc()
                status, result = 500, ApiError(500, "The offline stand-in failed.").body()
        if isinstance(result, bytes):
            return status, "application/octet-stream", result
        return status, "application/json", json.dumps(result, ensure_ascii=False).encode()

    def route(self, method: str, path: str, request: Request) -> dict | bytes:
        for route_method, pattern, handler in ROUTES:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return handler(self, request, *(unquote(g) for g in match.groups()))
        raise ApiError(404, f"Invalid URL ({method} {path})")

    def new_id(self, prefix: str) -> str:
        self.counters[prefix] += 1
        return f"{prefix}-standin{self.counters[prefix]:04d}"

    # --- models ---------------------------------------------------------------------------

    def base_model(self, model_id: str) -> dict:
        created = datetime.strptime(model_id[-10:], "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return {"id": model_id, "object": "model", "created": int(created.timestamp()),
                "owned_by": "offline-stand-in", "shutdown_date": SHUTDOWN_DATE}

    def list_models(self, request: Request) -> dict:
        models = [self.base_model(m) for m in BASE_MODELS] + [m["model"] for m in self.fine_tuned.values()]
        return {"object": "list", "data": models}

    def get_model(self, request: Request, model_id: str) -> dict:
        if model_id in BASE_MODELS:
            return self.base_model(model_id)
        if model_id in self.fine_tuned:
            return self.fine_tuned[model_id]["model"]
        raise model_not_found(model_id)

    def delete_model(self, request: Request, model_id: str) -> dict:
        if model_id in BASE_MODELS:
            raise ApiError(403, f"You cannot delete {model_id}: only fine-tuned models your organization owns "
                           "can be deleted.", "model")
        if model_id not in self.fine_tuned:
            raise model_not_found(model_id)
        del self.fine_tuned[model_id]
        return {"id": model_id, "object": "model", "deleted": True}

    # --- files ----------------------------------------------------------------------------

    def create_file(self, request: Request) -> dict:
        if not request.content_type.startswith("multipart/form-data"):
            raise ApiError(400, "Expected a multipart/form-data body.")
        fields = parse_multipart(request.content_type, request.body)
        if not fields:
            raise ApiError(400, "Expected a multipart/form-data body.")
        if "file" not in fields or "purpose" not in fields:
            raise ApiError(400, "Missing required parameter: 'file' and 'purpose' are both required.",
                           "file" if "file" not in fields else "purpose")
        filename, content = fields["file"]
        purpose = fields["purpose"][1].decode("utf-8")
        if purpose not in ("assistants", "batch", "fine-tune", "vision", "user_data"):
            raise ApiError(400, f"Invalid value for purpose: '{purpose}'.", "purpose")
        file_id = self.new_id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": self.now,
                               "filename": filename or "upload", "purpose": purpose, "status": "processed",
                               "expires_at": None, "status_details": None}
        self.file_bytes[file_id] = content
        return self.files[file_id]

    def file(self, file_id: str, param: str | None = None) -> dict:
        if file_id not in self.files:
            raise ApiError(404, f"No such File object: {file_id}", param)
        return self.files[file_id]

    def list_files(self, request: Request) -> dict:
        purpose = request.query.get("purpose")
        files = [f for f in self.files.values() if purpose in (None, f["purpose"])]
        files.sort(key=lambda f: (f["created_at"], f["id"]), reverse=request.query.get("order", "desc") == "desc")
        return page(files, request, 10000)

    def get_file(self, request: Request, file_id: str) -> dict:
        return self.file(file_id)

    def delete_file(self, request: Request, file_id: str) -> dict:
        self.file(file_id)
        del self.files[file_id], self.file_bytes[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def file_content(self, request: Request, file_id: str) -> bytes:
        self.file(file_id)
        return self.file_bytes[file_id]

    # --- fine-tuning ----------------------------------------------------------------------

    def examples(self, file_id: str, param: str) -> list[list[dict]]:
        if self.file(file_id, param)["purpose"] != "fine-tune":
            raise ApiError(400, f"File {file_id} has purpose '{self.files[file_id]['purpose']}', "
                           "but fine-tuning needs purpose 'fine-tune'.", param)
        return parse_chat_jsonl(self.file_bytes[file_id], param)

    def create_job(self, request: Request) -> dict:
        if self.refuse_fine_tuning:
            raise ApiError(403, "This organization can no longer create fine-tuning jobs. (Emulated by the "
                           "offline stand-in because refuse_fine_tuning is set; nothing was sent to OpenAI.)")
        body = request.json()
        model = body.get("model")
        if model not in BASE_MODELS:
            raise ApiError(400, f"Model {model} is not available for fine-tuning in the offline stand-in; "
                           f"choose one of: {', '.join(BASE_MODELS)}.", "model", "model_not_available")
        training_file = body.get("training_file")
        validation_file = body.get("validation_file")
        examples = self.examples(training_file, "training_file")
        valid = self.examples(validation_file, "validation_file") if validation_file is not None else []
        if len(examples) < MIN_EXAMPLES:
            raise ApiError(400, f"Training file has {len(examples)} example(s), but must have at least "
                           f"{MIN_EXAMPLES} examples", "training_file", "invalid_n_examples")

        method = body.get("method") or {"type": "supervised"}
        if method.get("type") != "supervised":
            raise ApiError(400, "The offline stand-in only emulates supervised fine-tuning.", "method")
        given = {**(body.get("hyperparameters") or {}),
                 **((method.get("supervised") or {}).get("hyperparameters") or {})}
        hyperparameters = {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": "auto"}
        for name, value in given.items():
            if name not in hyperparameters or not (value == "auto" or isinstance(value, (int, float)) and value > 0):
                raise ApiError(400, f"Invalid hyperparameter {name}={value!r}.", f"hyperparameters.{name}")
            hyperparameters[name] = value
        if hyperparameters["n_epochs"] == "auto":
            hyperparameters["n_epochs"] = default_epochs(len(examples))
        seed = DEFAULT_SEED if body.get("seed") is None else body["seed"]

        classifier, steps = None, []
        labels = class_labels(examples)
        if labels:  # learning_rate_multiplier is kept in the job but unused: SGDClassifier sets its own rate
            unknown = sorted({final_answer(m) for m in valid} - set(labels))
            if unknown:
                raise ApiError(400, f"The validation file has answers the training file never gives: {unknown}. "
                               "The offline stand-in's classifier can only score known labels.", "validation_file")
            if hyperparameters["batch_size"] == "auto":
                hyperparameters["batch_size"] = auto_batch_size(len(examples))
            classifier, steps = train_classifier(examples, valid, int(hyperparameters["n_epochs"]),
                                                 int(hyperparameters["batch_size"]), seed)

        job_id = self.new_id("ftjob")
        job = Job(
            public={
                "id": job_id, "object": "fine_tuning.job", "created_at": self.now, "error": None,
                "fine_tuned_model": None, "finished_at": None, "hyperparameters": hyperparameters,
                "model": model, "organization_id": ORGANIZATION_ID, "result_files": [],
                "seed": seed,
                "status": "validating_files", "trained_tokens": None,
                "training_file": training_file, "validation_file": validation_file, "estimated_finish": None,
                "integrations": [], "metadata": body.get("metadata"),
                "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            },
            suffix=body.get("suffix"),
            trained_tokens=hyperparameters["n_epochs"] * sum(count_tokens(m) for m in examples),
            answers=trained_answers(examples),
            classifier=classifier,
            steps=steps,
        )
        self.jobs[job_id] = job
        validating = f"Validating training file: {training_file}"
        if validation_file:
            validating += f" and validation file: {validation_file}"
        self.log(job, f"Created fine-tuning job: {job_id}", CLASSIFIER_NOTICE if classifier else CREATION_NOTICE,
                 validating)
        return job.public

    def log(self, job: Job, *messages: str) -> None:
        for message in messages:
            job.events.append({"id": self.new_id("ftevent"), "object": "fine_tuning.job.event",
                               "created_at": self.now, "level": "info", "message": message, "data": {},
                               "type": "message"})

    def log_steps(self, job: Job) -> None:
        """Metrics events like the API's, about every 10% of steps, with the classifier run's own numbers."""
        total, every = len(job.steps), max(1, len(job.steps) // 10)
        for row in [row for row in job.steps if row["step"] % every == 0 or row["step"] == total]:
            message = f"Step {row['step']}/{total}: training loss={row['train_loss']:.2f}"
            data = {"step": row["step"], "total_steps": total, "train_loss": row["train_loss"],
                    "train_mean_token_accuracy": row["train_accuracy"]}
            if row["valid_loss"] is not None:
                message += f", validation loss={row['valid_loss']:.2f}"
                data.update(valid_loss=row["valid_loss"], valid_mean_token_accuracy=row["valid_mean_token_accuracy"])
            job.events.append({"id": self.new_id("ftevent"), "object": "fine_tuning.job.event",
                               "created_at": self.now, "level": "info", "message": message, "data": data,
                               "type": "metrics"})

    def result_file(self, job: Job) -> str:
        """The step metrics as the API serves a result file: CSV text, base64-encoded."""
        content = base64.b64encode(metrics_csv(job.steps))
        file_id = self.new_id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": self.now,
                               "filename": "step_metrics.csv", "purpose": "fine-tune-results",
                               "status": "processed", "expires_at": None, "status_details": None}
        self.file_bytes[file_id] = content
        return file_id

    def job(self, job_id: str) -> Job:
        if job_id not in self.jobs:
            raise ApiError(404, f"Could not find fine-tuning job {job_id}.", "fine_tuning_job_id")
        return self.jobs[job_id]

    def get_job(self, request: Request, job_id: str) -> dict:
        """Each look at a job moves it one state on, so a polling loop finishes in three calls."""
        job = self.job(job_id)
        public = job.public
        if public["status"] == "validating_files":
            public["status"] = "queued"
            self.log(job, "Files validated, moving job to queued state")
        elif public["status"] == "queued":
            public["status"] = "running"
            self.log(job, "Fine-tuning job started")
            self.log_steps(job)
        elif public["status"] == "running":
            self.counters["model"] += 1
            model_id = f"ft:{public['model']}:{ORG}:{job.suffix or ''}:standin{self.counters['model']:02d}"
            public.update(status="succeeded", fine_tuned_model=model_id, finished_at=self.now,
                          trained_tokens=job.trained_tokens)
            if job.classifier:
                public["result_files"] = [self.result_file(job)]
            self.fine_tuned[model_id] = {
                "model": {"id": model_id, "object": "model", "created": self.now, "owned_by": ORG,
                          "shutdown_date": SHUTDOWN_DATE},
                "answers": job.answers,
                "classifier": job.classifier,
            }
            self.log(job, f"New fine-tuned model created: {model_id}", "The job has successfully completed")
        return public

    def list_jobs(self, request: Request) -> dict:
        return page([job.public for job in reversed(self.jobs.values())], request, 20)

    def cancel_job(self, request: Request, job_id: str) -> dict:
        job = self.job(job_id)
        if job.public["status"] in ("succeeded", "failed", "cancelled"):
            raise ApiError(400, f"Job {job_id} has already finished ({job.public['status']}).")
        job.public["status"] = "cancelled"
        self.log(job, "Fine-tuning job cancelled")
        return job.public

    def list_events(self, request: Request, job_id: str) -> dict:
        return page(list(reversed(self.job(job_id).events)), request, 20)

    def list_checkpoints(self, request: Request, job_id: str) -> dict:
        self.job(job_id)
        return {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}

    # --- chat -----------------------------------------------------------------------------

    def answer(self, model: str, messages: list[dict]) -> str:
        """Quoted, trained or copied-from-context text only; see tests/standin_answers.py."""
        question = messages[-1]["content"]
        classifier = self.fine_tuned.get(model, {}).get("classifier")
        if classifier:  # a real (scikit-learn) classifier: its most probable label
            return classifier.label(question)
        if model in BASE_MODELS:
            return (self.slide_answers.get(("base", quote_key(question)))
                    or standin_answers.answer_from_prompt(messages) or NON_ANSWER)
        trained = self.fine_tuned[model]["answers"]
        return (trained.get(normalise(question)) or self.slide_answers.get(("fine-tuned", quote_key(question)))
                or standin_answers.nearest_trained_answer(question, trained) or NON_ANSWER)

    def chat(self, request: Request) -> dict:
        body = request.json()
        model = body.get("model")
        if model not in BASE_MODELS and model not in self.fine_tuned:
            raise model_not_found(model)
        if body.get("stream"):
            raise ApiError(400, "The offline stand-in does not stream responses.", "stream")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "'messages' must be a list of message objects.", "messages")
        texts = [{"role": m.get("role"), "content": text_of(m.get("content"))} for m in messages]
        if not texts or texts[-1]["role"] != "user":
            raise ApiError(400, "The offline stand-in answers only when the last message is the user's.", "messages")
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            raise ApiError(400, f"Invalid 'n': {n!r}.", "n")

        content = self.answer(model, texts)
        finish_reason, logprobs = "stop", None  # no model here, so no probabilities to report...
        classifier = self.fine_tuned.get(model, {}).get("classifier")
        if classifier:  # ...except a classifier's. temperature is ignored: the classifier is deterministic.
            content, finish_reason, logprobs = self.classifier_reply(classifier, texts[-1]["content"], content, body)
        prompt_tokens = count_tokens(messages)
        completion_tokens = n * len(get_encoding().encode(content))
        choice = {"message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                  "logprobs": logprobs, "finish_reason": finish_reason}
        return {
            "id": self.new_id("chatcmpl"), "object": "chat.completion", "created": self.now, "model": model,
            "choices": [{"index": i, **choice} for i in range(n)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "service_tier": "default", "system_fingerprint": FINGERPRINT,
        }

    @staticmethod
    def classifier_reply(classifier: Classifier, text: str, label: str, body: dict) -> tuple[str, str, dict | None]:
        """The label cut to max_tokens (as the API cuts an answer), and its logprobs if asked for."""
        tokens = get_encoding().encode(label)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or len(tokens)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ApiError(400, f"Invalid 'max_tokens': {max_tokens!r}.", "max_tokens")
        content, finish_reason = (label, "stop") if max_tokens >= len(tokens) else (
            get_encoding().decode(tokens[:max_tokens]), "length")
        if not body.get("logprobs"):
            return content, finish_reason, None
        top = body.get("top_logprobs") or 0
        if not isinstance(top, int) or not 0 <= top <= 20:
            raise ApiError(400, f"Invalid 'top_logprobs': {top!r}; expected an integer from 0 to 20.", "top_logprobs")
        return content, finish_reason, {"content": classifier.logprobs(text, max_tokens, top), "refusal": None}


ROUTES: list[tuple[str, re.Pattern, Callable]] = [
    (method, re.compile("/v1" + path.replace("{id}", "([^/]+)")), handler)
    for method, path, handler in [
        ("GET", "/models", StandIn.list_models),
        ("GET", "/models/{id}", StandIn.get_model),
        ("DELETE", "/models/{id}", StandIn.delete_model),
        ("POST", "/files", StandIn.create_file),
        ("GET", "/files", StandIn.list_files),
        ("GET", "/files/{id}", StandIn.get_file),
        ("DELETE", "/files/{id}", StandIn.delete_file),
        ("GET", "/files/{id}/content", StandIn.file_content),
        ("POST", "/fine_tuning/jobs", StandIn.create_job),
        ("GET", "/fine_tuning/jobs", StandIn.list_jobs),
        ("GET", "/fine_tuning/jobs/{id}", StandIn.get_job),
        ("POST", "/fine_tuning/jobs/{id}/cancel", StandIn.cancel_job),
        ("GET", "/fine_tuning/jobs/{id}/events", StandIn.list_events),
        ("GET", "/fine_tuning/jobs/{id}/checkpoints", StandIn.list_checkpoints),
        ("POST", "/chat/completions", StandIn.chat),
    ]
]


# The stdlib server, not a mocking library: the SDK must go through a real socket on 127.0.0.1
# (its real HTTP path), and this needs no extra dependency.
class _Server(ThreadingHTTPServer):
    def __init__(self, port: int, standin: StandIn):
        super().__init__(("127.0.0.1", port), _Handler)
        self.standin = standin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the API
    disable_nagle_algorithm = True  # headers and body go out in separate writes; without this each costs ~40 ms
    server: _Server

    def handle_any(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(*self.server.standin.respond(self.command, self.path, self.headers.get("Content-Type", ""), body))

    do_GET = do_POST = do_DELETE = handle_any

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by http.server itself (bad request line, unknown method) keep our shape and header."""
        self.close_connection = True
        body = ApiError(code, message or HTTPStatus(code).phrase).body()
        self.reply(code, "application/json", json.dumps(body).encode())

    def reply(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header(*STANDIN_HEADER)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and recordings stay quiet


@contextmanager
def serve(standin: StandIn | None = None, port: int = 0) -> Iterator[str]:
    """Run a stand-in on 127.0.0.1 (a free port by default) and yield its base URL."""
    server = _Server(port, standin or StandIn())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Offline stand-in for the OpenAI endpoints the course uses.")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with serve(port=args.port) as base_url:
        print(base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
