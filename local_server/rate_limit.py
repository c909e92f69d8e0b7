"""A per-caller limit on generation requests (chat.completions, completions), answered with OpenAI's 429.

A token bucket per caller: `rpm` requests a minute, of which a whole minute's worth may come at once (a notebook's
burst of concurrent requests), refilled continuously. Written here because it is a dozen lines; the rate-limit
packages for Starlette count fixed or moving windows and would be a new dependency for this.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time

from fastapi import Request

from .errors import ApiError

# Off: one learner's notebooks must never be limited, and 09 scores hundreds of posts a minute (4 models × its
# validation posts, 8 at a time). A class server sets --rate-limit-rpm.
DEFAULT_RATE_LIMIT_RPM = None


class RateLimiter:
    def __init__(self, rpm: float, clock=time.monotonic):
        self.rpm, self.clock = rpm, clock
        # caller -> (requests left, when counted). Only callers the key check let through reach it: a few dozen.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()  # FastAPI runs this dependency in its thread pool

    def check(self, request: Request) -> None:
        """A FastAPI dependency: count the request against its caller, or refuse it with 429 and Retry-After."""
        caller = caller_of(request)
        with self._lock:
            now = self.clock()
            left, then = self._buckets.get(caller, (self.rpm, now))
            left = min(self.rpm, left + (now - then) * self.rpm / 60)
            self._buckets[caller] = (left - 1 if left >= 1 else left, now)
        if left >= 1:
            return
        wait = math.ceil((1 - left) * 60 / self.rpm)
        raise ApiError(429, f"요청이 너무 많습니다: 이 서버는 한 사람의 생성 요청을 1분에 {self.rpm:g}번까지 받습니다. "
                            f"{wait}초 뒤에 다시 보내세요 (Rate limit reached for requests per min (RPM): Limit "
                            f"{self.rpm:g}. Please try again in {wait}s.)", "rate_limit_exceeded",
                       headers={"Retry-After": str(wait)})


def caller_of(request: Request) -> str:
    """Whose bucket: the key's owner when the key check has named one, else the key itself (hashed: never kept),
    else the client's address."""
    principal = getattr(request.state, "principal", None)
    if principal is not None and principal.name is not None:  # without --keys the one principal has no name
        return f"name:{principal.name}"
    authorization = request.headers.get("authorization")
    if authorization:
        return "key:" + hashlib.sha256(authorization.encode()).hexdigest()
    return f"host:{request.client.host if request.client else ''}"
