"""실제 API 로 가는 길 (이슈 10의 9~15, 21): 거절된 작업의 남은 파일, 두 번 만들지 않기, 주소와 키 같은 비밀,
시간 제한, 이상한 200 응답, 오류 설명, COURSE_MODE 가 정한 모드."""
import json
import http.server
import socket
import threading
import time

import httpx2
import openai
import pytest

from helpers import cleanup, course, live, local, modes
from helpers.errors import CourseAPIError, CourseError
from helpers.explain import explain_api_error

BASE = "https://api.openai.com/v1"


def live_client(handler, max_retries=2):
    transport = live.LiveTransport(httpx2.MockTransport(handler), BASE)
    return openai.OpenAI(api_key="sk-test", base_url=BASE, max_retries=max_retries,
                         http_client=openai.DefaultHttpxClient(transport=transport))


def status_error(status, method="GET", path="/v1/models", message="said", body=None):
    request = httpx2.Request(method, "https://api.openai.com" + path, json=body)
    response = httpx2.Response(status, request=request, json={})
    return openai.APIStatusError(message, response=response, body=None)


# ----------------------------------------------------------------------------- 9. 거절된 작업과 남은 파일


def test_a_refused_job_names_the_uploaded_file_and_how_to_delete_it():
    err = status_error(403, "POST", "/v1/fine_tuning/jobs",
                       body={"model": "gpt-4.1-mini-2025-04-14", "training_file": "file-abc123",
                             "validation_file": "file-def456"})
    text = str(explain_api_error(err))
    assert "2027-01-06" in text and "file-abc123" in text
    assert 'client.files.delete("file-abc123")' in text and 'client.files.delete("file-def456")' in text


# ----------------------------------------------------------------------------- 10. 두 번 만들지 않기


@pytest.mark.parametrize("path, call", [
    ("/fine_tuning/jobs", lambda c: c.fine_tuning.jobs.create(model="m", training_file="file-1")),
    ("/files", lambda c: c.files.create(file=("a.jsonl", b"{}\n"), purpose="fine-tune")),
])
def test_a_creating_post_is_sent_once_even_after_a_server_error(path, call):
    sent = []

    def failing(request):
        sent.append(request.url.path)
        return httpx2.Response(500, headers={"retry-after-ms": "0"}, json={"error": {"message": "oops"}})

    with pytest.raises(openai.InternalServerError) as caught:
        call(live_client(failing))
    assert sent == ["/v1" + path]  # 예전: 세 번
    if "jobs" in path:
        assert "다시 보내지 않았습니다" in str(explain_api_error(caught.value))


def test_a_creating_post_that_times_out_is_not_resent_and_says_why():
    sent = []

    def hanging(request):
        sent.append(request.url.path)
        raise httpx2.ReadTimeout("no answer", request=request)

    with pytest.raises(CourseAPIError, match="두 번 만들어지고") as caught:
        live_client(hanging).fine_tuning.jobs.create(model="m", training_file="file-1")
    assert sent == ["/v1/fine_tuning/jobs"] and "jobs.list" in str(caught.value)


def test_reads_are_still_retried():
    sent = []

    def flaky(request):
        sent.append(1)
        if len(sent) == 1:
            return httpx2.Response(500, headers={"retry-after-ms": "0"}, json={})
        return httpx2.Response(200, json={"object": "list", "data": []})

    assert live_client(flaky).models.list().data == [] and len(sent) == 2


# ----------------------------------------------------------------------------- 11, 12. 비밀


def test_a_password_in_the_base_url_is_never_printed_or_recorded(clean_env, tiny_server, monkeypatch, capsys):
    with_password = tiny_server.base_url.replace("http://", "http://learner:HUNTER2pw@")
    monkeypatch.setenv("OPENAI_BASE_URL", with_password)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "fakeKEYforTHEpasswordTEST01")
    client = course.connect("record", "creds")
    client.models.list()
    lines = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
             for i in range(10)]
    client.files.create(file=("t.jsonl", "\n".join(map(json.dumps, lines)).encode()), purpose="fine-tune")  # 장부에 적힘
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    shown = capsys.readouterr().out + str(explain_api_error(caught.value))
    recording = (clean_env / "recordings" / "creds.json").read_text(encoding="utf-8")
    ledger = (clean_env / "output" / cleanup.LEDGER_NAME).read_text(encoding="utf-8")
    for text in (shown, recording, ledger):
        assert "HUNTER2pw" not in text and "learner" not in text
    assert json.loads(recording)["header"]["source"] == f"local open-weight {tiny_server.model} (LoRA, CPU)"
    assert f"127.0.0.1:{tiny_server.port}" in ledger


@pytest.mark.parametrize("key", ["gsk_" + "shortKEY9", "sk-" + "abcdefghij12", "plainpassword42"])
def test_the_configured_key_is_scrubbed_from_error_text_whatever_its_shape(clean_env, monkeypatch, key):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_ORG_ID", "acme" + "team")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    course.connect("live", "nb")
    for status in (401, 403, 429, 500):
        text = str(explain_api_error(status_error(status, message=f"Incorrect API key {key} for org acmeteam")))
        assert key not in text and "acmeteam" not in text and "REDACTED" in text


# ----------------------------------------------------------------------------- 13. 시간 제한


def test_the_client_gives_up_on_a_hung_server_within_a_classroom_timeout(clean_env, monkeypatch):
    assert live.TIMEOUT_SECONDS <= 120 and live.MAX_RETRIES <= 2  # 예전: 600초 × 3번
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    monkeypatch.setattr(live, "TIMEOUT_SECONDS", 0.5)
    # a server on this computer gets the long local timeout (it may compute for minutes): play a remote one
    monkeypatch.setattr(local, "computes_for_minutes", lambda url: False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "fakeKEYforTHEtimeoutTEST0")
    client = course.connect("live", "nb")
    assert client.timeout.read == 0.5
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError) as caught:
        client.models.list()
    assert time.monotonic() - start < 10
    text = str(explain_api_error(caught.value))
    assert "시간 초과" in text and "0.5초" in text and "연결하지 못했습니다" not in text
    silent.close()


@pytest.mark.parametrize("base_url, seconds", [("http://127.0.0.1:8765/v1", "600초"),
                                               ("https://example.invalid/v1", "60초")])
def test_the_timeout_message_states_the_timeout_in_force(clean_env, monkeypatch, base_url, seconds):
    def no_answer(request):
        raise httpx2.ReadTimeout("no answer", request=request)

    monkeypatch.setattr(httpx2, "HTTPTransport", lambda: httpx2.MockTransport(no_answer))
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "fakeKEYforTHEtimeoutTEST0")
    client = course.connect("live", "nb").with_options(max_retries=0)
    with pytest.raises(openai.APITimeoutError) as caught:
        client.models.list()
    assert f"서버가 {seconds} 안에 답하지" in str(explain_api_error(caught.value))
    with pytest.raises(CourseAPIError, match=f"ReadTimeout: {seconds} 안에"):  # 만드는 요청은 다시 보내지 않음
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="fine-tune")


def test_a_server_on_this_computer_gets_the_long_local_timeout(clean_env, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8765/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "local-key")
    assert course.connect("live", "nb").timeout.read == local.TIMEOUT.read >= 300
    monkeypatch.setenv("OPENAI_BASE_URL", "https://example.invalid/v1")
    assert course.connect("live", "nb").timeout.read == live.TIMEOUT_SECONDS


def test_a_classrooms_course_server_elsewhere_gets_the_long_local_timeout(clean_env, monkeypatch, tiny_server):
    """Students on the instructor's server (another address): its CPU trains and answers for the whole class."""
    monkeypatch.setattr(local, "on_this_computer", lambda url: False)  # play a server on another computer
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "studentKEYforTHEtimeoutTEST")
    monkeypatch.setenv("OPENAI_BASE_URL", tiny_server.client().base_url.__str__())
    assert course.connect("live", "nb").timeout.read == local.TIMEOUT.read
    other = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)  # a web server, not ours
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{other.server_address[1]}/v1")
        assert course.connect("live", "nb").timeout.read == live.TIMEOUT_SECONDS
    finally:
        other.shutdown()


# ----------------------------------------------------------------------------- 14. 이상한 200 응답


def test_a_login_page_instead_of_json_is_explained():
    def proxy(request):
        return httpx2.Response(200, headers={"content-type": "text/html"}, content=b"<html>Login</html>")

    with pytest.raises(CourseAPIError, match="로그인 페이지"):
        live_client(proxy).models.list()


def test_malformed_json_is_explained():
    def broken(request):
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=b'{"object": "li')

    with pytest.raises(CourseAPIError, match="읽을 수 없었습니다"):
        live_client(broken).models.list()


def test_file_content_that_is_not_json_still_passes():
    def csv(request):
        return httpx2.Response(200, headers={"content-type": "application/octet-stream"}, content=b"step,loss\n1,0.5\n")

    assert live_client(csv).files.content("file-1").read() == b"step,loss\n1,0.5\n"


# ----------------------------------------------------------------------------- 15. 오류 설명


def test_rate_limit_advice_includes_replay_and_no_server_text_without_a_server():
    assert 'MODE = "replay"' in str(explain_api_error(status_error(429)))
    no_answer = openai.APIConnectionError(request=httpx2.Request("GET", "https://api.openai.com/v1/models"))
    text = str(explain_api_error(no_answer))
    assert "연결하지 못했습니다" in text and "서버가 보낸 내용" not in text


# ----------------------------------------------------------------------------- 21. COURSE_MODE 가 정한 모드


def test_advice_names_course_mode_when_it_decided(clean_env, monkeypatch):
    monkeypatch.setenv(modes.MODE_ENV, "live")
    with pytest.raises(CourseError) as caught:
        course.connect("replay", "nb")  # 노트북은 replay 라고 했지만 COURSE_MODE 가 이김
    message = str(caught.value)
    assert "COURSE_MODE" in message and "COURSE_MODE=replay" in message
    assert 'MODE = "replay" 로 바꾸면' not in message
    assert "COURSE_MODE" in str(explain_api_error(status_error(401)))
