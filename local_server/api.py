"""The OpenAI endpoints the course calls, as FastAPI routes: files, fine_tuning.jobs, models, chat.

Each object has the shape OpenAI's published API gives it, so the unmodified `openai` SDK parses it
with its own types. Bodies are checked with pydantic models that accept (and ignore) the optional
fields OpenAI has and a local model does not need (user, store, metadata on chat, …).
"""
from __future__ import annotations

import secrets
import time
from urllib.parse import urlsplit
from typing import Literal, Optional, Union

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

from helpers import chat_data
from helpers.local import LOCAL_OWNER, SERVER_HEADER

from . import errors
from .errors import ApiError, not_found
from .inference import GenerationRequest
from .jobs import read_examples
from .keys import SOLE_USER, KeyRing, Principal
from .rate_limit import RateLimiter
from .server import is_loopback
from .store import FINAL_STATUSES, new_id

MAX_STOP_SEQUENCES = 4
# The largest JSON body, refused before it is parsed: the longest prompt the model takes (its context, 32,768 tokens
# on Gemma 3 270M) fits with room to spare, even as JSON escapes ("\uXXXX", 6 bytes a Korean character).
MAX_JSON_BODY_BYTES = 4_000_000
MULTIPART_ENVELOPE_BYTES = 64_000  # an upload's boundaries, part headers, file name and purpose around the file
SUFFIX_MAX_LENGTH = 64


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Body(_Lenient):
    """A whole request body."""

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data):
        """JSON may spell half a surrogate pair ("\\ud800"): Python keeps it in the str, and no tokenizer or encoder
        takes it. Refused here, naming where it is, instead of failing deep in the model."""
        where = _lone_surrogate_at(data, ())
        if where is not None:
            param = errors.param_name(where)
            raise ApiError(400, f"'{param}' 에 짝이 없는 서로게이트 문자(\\ud800~\\udfff)가 있습니다: 올바른 유니코드 "
                                f"글이 아닙니다 (Invalid Unicode in '{param}').", "invalid_value", param)
        return data


def _lone_surrogate_at(value, where: tuple) -> tuple | None:
    """The location of the first string that is not valid Unicode (a lone surrogate), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _lone_surrogate_at(item, (*where, key))
        if found is not None:
            return found
    return None


# Strict numbers: JSON's true is not 1 (pydantic's lax mode would train `"n_epochs": true` for one epoch).
class Hyperparameters(_Lenient):
    n_epochs: Union[Literal["auto"], StrictInt] = "auto"
    batch_size: Union[Literal["auto"], StrictInt] = "auto"
    learning_rate_multiplier: Union[Literal["auto"], StrictFloat] = "auto"


class Supervised(_Lenient):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(_Lenient):
    type: str
    supervised: Optional[Supervised] = None


class JobCreate(_Body):
    model: str
    training_file: str
    validation_file: Optional[str] = None
    suffix: Optional[str] = None
    seed: Optional[StrictInt] = Field(default=None, ge=0, le=2_147_483_647)
    hyperparameters: Optional[Hyperparameters] = None
    method: Optional[Method] = None
    metadata: Optional[dict[str, str]] = None


class CompletionCreate(_Body):
    model: str
    prompt: str
    max_tokens: StrictInt = Field(default=16, ge=1)  # OpenAI's default for the legacy endpoint
    temperature: StrictFloat = Field(default=1.0, ge=0, le=2)
    top_p: StrictFloat = Field(default=1.0, ge=0, le=1)  # 0: only the most likely token, as OpenAI takes it
    n: StrictInt = Field(default=1, ge=1, le=8)
    seed: Optional[StrictInt] = None
    stop: Union[str, list[str], None] = None
    logprobs: Optional[StrictInt] = Field(default=None, ge=0, le=5)
    echo: Optional[StrictBool] = None
    stream: Optional[StrictBool] = None


class ChatCreate(_Body):
    model: str
    messages: list[dict] = Field(min_length=1)
    temperature: StrictFloat = Field(default=1.0, ge=0, le=2)
    top_p: StrictFloat = Field(default=1.0, ge=0, le=1)  # 0: only the most likely token, as OpenAI takes it
    max_tokens: Optional[StrictInt] = Field(default=None, ge=1)
    max_completion_tokens: Optional[StrictInt] = Field(default=None, ge=1)
    n: StrictInt = Field(default=1, ge=1, le=8)
    seed: Optional[StrictInt] = None
    stop: Union[str, list[str], None] = None
    logprobs: Optional[StrictBool] = None
    top_logprobs: Optional[StrictInt] = Field(default=None, ge=0, le=20)
    frequency_penalty: Optional[StrictFloat] = None
    presence_penalty: Optional[StrictFloat] = None
    stream: Optional[StrictBool] = None


def create_app(server) -> FastAPI:
    """The ASGI app over a `server.LocalServer` (store, engine, tokenizer, scheduler)."""
    app = FastAPI(title="Local OpenAI-compatible fine-tuning server", version="1")
    errors.install(app)

    def body_limit(scope) -> tuple[int, errors.BodyTooLarge]:
        if scope["method"] == "POST" and scope["path"] == "/v1/files":
            return (server.settings.max_upload_bytes + MULTIPART_ENVELOPE_BYTES,
                    _upload_too_large(server.settings.max_upload_bytes))
        return MAX_JSON_BODY_BYTES, errors.BodyTooLarge(
            f"요청 본문이 너무 큽니다: 이 서버는 {MAX_JSON_BODY_BYTES / 1_000_000:g} MB 까지 받습니다 "
            "(Request body too large).", "request_too_large", None)

    app.add_middleware(_BodyLimit, limit_for=body_limit)  # added first: inside the middleware below, which logs
    settings = server.settings
    key_ring = settings.keys or (KeyRing.single(settings.api_key) if settings.api_key else None)

    @app.middleware("http")
    async def check_key_and_identify(request: Request, call_next):
        """Every path but /health needs a key when keys are set (the docs too: they list every route); its holder goes
        to request.state.principal (SOLE_USER without keys; None on /health without a key). Every response, errors
        included, says which model this server serves (recordings name their source)."""
        principal = key_ring.identify(request.headers.get("authorization", "")) if key_ring else SOLE_USER
        refused = _refused_origin(request, is_loopback(settings.host))
        if refused:
            response = errors.error_response(request, 403, refused, "forbidden")
        elif principal is None and request.url.path != "/health":
            response = errors.error_response(request, 401, "API 키가 없거나 틀렸습니다. 강사에게 받은 키를 "
                                             "OPENAI_API_KEY 에 넣으세요 (Incorrect API key provided).", "invalid_api_key")
        else:
            request.state.principal = principal
            try:
                response = await call_next(request)
            except Exception as err:  # noqa: BLE001 - any bug becomes a 500 in OpenAI's shape, not a dropped connection
                response = errors.server_error(request, err, server.store.data_dir)
        if response.status_code >= 400:
            errors.log_failure(request, response.status_code)
        response.headers[SERVER_HEADER] = f"{server.base_model_id}; device={server.device}"
        return response

    @app.get("/health")
    def health():
        return {"status": "ok", "model": server.base_model_id, "device": server.device}

    app.include_router(_files(server), prefix="/v1")
    app.include_router(_jobs(server), prefix="/v1")
    app.include_router(_models(server), prefix="/v1")
    app.include_router(_generation(server), prefix="/v1")
    return app


def _refused_origin(request: Request, loopback_server: bool) -> str | None:
    """Why a request is refused as coming from somewhere it must not, or None.

    A server without a key trusts whoever can reach it, so it must be reachable only from this computer's programs:
    - a Host other than a loopback name is a web page whose own domain now resolves to 127.0.0.1 (DNS rebinding);
      a server on another address (a classroom's, key required) is reached by its own names, which it cannot know;
    - an Origin other than this server's, or Sec-Fetch-Site: cross-site, is a browser page of another site: a plain
      HTML form or fetch() can POST (an upload, a job) without any preflight. The openai SDK and curl send neither.
    """
    host = request.headers.get("host", "")
    if loopback_server and not is_loopback(urlsplit(f"//{host}").hostname):
        return (f"이 서버는 이 컴퓨터의 주소(localhost, 127.0.0.1, [::1])로만 받습니다: Host '{host}' 는 거절합니다 "
                "(Requests must be addressed to localhost).")
    origin = request.headers.get("origin")
    if (origin is not None and urlsplit(origin).netloc != host) or \
            request.headers.get("sec-fetch-site") == "cross-site":
        return (f"다른 웹 사이트의 페이지({origin or '알 수 없음'})가 보낸 요청은 받지 않습니다: openai SDK 나 curl 로 "
                "요청하세요 (Cross-origin requests are not allowed).")
    return None


class _BodyLimit:
    """Refuse a request body over its limit before reading it (by Content-Length) or as soon as the bytes read pass
    it (no or a false Content-Length): a huge body is never held in memory or on disk."""

    def __init__(self, app, limit_for):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, too_large = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            request = Request(scope)
            response = errors.error_response(request, 413, too_large.detail, too_large.code, too_large.param)
            return await response(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large
            return message

        await self.app(scope, counted_receive, send)


def _upload_too_large(limit_bytes: int) -> errors.BodyTooLarge:
    return errors.BodyTooLarge(f"파일이 너무 큽니다: 이 서버의 업로드 한도는 {limit_bytes / 1_000_000:g} MB 입니다 "
                               "(File exceeds the upload size limit).", "file_too_large", "file")


def _principal(request: Request) -> Principal:
    """Who is asking (set by the key check), for the routes: `principal: Principal = Depends(_principal)`."""
    return request.state.principal


def _page(items: list[dict], after: str | None, limit: int, ids: bool = False) -> dict:
    """OpenAI's cursor list: items after the one whose id is `after`, at most `limit`."""
    if after is not None:
        position = next((i for i, item in enumerate(items) if item["id"] == after), None)
        items = items[position + 1:] if position is not None else []
    page = {"object": "list", "data": items[:limit], "has_more": len(items) > limit}
    if ids:
        page["first_id"] = page["data"][0]["id"] if page["data"] else None
        page["last_id"] = page["data"][-1]["id"] if page["data"] else None
    return page


# ---------------------------------------------------------------------------------------------- files
def file_object(file: dict) -> dict:
    """No expires_at or status_details: the spec allows them out but not null, and a local file neither expires nor
    fails to process (a bad file is refused at upload)."""
    return {"id": file["id"], "object": "file", "bytes": file["bytes"], "created_at": file["created_at"],
            "filename": file["filename"], "purpose": file["purpose"], "status": "processed"}


def _files(server) -> APIRouter:
    router = APIRouter()
    store = server.store

    def existing(file_id: str, principal: Principal) -> dict:
        file = store.file(file_id)
        if not principal.sees(file):  # another student's file is as missing as a deleted one
            raise not_found("File", file_id)
        return file

    @router.post("/files")
    def create_file(file: UploadFile = File(...), purpose: str = Form(...),
                    principal: Principal = Depends(_principal)):
        if purpose != "fine-tune":
            raise ApiError(400, f"이 로컬 서버는 purpose 'fine-tune' 파일만 받습니다 (받은 값: '{purpose}'). "
                                f"(Invalid purpose: {purpose})", "invalid_value", "purpose")
        content = file.file.read(server.settings.max_upload_bytes + 1)
        if len(content) > server.settings.max_upload_bytes:  # within the envelope the body limit allows
            raise _upload_too_large(server.settings.max_upload_bytes)
        server.check_training_file(content, file.filename or "upload.jsonl")
        return file_object(store.add_file(content, file.filename or "upload.jsonl", purpose, principal.name))

    @router.get("/files")
    def list_files(purpose: Optional[str] = None, limit: int = Query(10_000, ge=1, le=10_000),
                   after: Optional[str] = None, order: Literal["asc", "desc"] = "desc",
                   principal: Principal = Depends(_principal)):
        return _page([file_object(f) for f in store.list_files(purpose, order) if principal.sees(f)], after, limit,
                     ids=True)

    @router.get("/files/{file_id}")
    def retrieve_file(file_id: str, principal: Principal = Depends(_principal)):
        return file_object(existing(file_id, principal))

    @router.get("/files/{file_id}/content")
    def file_content(file_id: str, principal: Principal = Depends(_principal)):
        file = existing(file_id, principal)
        return Response(store.file_path(file).read_bytes(), media_type="application/octet-stream")

    @router.delete("/files/{file_id}")
    def delete_file(file_id: str, principal: Principal = Depends(_principal)):
        existing(file_id, principal)
        store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    return router


# ---------------------------------------------------------------------------------------------- jobs
def job_object(job: dict) -> dict:
    hyper = job["hyperparameters"]
    error = job["error"]
    return {
        "id": job["id"], "object": "fine_tuning.job", "created_at": job["created_at"], "error": error,
        "fine_tuned_model": job["fine_tuned_model"], "finished_at": job["finished_at"],
        "hyperparameters": hyper, "model": job["model"], "organization_id": "org-local",
        "result_files": job["result_files"], "seed": job["seed"], "status": job["status"],
        "trained_tokens": job["trained_tokens"], "training_file": job["training_file"],
        "validation_file": job["validation_file"], "estimated_finish": job["estimated_finish"],
        "integrations": [], "metadata": job["metadata"],
        **({"user_provided_suffix": job["suffix"]} if job["suffix"] is not None else {}),
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
    }


def event_object(event: dict) -> dict:
    """`data` only where there is some (metrics): the spec allows it out but not null."""
    return {"id": event["id"], "object": "fine_tuning.job.event", "created_at": event["created_at"],
            "level": event["level"], "message": event["message"], "type": event["type"],
            **({"data": event["data"]} if event["data"] is not None else {})}


def checkpoint_object(checkpoint: dict) -> dict:
    return {"id": checkpoint["id"], "object": "fine_tuning.job.checkpoint", "created_at": checkpoint["created_at"],
            "fine_tuned_model_checkpoint": checkpoint["model_id"], "fine_tuning_job_id": checkpoint["job_id"],
            "metrics": checkpoint["metrics"], "step_number": checkpoint["step"]}


def _jobs(server) -> APIRouter:
    from .training import resolve_hyperparameters

    router = APIRouter()
    store = server.store

    def existing(job_id: str, principal: Principal) -> dict:
        job = store.job(job_id)
        if not principal.sees(job):
            raise not_found("FineTuningJob", job_id, "fine_tuning_job_id")
        return job

    def training_examples(file_id: str, param: str, principal: Principal) -> list:
        file = store.file(file_id)
        if not principal.sees(file) or file["purpose"] != "fine-tune":
            raise ApiError(400, f"{param} '{file_id}' 은(는) 올린 fine-tune 파일이 아닙니다. files.create 로 "
                                f"올린 파일의 id 를 주세요 (invalid {param}: {file_id}).", "invalid_file", param)
        return read_examples(store, file_id)

    @router.post("/fine_tuning/jobs")
    def create_job(body: JobCreate, principal: Principal = Depends(_principal)):
        # The base model, or one of its fine-tuned models (or checkpoints) to continue training, as OpenAI allows
        if body.model != server.base_model_id and not (body.model.startswith(f"ft:{server.base_model_id}:")
                                                       and principal.sees(store.model(body.model))):
            raise ApiError(400, f"모델 '{body.model}' 은(는) 이 서버에서 미세 조정할 수 없습니다. 이 서버의 기본 "
                                f"모델 '{server.base_model_id}' 이나 이 서버에서 미세 조정한 모델(ft:…)을 주세요 "
                                f"(Model {body.model} is not available for fine-tuning).", "model_not_available",
                           "model")
        if body.method is not None and body.method.type != "supervised":
            raise ApiError(400, f"이 로컬 서버는 supervised 미세 조정만 합니다 (받은 method: {body.method.type}) "
                                "(Unsupported method type).", "unsupported_method", "method.type")
        if body.suffix is not None and len(body.suffix) > SUFFIX_MAX_LENGTH:
            raise ApiError(400, f"suffix 는 {SUFFIX_MAX_LENGTH}자까지입니다 (suffix is too long).", "invalid_value",
                           "suffix")
        n_examples = len(training_examples(body.training_file, "training_file", principal))
        if n_examples < chat_data.MIN_EXAMPLES:
            raise ApiError(400, f"학습 파일의 예제가 {n_examples}개뿐입니다. 최소 {chat_data.MIN_EXAMPLES}개가 "
                                f"필요합니다 (Training file has {n_examples} example(s), but must have at least "
                                f"{chat_data.MIN_EXAMPLES}).", "invalid_n_examples", "training_file")
        if body.validation_file is not None:
            training_examples(body.validation_file, "validation_file", principal)
        hyper = (body.method.supervised.hyperparameters if body.method and body.method.supervised
                 else body.hyperparameters or Hyperparameters())
        requested = {"n_epochs": hyper.n_epochs, "batch_size": hyper.batch_size,
                     "learning_rate_multiplier": hyper.learning_rate_multiplier}
        try:
            resolve_hyperparameters(n_examples, **requested)  # refuse bad values now, resolve "auto" later
        except ValueError as err:
            raise ApiError(400, str(err), "invalid_hyperparameters", "hyperparameters") from None
        seed = body.seed if body.seed is not None else secrets.randbelow(2_147_483_647)
        # with --keys, a key's waiting jobs are limited: one student who submits ten must not fill the class's queue
        limit = server.settings.max_waiting_jobs if server.settings.keys else None
        job = store.add_job(owner=principal.name, waiting_limit=limit, model=body.model,
                            training_file=body.training_file, validation_file=body.validation_file, suffix=body.suffix,
                            seed=seed, hyperparameters=requested, metadata=body.metadata)
        if job is None:
            raise ApiError(429, f"기다리는 미세 조정 작업이 이미 {limit}개입니다: 한 사람이 한꺼번에 기다리게 할 수 있는 작업은 "
                                f"{limit}개까지입니다 (validating_files, queued). 앞 작업이 시작되면 다시 만들거나, 필요 없는 "
                                "작업을 client.fine_tuning.jobs.cancel(작업 id) 로 취소하세요 (This fine-tune request has "
                                f"been rate-limited: you have reached the maximum of {limit} queued fine-tuning jobs).",
                           "rate_limit_exceeded")
        return job_object(job)

    @router.get("/fine_tuning/jobs")
    def list_jobs(after: Optional[str] = None, limit: int = Query(20, ge=1, le=100),
                  principal: Principal = Depends(_principal)):
        return _page([job_object(j) for j in store.list_jobs() if principal.sees(j)], after, limit)

    @router.get("/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str, principal: Principal = Depends(_principal)):
        return job_object(existing(job_id, principal))

    @router.post("/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str, principal: Principal = Depends(_principal)):
        job = existing(job_id, principal)
        if job["status"] in FINAL_STATUSES:
            raise ApiError(400, f"작업이 이미 {job['status']} 상태라 취소할 수 없습니다 "
                                f"(Job has already {job['status']}).", "invalid_state", "fine_tuning_job_id")
        store.update_job(job_id, ("validating_files", "queued", "running"), status="cancelled",
                         finished_at=int(time.time()), estimated_finish=None, event="Fine-tuning job cancelled")
        return job_object(store.job(job_id))

    @router.get("/fine_tuning/jobs/{job_id}/events")
    def list_events(job_id: str, after: Optional[str] = None, limit: int = Query(20, ge=1, le=1000),
                    principal: Principal = Depends(_principal)):
        existing(job_id, principal)
        return _page([event_object(e) for e in store.events(job_id)], after, limit)

    @router.get("/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(job_id: str, after: Optional[str] = None, limit: int = Query(10, ge=1, le=100),
                         principal: Principal = Depends(_principal)):
        existing(job_id, principal)
        return _page([checkpoint_object(c) for c in store.checkpoints(job_id)], after, limit, ids=True)

    return router


# ---------------------------------------------------------------------------------------------- models
def _models(server) -> APIRouter:
    router = APIRouter()
    store = server.store

    def model_object(model_id: str, created: int, owned_by: str) -> dict:
        return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}

    def base_object() -> dict:
        return model_object(server.base_model_id, server.started_at, LOCAL_OWNER)

    @router.get("/models")
    def list_models(principal: Principal = Depends(_principal)):
        tuned = [model_object(m["id"], m["created_at"], LOCAL_OWNER) for m in store.list_models() if principal.sees(m)]
        return {"object": "list", "data": [base_object(), *tuned]}

    @router.get("/models/{model_id:path}")
    def retrieve_model(model_id: str, principal: Principal = Depends(_principal)):
        if model_id == server.base_model_id:
            return base_object()
        model = store.model(model_id)
        if not principal.sees(model):
            raise server.model_not_found(model_id)
        return model_object(model_id, model["created_at"], LOCAL_OWNER)

    @router.delete("/models/{model_id:path}")
    def delete_model(model_id: str, principal: Principal = Depends(_principal)):
        if model_id == server.base_model_id:
            raise ApiError(403, f"기본 모델 '{model_id}' 은(는) 지울 수 없습니다. 지울 수 있는 것은 미세 조정으로 만든 "
                                "모델뿐입니다 (You have insufficient permissions for this operation).",
                           "insufficient_permissions", "model")
        model = store.model(model_id)
        if not principal.sees(model):
            raise server.model_not_found(model_id)
        store.delete_model(model_id)
        server.engine.forget_adapter(model["adapter_path"])
        return {"id": model_id, "object": "model", "deleted": True}

    return router


# ---------------------------------------------------------------------------------------------- chat and completions
def _generation(server) -> APIRouter:
    rpm = server.settings.rate_limit_rpm
    router = APIRouter(dependencies=[Depends(RateLimiter(rpm).check)] if rpm else [])

    @router.post("/chat/completions")
    def create_chat_completion(body: ChatCreate, principal: Principal = Depends(_principal)):
        if body.stream:
            raise ApiError(400, "이 로컬 서버는 stream=True 를 지원하지 않습니다. stream 없이 요청하세요 "
                                "(Streaming is not supported).", "unsupported_parameter", "stream")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(body, name):
                raise ApiError(400, f"이 로컬 서버는 {name} 을(를) 0 으로만 받습니다 ({name} is not supported).",
                               "unsupported_parameter", name)
        if body.top_logprobs is not None and not body.logprobs:
            raise ApiError(400, "top_logprobs 를 쓰려면 logprobs=True 도 주어야 합니다 "
                                "(logprobs must be set to true if top_logprobs is set).", "invalid_value", "logprobs")
        max_tokens = body.max_completion_tokens or body.max_tokens or server.settings.default_max_tokens
        request = _generation_request(server, body, principal, server.render_chat(body.messages), max_tokens,
                                      (body.top_logprobs or 0) if body.logprobs else None, "messages")
        result = server.engine.submit(request).result()
        return _chat_completion(server, body.model, result)

    @router.post("/completions")
    def create_completion(body: CompletionCreate, principal: Principal = Depends(_principal)):
        """The legacy text endpoint: the prompt as it is, no turn format — what a pretrained model really does."""
        if body.stream or body.echo:
            raise ApiError(400, "이 로컬 서버는 stream 과 echo 를 지원하지 않습니다 (not supported).",
                           "unsupported_parameter", "stream" if body.stream else "echo")
        request = _generation_request(server, body, principal, server.render_text(body.prompt), body.max_tokens,
                                      body.logprobs, "prompt")
        result = server.engine.submit(request).result()
        choices = [{"index": i, "text": c.text, "finish_reason": c.finish_reason,
                    "logprobs": _legacy_logprobs(c.logprobs) if c.logprobs is not None else None}
                   for i, c in enumerate(result.choices)]
        return {"id": new_id("cmpl-"), "object": "text_completion", "created": int(time.time()), "model": body.model,
                "system_fingerprint": server.fingerprint, "choices": choices, "usage": _usage(result)}

    return router


def _generation_request(server, body, principal: Principal, prompt_ids: list[int], max_tokens: int,
                        top_logprobs: int | None, prompt_param: str) -> GenerationRequest:
    """The checks chat and completions share, then the engine's request."""
    adapter = server.adapter_for(body.model, principal)
    if len(prompt_ids) + max_tokens > server.context_length:
        raise ApiError(400, f"프롬프트({len(prompt_ids)} 토큰)와 max_tokens({max_tokens})의 합이 모델의 컨텍스트 "
                            f"{server.context_length} 토큰을 넘습니다 (This model's maximum context length is "
                            f"{server.context_length} tokens).", "context_length_exceeded", prompt_param)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > MAX_STOP_SEQUENCES or not all(stop):
        raise ApiError(400, f"stop 은 비어 있지 않은 글 {MAX_STOP_SEQUENCES}개까지입니다 (받은 값: {stop!r}) "
                            f"(stop must be up to {MAX_STOP_SEQUENCES} non-empty strings).", "invalid_value", "stop")
    return GenerationRequest(prompt_ids=prompt_ids, adapter=adapter, max_tokens=max_tokens,
                             temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop, n=body.n,
                             top_logprobs=top_logprobs)


def _legacy_logprobs(content: list[dict]) -> dict:
    """Chat-style token logprobs → the legacy completions shape (parallel lists and {token: logprob} dicts)."""
    offsets, position = [], 0
    for item in content:
        offsets.append(position)
        position += len(item["token"])
    return {"tokens": [item["token"] for item in content], "token_logprobs": [item["logprob"] for item in content],
            "top_logprobs": [{t["token"]: t["logprob"] for t in item["top_logprobs"]} for item in content],
            "text_offset": offsets}


def _usage(result) -> dict:
    completion_tokens = sum(c.completion_tokens for c in result.choices)
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": result.prompt_tokens + completion_tokens}


def _chat_completion(server, model: str, result) -> dict:
    choices = [{"index": i, "finish_reason": c.finish_reason,
                "message": {"role": "assistant", "content": c.text, "refusal": None},
                "logprobs": {"content": c.logprobs, "refusal": None} if c.logprobs is not None else None}
               for i, c in enumerate(result.choices)]
    return {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": server.fingerprint, "service_tier": "default", "choices": choices,
            "usage": _usage(result)}
