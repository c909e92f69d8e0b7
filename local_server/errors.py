"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the right status.

Messages are Korean for the class, each followed by the English wording OpenAI would use; `code` stays
the English code the SDK and the course's error explanations read.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def not_found(kind: str, object_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"{kind} '{object_id}' 을(를) 찾을 수 없습니다 (No such {kind} object: {object_id}).",
                    f"{kind.lower()}_not_found", param)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(err.status, err.message, err.code, err.param)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"] if part not in ("body", "query", "path"))
        return error_response(400, f"요청의 '{param}' 값이 올바르지 않습니다: {first['msg']} "
                                   f"(Invalid value for '{param}').", "invalid_value", param or None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        if err.status_code == 404:
            return error_response(404, f"없는 주소입니다: {request.method} {request.url.path} "
                                       f"(Invalid URL ({request.method} {request.url.path})).", "unknown_url")
        if err.status_code == 405:
            return error_response(405, f"이 주소는 {request.method} 요청을 받지 않습니다 "
                                       f"(Method not allowed: {request.method} {request.url.path}).",
                                  "method_not_allowed")
        return error_response(err.status_code, str(err.detail))


def server_error(err: Exception) -> JSONResponse:
    """Any other exception: a 500 in OpenAI's shape (the API's middleware turns exceptions into this)."""
    return error_response(500, f"로컬 서버 안에서 오류가 났습니다: {type(err).__name__}: {err} "
                               "(The server had an error while processing your request.)", "server_error")
