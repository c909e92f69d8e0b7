"""Serving a class through the openai SDK over real HTTP, with a tiny random model: answers that return as soon as
their own row is finished, and the per-caller rate limit (429 with Retry-After, OpenAI's error shape)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import openai
import pytest
from starlette.requests import Request

from local_server import __main__ as cli
from local_server import inference
from local_server.keys import SOLE_USER
from local_server.rate_limit import RateLimiter, caller_of
from local_server.server import Settings
from tests.engine_steps import HOLD_SECONDS, StepWatch, last_row_left
from tests.running_server import RunningServer
from tests.tiny_model import make_tiny_model

RPM = 12  # a burst of 12 requests, then one every 5 s: the SDK's retry waits at most that long


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    running = RunningServer(Settings(data_dir=tmp_path_factory.mktemp("data"), model=str(tiny_model)), train=False)
    yield running
    running.close()


@pytest.fixture(scope="module")
def limited(tiny_model, tmp_path_factory):
    running = RunningServer(Settings(data_dir=tmp_path_factory.mktemp("data"), model=str(tiny_model),
                                     rate_limit_rpm=RPM), train=False)
    yield running
    running.close()


def ask(client, model, max_tokens: int, question: str = "Who won the game?"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                          max_tokens=max_tokens, temperature=0)


def test_a_short_answer_arrives_while_a_long_one_is_decoding(server, monkeypatch):
    """Two requests in one batch: the short one's response arrives while the long one's row is held at a decoding
    step (after the short row has left), so it cannot have waited for the batch to finish."""
    engine = server.local.engine
    monkeypatch.setattr(inference, "MAX_GATHER_SECONDS", 2.0)  # both requests surely reach one gathering
    monkeypatch.setattr(engine, "batch_window", 2.0)
    client = server.client()
    with StepWatch(engine, last_row_left) as watch, ThreadPoolExecutor(2) as pool:
        long = pool.submit(ask, client, server.model, 30, "Tell me about hockey.")
        short = pool.submit(ask, client, server.model, 3)
        short_answer = short.result(timeout=HOLD_SECONDS / 2)
        assert watch.held.wait(HOLD_SECONDS) and not long.done()
        watch.release()
        long_answer = long.result(timeout=HOLD_SECONDS)
    assert max(watch.decode_rows) == 2  # they did decode together
    assert (short_answer.usage.completion_tokens, long_answer.usage.completion_tokens) == (3, 30)


def test_rate_limit_answers_429_with_retry_after(limited):
    """A caller's burst beyond its bucket gets OpenAI's 429 (code rate_limit_exceeded) with Retry-After in seconds and a
    Korean message; another key has its own bucket; the SDK's retry waits Retry-After and then succeeds."""
    first, other = limited.client("key-of-student-a"), limited.client("key-of-student-b")
    answered, error = exhaust(first, limited.model)
    assert answered >= RPM
    assert 1 <= int(error.response.headers["retry-after"]) <= 60 / RPM
    assert (error.code, error.type, error.param) == ("rate_limit_exceeded", "requests", None)
    assert error.body["message"].startswith("요청이 너무 많습니다") and "Rate limit reached" in error.body["message"]
    ask(other, limited.model, 1)  # student b's bucket is full
    limited.client("local-no-key-needed").models.list()  # only generation is limited

    retrying = openai.OpenAI(api_key="key-of-student-a", base_url=limited.base_url, max_retries=1, timeout=60)
    exhaust(first, limited.model)
    response = retrying.chat.completions.with_raw_response.create(
        model=limited.model, messages=[{"role": "user", "content": "Who won?"}], max_tokens=1)
    assert response.retries_taken == 1 and response.parse().usage.completion_tokens == 1


def exhaust(client, model) -> tuple[int, openai.RateLimitError]:
    """Ask until refused: the number of answers before, and the refusal."""
    for answered in range(3 * RPM):  # a refill (one every 5 s) may let a few more through on a slow machine
        try:
            ask(client, model, 1)
        except openai.RateLimitError as refused:
            return answered, refused
    raise AssertionError(f"{3 * RPM} requests and none refused")


def request_with(headers: dict[str, str], principal=None) -> Request:
    request = Request({"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                       "client": ("10.0.0.7", 5000)})
    if principal is not None:
        request.state.principal = principal
    return request


def test_callers_are_told_apart_by_name_then_key_then_address():
    principal = SimpleNamespace(name="student07", role="student")
    assert caller_of(request_with({"Authorization": "Bearer sk-a"}, principal)) == "name:student07"
    sole_user = SOLE_USER  # a server without --keys: one nameless principal, so the key tells callers apart
    assert caller_of(request_with({"Authorization": "Bearer sk-a"}, sole_user)) == \
        caller_of(request_with({"Authorization": "Bearer sk-a"}))
    by_key = caller_of(request_with({"Authorization": "Bearer sk-a"}))
    assert by_key.startswith("key:") and "sk-a" not in by_key
    assert by_key != caller_of(request_with({"Authorization": "Bearer sk-b"}))
    assert caller_of(request_with({})) == "host:10.0.0.7"


def test_bucket_refills_at_the_rate():
    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # 6 a minute: one every 10 s, a burst of 6
    request = request_with({"Authorization": "Bearer sk-a"})
    for _ in range(6):
        limiter.check(request)
    with pytest.raises(Exception) as refused:
        limiter.check(request)
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "10"}
    now[0] = 4.0
    with pytest.raises(Exception) as refused:
        limiter.check(request)
    assert refused.value.headers == {"Retry-After": "6"}
    now[0] = 10.0
    limiter.check(request)  # one request's worth has come back
    limiter.check(request_with({"Authorization": "Bearer sk-b"}))  # another key's bucket is its own
    assert "sk-a" not in repr(limiter._buckets)  # keys are not kept


def test_rate_limit_option():
    assert cli.parse_args([]).rate_limit_rpm is None  # off unless asked: a learner's notebooks are never limited
    assert cli.parse_args(["--rate-limit-rpm", "30"]).rate_limit_rpm == 30
    with pytest.raises(SystemExit):
        cli.parse_args(["--rate-limit-rpm", "0"])
