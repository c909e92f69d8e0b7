"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the right status.

Messages are Korean for the class, each followed by the English wording OpenAI would use; `code` stays
the English code the SDK and the course's error explanations read.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         429: "requests"}  # OpenAI's type for a limit on requests per minute
INSUFFICIENT_STORAGE = 507


log = logging.getLogger("local_server")


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers


class BodyTooLarge(HTTPException):
    """A body that passed its limit while streaming in. An HTTPException, because FastAPI turns any other exception
    from reading the body into a 400 "There was an error parsing the body"."""

    def __init__(self, message: str, code: str, param: str | None):
        super().__init__(413, message)
        self.code, self.param = code, param


def error_response(request: Request, status: int, message: str, code: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    request.state.error = (code, param)  # for log_failure: the middleware sees the response, not what it said
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status, headers)


def log_failure(request: Request, status: int) -> None:
    """One line for every 4xx/5xx: method, path, status, code and param — never headers, keys, queries or bodies."""
    code, param = getattr(request.state, "error", (None, None))
    log.log(logging.ERROR if status >= 500 else logging.WARNING, "%s %s -> %d %s param=%s", request.method,
            request.url.path, status, code, param)


def param_name(loc) -> str:
    """A location as OpenAI names parameters: ("messages", 0, "content") -> "messages[0].content"."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name


def _real_param(loc: tuple, body) -> str:
    """The parameter a validation error is about, as named in the request: pydantic's location also holds the
    alternatives of a union ("n_epochs", "int") which are not in the request, so follow it through the body."""
    where, parts = loc[0], loc[1:]
    if where != "body":  # query and path parameters have no alternatives
        return param_name(parts)
    found, value = [], body
    for number, part in enumerate(parts):
        if isinstance(value, dict) and part in value or \
                isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            found.append(part)
            value = value[part]
        else:
            if isinstance(value, dict) and number == len(parts) - 1:  # a required field that is missing
                found.append(part)
            break
    return param_name(found)


def not_found(kind: str, object_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"{kind} '{object_id}' 을(를) 찾을 수 없습니다 (No such {kind} object: {object_id}).",
                    f"{kind.lower()}_not_found", param)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(request, err.status, err.message, err.code, err.param, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        problems = err.errors()
        if problems[0]["type"] == "json_invalid":  # its loc is a character position, not a parameter
            return error_response(request, 400, "요청 본문이 올바른 JSON 이 아닙니다. JSON 객체 하나를 보내세요 (We could "
                                                "not parse the JSON body of your request.)", "invalid_json")
        param = _real_param(problems[0]["loc"], err.body)
        if not param:
            return error_response(request, 400, "요청 본문은 JSON 객체({...})여야 합니다 (The request body must be a "
                                                "JSON object.)", "invalid_value")
        said = "; ".join(dict.fromkeys(p["msg"] for p in problems if _real_param(p["loc"], err.body) == param))
        return error_response(request, 400, f"요청의 '{param}' 값이 올바르지 않습니다: {said} "
                                            f"(Invalid value for '{param}').", "invalid_value", param)

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(request: Request, err: BodyTooLarge):
        return error_response(request, 413, err.detail, err.code, err.param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        if is_disk_full(err.__cause__):  # e.g. spooling an upload to the temp folder, which FastAPI calls a 400
            return error_response(request, INSUFFICIENT_STORAGE,
                                  disk_full_message(Path(tempfile.gettempdir()), "임시 폴더"), "disk_full")
        if err.status_code == 404:
            return error_response(request, 404, f"없는 주소입니다: {request.method} {request.url.path} "
                                       f"(Invalid URL ({request.method} {request.url.path})).", "unknown_url")
        if err.status_code == 405:
            return error_response(request, 405, f"이 주소는 {request.method} 요청을 받지 않습니다 "
                                       f"(Method not allowed: {request.method} {request.url.path}).",
                                  "method_not_allowed")
        return error_response(request, err.status_code, str(err.detail))


def is_disk_full(err: BaseException | None) -> bool:
    """A write that found no room: ENOSPC, SQLite's "database or disk is full", or a library (safetensors) that
    wraps the OS error in its own exception but keeps its words."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC or \
                isinstance(err, sqlite3.Error) and getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or \
                os.strerror(errno.ENOSPC) in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_message(folder: Path, what: str = "데이터 폴더") -> str:
    """Korean, naming the folder, its disk and the room left there, and what to do."""
    folder = Path(folder).resolve()
    disk = next(p for p in (folder, *folder.parents) if os.path.ismount(p))
    free_mb = shutil.disk_usage(folder).free / 1_000_000
    return (f"디스크가 가득 찼습니다: {what} {folder} 이(가) 있는 디스크({disk})에 남은 자리가 {free_mb:,.0f} MB 입니다. "
            "필요 없는 파일이나 미세 조정 모델을 지우거나, 자리가 있는 디스크의 폴더로 서버를 다시 켜세요 (--data-dir) "
            "(No space left on device).")


def server_error(request: Request, err: Exception, data_dir: Path) -> JSONResponse:
    """Any other exception: a 500 in OpenAI's shape (the API's middleware turns exceptions into this); a full disk
    is a 507 that says so."""
    if is_disk_full(err):
        return error_response(request, INSUFFICIENT_STORAGE, disk_full_message(data_dir), "disk_full")
    log.error("%s %s: a bug in the local server", request.method, request.url.path, exc_info=err)
    return error_response(request, 500, f"로컬 서버 안에서 오류가 났습니다: {type(err).__name__}: {err} "
                               "(The server had an error while processing your request.)", "server_error")
