"""The local server at its edges: input that looks valid, malformed and oversized bodies, a full disk, an old data
directory, the API key's hiding places. Each answer is a 4xx/5xx in OpenAI's error shape naming the real parameter,
and each is written to the server's log (issue 18, items 9-15)."""
from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
import sqlite3
import time
from pathlib import Path

import httpx2
import openai
import pytest

from local_server.api import MAX_JSON_BODY_BYTES

CHAT = {"model": "tiny-gemma0", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": "tiny-gemma0", "prompt": "hi", "max_tokens": 2}


def post_json(server, path: str, body, **headers) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()  # ensure_ascii: "\ud800" stays escaped
    return httpx2.post(f"{server.base_url}{path}", content=content, timeout=60,
                       headers={"content-type": "application/json", **headers})


def assert_openai_error(response: httpx2.Response, status: int, param, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


# ------------------------------------------------------------------------------------------------ item 9
@pytest.mark.parametrize("path, body, param", [
    ("/chat/completions", {**CHAT, "top_p": -0.1}, "top_p"),
    ("/completions", {**COMPLETION, "top_p": 1.5}, "top_p"),
    ("/chat/completions", {**CHAT, "stop": [""]}, "stop"),
    ("/completions", {**COMPLETION, "stop": ""}, "stop"),
    ("/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "a\ud800b"}]}, "messages[0].content"),
    ("/completions", {**COMPLETION, "prompt": "\udc00"}, "prompt"),
])
def test_valid_looking_input_is_a_400_naming_the_parameter(tiny_server, caplog, path, body, param):
    with caplog.at_level(logging.WARNING, logger="local_server"):
        response = post_json(tiny_server, path, body)
    assert_openai_error(response, 400, param, "invalid_value")
    assert f"POST /v1{path} -> 400 invalid_value param={param}" in caplog.messages


def test_a_model_whose_adapter_folder_is_gone_is_a_404(tiny_server, caplog):
    client = tiny_server.client()
    training = client.files.create(file=("train.jsonl", _training_jsonl()), purpose="fine-tune")
    model = tiny_server.finish_without_training(client.fine_tuning.jobs.create(model=tiny_server.model,
                                                                               training_file=training.id).id)
    with caplog.at_level(logging.WARNING, logger="local_server"):
        response = post_json(tiny_server, "/chat/completions", {**CHAT, "model": model})
    error = assert_openai_error(response, 404, "model", "model_not_found")
    assert "어댑터 폴더" in error["message"]
    assert "POST /v1/chat/completions -> 404 model_not_found param=model" in caplog.messages


def test_every_error_is_logged_without_secrets(tiny_model, tmp_path, caplog, monkeypatch):
    from local_server.server import Settings
    from tests.running_server import RunningServer

    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model), api_key="sk-class-secret"),
                            train=False)
    try:
        with caplog.at_level(logging.WARNING, logger="local_server"):
            post_json(running, "/chat/completions", CHAT, authorization="Bearer sk-wrong-secret")
            post_json(running, "/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "내 비밀"}],
                                                     "temperature": 5}, authorization="Bearer sk-class-secret")
            monkeypatch.setattr(running.local.store, "list_files", lambda *a: 1 / 0)
            httpx2.get(f"{running.base_url}/files", headers={"authorization": "Bearer sk-class-secret"})
    finally:
        running.close()
    assert "POST /v1/chat/completions -> 401 invalid_api_key param=None" in caplog.messages
    assert "POST /v1/chat/completions -> 400 invalid_value param=temperature" in caplog.messages
    assert "GET /v1/files -> 500 server_error param=None" in caplog.messages
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)  # a bug keeps its traceback
    assert not any(word in caplog.text for word in ("sk-wrong-secret", "sk-class-secret", "내 비밀"))


def _training_jsonl(n: int = 10) -> bytes:
    lines = [{"messages": [{"role": "user", "content": f"질문 {i}"}, {"role": "assistant", "content": f"답 {i}"}]}
             for i in range(n)]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


# ------------------------------------------------------------------------------------------------ item 10
@pytest.mark.parametrize("content", [b"{", b'{"model": "tiny-gemma0",}', b"\xff\xfe", b'{"model": tiny}'])
def test_malformed_json_names_no_fake_parameter(tiny_server, content):
    error = assert_openai_error(post_json(tiny_server, "/chat/completions", content), 400, None)
    assert error["type"] == "invalid_request_error" and "JSON" in error["message"]


@pytest.mark.parametrize("content", [b"[1, 2]", b'"hello"', b"0"])
def test_a_body_that_is_not_an_object_names_no_parameter(tiny_server, content):
    assert_openai_error(post_json(tiny_server, "/chat/completions", content), 400, None, "invalid_value")


@pytest.mark.parametrize("change, param", [
    ({"hyperparameters": {"n_epochs": True}}, "hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": False}}, "hyperparameters.batch_size"),
    ({"hyperparameters": {"learning_rate_multiplier": True}}, "hyperparameters.learning_rate_multiplier"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": True}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"seed": True}, "seed"),
    ({"training_file": None}, "training_file"),
])
def test_booleans_are_not_numbers_for_jobs(tiny_server, change, param):
    client = tiny_server.client()
    training = client.files.create(file=("train.jsonl", _training_jsonl()), purpose="fine-tune")
    body = {"model": tiny_server.model, "training_file": training.id, **change}
    assert_openai_error(post_json(tiny_server, "/fine_tuning/jobs", body), 400, param, "invalid_value")
    assert client.fine_tuning.jobs.list().data == []  # nothing was created


@pytest.mark.parametrize("path, change, param", [
    ("/chat/completions", {"max_tokens": True}, "max_tokens"),
    ("/chat/completions", {"temperature": True}, "temperature"),
    ("/chat/completions", {"n": True}, "n"),
    ("/completions", {"logprobs": True}, "logprobs"),
    ("/chat/completions", {"model": None}, "model"),
])
def test_booleans_are_not_numbers_for_generation(tiny_server, path, change, param):
    body = {**(CHAT if path == "/chat/completions" else COMPLETION), **change}
    assert_openai_error(post_json(tiny_server, path, body), 400, param, "invalid_value")


def test_a_missing_field_is_named(tiny_server):
    assert_openai_error(post_json(tiny_server, "/chat/completions", {"messages": CHAT["messages"]}), 400, "model")


# ------------------------------------------------------------------------------------------------ item 11
def raw_request(server, path: str, headers: dict, chunks, wait: float = 10) -> tuple[bytes, int]:
    """Send a request by hand (so the body can be endless or lie about its length); return the start of the answer
    and how many body bytes had been sent when it came. A server that reads the whole body first never answers
    before the body ends."""
    host, port = "127.0.0.1", server.port
    head = "".join(f"{k}: {v}\r\n" for k, v in {"host": f"{host}:{port}", **headers}.items())
    sent = 0
    with socket.create_connection((host, port), timeout=wait) as sock:
        sock.sendall(f"POST /v1{path} HTTP/1.1\r\n{head}\r\n".encode())
        for chunk in chunks:
            ready, _, _ = select.select([sock], [], [], 0)
            if ready:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = sock.recv(65536)
        head_end = answer.find(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in answer[:head_end].split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        while len(answer) < head_end + 4 + length:
            answer += sock.recv(65536)
    return answer, sent


def chunked(total: int, piece: int = 1_000_000):
    """`total` bytes in HTTP/1.1 chunked encoding (no Content-Length), a piece at a time."""
    for _ in range(total // piece):
        yield f"{piece:x}\r\n".encode() + b" " * piece + b"\r\n"
        time.sleep(0.01)  # let the server answer between pieces
    yield b"0\r\n\r\n"


def test_a_json_body_over_the_limit_is_refused_by_its_content_length(tiny_server, caplog):
    with caplog.at_level(logging.WARNING, logger="local_server"):
        answer, sent = raw_request(tiny_server, "/chat/completions", {
            "content-type": "application/json", "content-length": str(MAX_JSON_BODY_BYTES + 1)}, [])
    assert answer.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in answer and sent == 0
    assert "POST /v1/chat/completions -> 413 request_too_large param=None" in caplog.messages


def test_a_streamed_json_body_is_refused_once_it_passes_the_limit(tiny_server):
    answer, sent = raw_request(tiny_server, "/chat/completions", {
        "content-type": "application/json", "transfer-encoding": "chunked"}, chunked(100_000_000))
    assert answer.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in answer
    assert sent < 3 * MAX_JSON_BODY_BYTES  # answered while the client was still sending, not after 100 MB


def test_a_json_body_under_the_limit_is_still_read(tiny_server):
    padding = " " * (MAX_JSON_BODY_BYTES - 1000)  # JSON allows whitespace: a big body that is a fine request
    response = post_json(tiny_server, "/chat/completions", (json.dumps(CHAT)[:-1] + padding + "}").encode())
    assert response.status_code == 200, response.text


@pytest.fixture
def small_upload_server(tiny_model, tmp_path):
    from local_server.server import Settings
    from tests.running_server import RunningServer

    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model), max_upload_bytes=100_000),
                            train=False)
    yield running
    running.close()


def test_an_upload_over_the_limit_is_refused_by_its_content_length(small_upload_server):
    answer, sent = raw_request(small_upload_server, "/files", {
        "content-type": "multipart/form-data; boundary=xyz", "content-length": "200000000"}, [])
    assert answer.startswith(b"HTTP/1.1 413") and b'"file_too_large"' in answer and b'"param":"file"' in answer
    assert sent == 0


def test_a_streamed_upload_is_refused_once_it_passes_the_limit(small_upload_server):
    def multipart():
        yield b'--xyz\r\ncontent-disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--xyz\r\ncontent-disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        for _ in range(200):
            yield b"x" * 1_000_000  # 200 MB if it were all read
    pieces = (f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in multipart())
    answer, sent = raw_request(small_upload_server, "/files", {
        "content-type": "multipart/form-data; boundary=xyz", "transfer-encoding": "chunked"},
        (time.sleep(0.01) or p for p in pieces))
    assert answer.startswith(b"HTTP/1.1 413") and b'"file_too_large"' in answer
    assert sent < 20_000_000
    assert list((small_upload_server.local.store.files_dir).iterdir()) == []


def test_an_upload_just_over_the_limit_is_refused_after_reading(small_upload_server):
    client = small_upload_server.client()
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("train.jsonl", _training_jsonl(1300)), purpose="fine-tune")  # > 100 kB, < envelope
    assert caught.value.status_code == 413 and caught.value.body["code"] == "file_too_large"


# ------------------------------------------------------------------------------------------------ item 15
def test_the_key_can_come_from_the_environment_or_a_file_and_not_only_the_command_line(tmp_path, monkeypatch):
    from local_server.__main__ import API_KEY_ENV, parse_args

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert parse_args([]).api_key is None
    monkeypatch.setenv(API_KEY_ENV, "sk-from-env")
    assert parse_args([]).api_key == "sk-from-env"
    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-from-file\n", encoding="utf-8")
    assert parse_args(["--api-key-file", str(key_file)]).api_key == "sk-from-file"
    key_file.write_text("\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        parse_args(["--api-key-file", str(key_file)])
    with pytest.raises(SystemExit):
        parse_args(["--api-key-file", str(tmp_path / "missing.txt")])


def test_the_docs_need_the_key_when_one_is_set(tiny_model, tmp_path):
    from local_server.server import Settings
    from tests.running_server import RunningServer

    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model), api_key="sk-class"),
                            train=False)
    root = running.base_url.removesuffix("/v1")
    try:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert_openai_error(httpx2.get(f"{root}{path}"), 401, None, "invalid_api_key")
            assert httpx2.get(f"{root}{path}", headers={"authorization": "Bearer sk-class"}).status_code == 200
        assert httpx2.get(f"{root}/health").status_code == 200  # what the course checks before it has a key
    finally:
        running.close()


# ------------------------------------------------------------------------------------------------ item 14
def test_a_store_made_before_versions_is_stamped_and_keeps_its_rows(tmp_path):
    from local_server.store import SCHEMA, SCHEMA_VERSION, Store

    with sqlite3.connect(tmp_path / "state.sqlite3") as old:  # what every server before versions left behind
        old.executescript(SCHEMA)
        old.execute("INSERT INTO files VALUES ('file-old', 'fine-tune', 'a.jsonl', 3, 1, 'file-old', 1)")
    store = Store(tmp_path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.file("file-old")["filename"] == "a.jsonl"
    assert Store(tmp_path).file("file-old") is not None  # and it opens again


@pytest.mark.parametrize("make", [
    lambda db: db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT)"),  # an older shape, no version
    lambda db: db.execute("PRAGMA user_version = 99"),  # made by a newer course
])
def test_a_store_of_another_version_is_refused_naming_the_folder(tiny_model, tmp_path, capsys, make):
    from local_server.__main__ import main
    from local_server.store import IncompatibleStore, Store

    data = tmp_path / "old-data"
    data.mkdir()
    with sqlite3.connect(data / "state.sqlite3") as old:
        make(old)
    with pytest.raises(IncompatibleStore) as caught:
        Store(data)
    assert str(data) in str(caught.value) and "옮긴 뒤" in str(caught.value)
    assert main(["--data-dir", str(data), "--model", str(tiny_model), "--port", "9"]) == 2
    assert str(data) in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ item 12
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_an_upload_onto_a_full_disk_is_a_507_naming_the_disk_and_leaves_no_partial_file(tiny_server, monkeypatch,
                                                                                         caplog):
    client = tiny_server.client()
    monkeypatch.setattr("local_server.store.os.fsync", no_space)  # the file is half on disk when the disk fills
    with caplog.at_level(logging.WARNING, logger="local_server"), pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("train.jsonl", _training_jsonl()), purpose="fine-tune")
    monkeypatch.undo()
    error = caught.value.body
    assert caught.value.status_code == 507 and error["code"] == "disk_full" and error["type"] == "server_error"
    assert "디스크가 가득 찼습니다" in error["message"] and str(tiny_server.local.store.data_dir) in error["message"]
    assert list(tiny_server.local.store.files_dir.iterdir()) == [] and client.files.list().data == []
    assert "POST /v1/files -> 507 disk_full param=None" in caplog.messages


def test_a_full_disk_during_training_fails_the_job_at_once_naming_the_disk(tiny_server, monkeypatch):
    from peft import PeftModel

    from local_server.jobs import run_job

    def half_written(self, folder, *args, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
        no_space()
    client, store = tiny_server.client(), tiny_server.local.store
    training = client.files.create(file=("train.jsonl", _training_jsonl()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_server.model, training_file=training.id,
                                         hyperparameters={"n_epochs": 1, "batch_size": 10})
    store.update_job(job.id, status="running", hyperparameters={"n_epochs": 1, "batch_size": 10,
                                                                 "learning_rate_multiplier": 1.0})
    monkeypatch.setattr(PeftModel, "save_pretrained", half_written)
    run_job(str(store.data_dir), job.id, tiny_server.model, str(tiny_server.local.model_source), "cpu")
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.error.code == "disk_full" and failed.finished_at is not None
    assert "디스크가 가득 찼습니다" in failed.error.message and str(store.data_dir) in failed.error.message
    assert [p.name for p in (store.adapters_dir / job.id).iterdir()] == []  # the half-written adapter is gone
    assert [e.level for e in client.fine_tuning.jobs.list_events(job.id, limit=100)].count("error") == 1


def test_a_worker_that_could_not_even_record_the_full_disk_is_recorded_by_the_scheduler(tiny_server, monkeypatch):
    from local_server.jobs import EXIT_DISK_FULL, Scheduler, Worker, run_job
    from local_server.store import Store

    client, store = tiny_server.client(), tiny_server.local.store
    training = client.files.create(file=("train.jsonl", _training_jsonl()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=tiny_server.model, training_file=training.id)
    store.update_job(job.id, status="running")
    with monkeypatch.context() as patch:
        patch.setattr(Store, "add_event", no_space)
        patch.setattr(Store, "update_job", no_space)
        with pytest.raises(SystemExit) as exited:
            run_job(str(store.data_dir), job.id, tiny_server.model, str(tiny_server.local.model_source), "cpu")
    assert exited.value.code == EXIT_DISK_FULL

    class EndedWorker:
        exitcode = EXIT_DISK_FULL

        def is_alive(self):
            return False

        def join(self, timeout=None):
            pass
    scheduler = Scheduler(store, tiny_server.model, str(tiny_server.local.model_source), "cpu")
    scheduler.workers[job.id] = Worker(EndedWorker())
    scheduler._watch_worker(job.id)
    failed = client.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed" and failed.error.code == "disk_full" and "메모리" not in failed.error.message


def test_a_failure_that_repeats_every_tick_is_printed_once(tiny_server, capfd):
    from local_server.jobs import Scheduler

    scheduler = Scheduler(tiny_server.local.store, tiny_server.model, "unused", "cpu", poll_seconds=0.01)
    scheduler._tick = no_space
    scheduler.start()
    time.sleep(0.5)  # some 50 ticks
    scheduler.stop()
    assert capfd.readouterr().err.count("Traceback") == 1
