"""INSTRUCTOR.md's troubleshooting table quotes what a student sees: each quote is produced here by the failure itself.

Every row of the table `## 4. 문제 해결` names its case in the first column (`[id]`) and quotes the message in the
second column in backticks; `…` stands for a part that differs from run to run (a path, a pid, a number). Each case
below makes that failure happen through the course's own code (or Python's and pip's, for the two the course cannot
catch) and the quote must match what came out.
"""
from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys

import httpx2
import openai
import psutil
import pytest

from helpers import explain, local, modes
from helpers.errors import CourseError
from tests.net import free_port, wait_until
from tests.test_local_server_safety import TRAINING, _answers
from tests.test_recordings import ROOT, ask, good_api, recorder, replayer

GUIDE = ROOT / "INSTRUCTOR.md"


def table_rows() -> dict[str, str]:
    """{case id: quoted message} from the troubleshooting table."""
    section = GUIDE.read_text(encoding="utf-8").split("## 4. 문제 해결", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\|\s*\[(\w+)\][^|]*\|\s*`([^`]+)`", line)
        if found:
            rows[found.group(1)] = found.group(2)
    return rows


def matches(quote: str, message: str) -> bool:
    pattern = ".+?".join(re.escape(part.strip()) for part in quote.split("…"))
    return re.search(pattern, " ".join(message.split()), re.S) is not None


def _status_error(cls, status: int, method: str, url: str, said: str, headers=None):
    request = httpx2.Request(method, url)
    body = {"message": said, "type": "invalid_request_error", "param": None, "code": None}
    return cls(said, response=httpx2.Response(status, request=request, json={"error": body}, headers=headers),
               body=body)


def no_key(monkeypatch, tmp_path) -> str:
    monkeypatch.setenv("COURSE_MODE", "live")
    with pytest.raises(CourseError) as caught:
        modes.ask_for_key()  # pytest's stdin is not a terminal: as in papermill, nobody can type a key
    return str(caught.value)


def wrong_key(monkeypatch, tmp_path) -> str:
    err = _status_error(openai.AuthenticationError, 401, "GET", "https://api.openai.com/v1/models",
                        "Incorrect API key provided: sk-abc***xyz.")
    return str(explain.explain_api_error(err))


def cannot_fine_tune(monkeypatch, tmp_path) -> str:
    err = _status_error(openai.PermissionDeniedError, 403, "POST", "https://api.openai.com/v1/fine_tuning/jobs",
                        "This organization does not have access to fine-tuning.")
    return str(explain.explain_api_error(err))


def _replay_client(tmp_path):
    """A recording of one question, made the way a record run makes it, and a client replaying it."""
    path = tmp_path / "lesson.json"
    ask(recorder(path, good_api))
    return replayer(path)


def replay_miss(monkeypatch, tmp_path) -> str:
    client = _replay_client(tmp_path)
    with pytest.raises(openai.OpenAIError) as caught:
        ask(client, temperature=0.5)  # the cell was edited: a request the recording never saw
    return str(caught.value)


def asked_more_than_recorded(monkeypatch, tmp_path) -> str:
    client = _replay_client(tmp_path)
    ask(client)
    with pytest.raises(openai.OpenAIError) as caught:
        ask(client)  # a loop asks once more than when it was recorded
    return str(caught.value)


def port_in_use(monkeypatch, tmp_path) -> str:
    """Another web program on the course's port: it answers, but not as the local server."""
    import http.server
    import threading

    web = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CourseError) as caught:
            local.health(web.server_address[1])
    finally:
        web.shutdown()
    return str(caught.value)


def first_start(monkeypatch, tmp_path) -> str:
    """What the first cell prints while the server starts (the first time, while the model is converted)."""
    monkeypatch.setenv("COURSE_LOCAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_LOCAL_MODEL", str(tmp_path / "no-such-model"))  # ends at once: nothing to wait for
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(CourseError):
        local._start(free_port())
    return printed.getvalue()


def out_of_memory(monkeypatch, tmp_path) -> str:
    """The kernel's out-of-memory killer ends the training worker with SIGKILL; the job says so."""
    from local_server.training import MAX_EPOCHS
    from tests.tiny_model import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny-gemma0")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "local_server", "--model", str(model), "--data-dir",
                               str(tmp_path / "data"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = openai.OpenAI(api_key="x", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=30)
        wait_until(lambda: _answers(client), 120, "the server to start")
        job = client.fine_tuning.jobs.create(model="tiny-gemma0",
                                             hyperparameters={"n_epochs": MAX_EPOCHS},
                                             training_file=client.files.create(file=("t.jsonl", TRAINING * 10),
                                                                               purpose="fine-tune").id)
        wait_until(lambda: any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id)), 120,
                   "the first training step")
        for worker in psutil.Process(server.pid).children():
            if "spawn_main" in " ".join(worker.cmdline()):
                worker.kill()
        wait_until(lambda: client.fine_tuning.jobs.retrieve(job.id).status == "failed", 60, "the job to fail")
        job = client.fine_tuning.jobs.retrieve(job.id)
        # what notebook 03 (and 07, 09) then print
        return f"작업이 {job.status} 상태로 끝났습니다: {job.error}. 데이터와 BASE_MODEL 을 확인하세요."
    finally:
        server.kill()
        server.wait(30)


def windows_path(monkeypatch, tmp_path) -> str:
    with pytest.raises(SyntaxError) as caught:
        compile('TRAINING_FILE = "C:\\Users\\me\\hobanse.jsonl"', "<cell>", "exec")
    return f"SyntaxError: {caught.value.msg}"


def offline_install(monkeypatch, tmp_path) -> str:
    """pip with no index and an empty folder: what a lab without internet sees without the wheelhouse."""
    empty = tmp_path / "wheelhouse"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
                             "--find-links", str(empty), "openai"], capture_output=True, text=True, timeout=120,
                            env={"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"})
    return result.stderr


def proxy_page(monkeypatch, tmp_path) -> str:
    from helpers.live import LiveTransport

    page = httpx2.MockTransport(lambda request: httpx2.Response(
        200, headers={"content-type": "text/html"}, content=b"<html>login</html>"))
    client = openai.OpenAI(api_key="sk-x", base_url="https://api.openai.com/v1", max_retries=0,
                           http_client=httpx2.Client(transport=LiveTransport(page, "https://api.openai.com/v1")))
    with pytest.raises(openai.OpenAIError) as caught:
        client.models.list()
    return str(caught.value)


CASES = {"no_key": no_key, "wrong_key": wrong_key, "cannot_fine_tune": cannot_fine_tune, "replay_miss": replay_miss,
         "rerun": asked_more_than_recorded, "port": port_in_use, "first_start": first_start,
         "memory": out_of_memory, "windows_path": windows_path, "offline": offline_install, "proxy": proxy_page}


def test_the_table_quotes_every_case_and_only_these():
    assert set(table_rows()) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_quoted_message_is_what_the_student_sees(case, monkeypatch, tmp_path):
    message = CASES[case](monkeypatch, tmp_path)
    quote = table_rows()[case]
    assert matches(quote, message), f"INSTRUCTOR.md 의 [{case}] 인용:\n  {quote}\n실제 메시지:\n  {message}"
