"""The local server on a shared machine (issue 16, item 5): only this computer's programs reach a loopback server
(no DNS rebinding, no browser page of another site), one server per data directory, and no training worker left
behind when the server is killed."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx2
import openai
import psutil
import pytest

from local_server.training import MAX_EPOCHS

TRAINING = b"".join(json.dumps({"messages": [{"role": "user", "content": f"질문 {i}"},
                                             {"role": "assistant", "content": f"답 {i}"}]}).encode() + b"\n"
                   for i in range(10))
CHAT = {"model": "tiny-gemma0", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_forbidden(response: httpx2.Response) -> str:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "forbidden", error
    return error["message"]


# ------------------------------------------------------------------------------------------------ Host (DNS rebinding)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "192.168.0.10", "127.0.0.1.nip.io"])
def test_a_loopback_server_refuses_other_host_names(tiny_server, host):
    message = assert_forbidden(httpx2.get(f"{tiny_server.base_url}/models", headers={"host": host}, timeout=30))
    assert "localhost" in message and host in message


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]"])
def test_a_loopback_server_takes_loopback_host_names_with_or_without_port(tiny_server, name):
    for host in (name, f"{name}:{tiny_server.port}"):
        response = httpx2.get(f"{tiny_server.base_url}/models", headers={"host": host}, timeout=30)
        assert response.status_code == 200, (host, response.text)


def test_a_server_on_another_address_takes_its_own_names(tiny_model, tmp_path):
    from local_server.server import Settings
    from tests.running_server import RunningServer

    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model), host="0.0.0.0",
                                     api_key="sk-class"), train=False)
    try:
        response = httpx2.get(f"{running.base_url}/models", timeout=30,
                              headers={"host": "classroom.example:8765", "authorization": "Bearer sk-class"})
        assert response.status_code == 200, response.text
    finally:
        running.close()


# ------------------------------------------------------------------------------------------------ Origin (browsers)
@pytest.mark.parametrize("headers", [{"origin": "https://evil.example"}, {"origin": "null"},
                                     {"origin": "http://localhost:8888"}, {"sec-fetch-site": "cross-site"}])
def test_browser_pages_of_other_origins_are_refused_for_every_method(tiny_server, headers):
    url = tiny_server.base_url
    client = tiny_server.client()
    training = client.files.create(file=("train.jsonl", TRAINING), purpose="fine-tune")
    before = [f.id for f in client.files.list()]
    # what a plain HTML <form enctype="multipart/form-data"> sends: no preflight protects it
    assert_forbidden(httpx2.post(f"{url}/files", headers=headers, timeout=30,
                                 files={"file": ("x.jsonl", TRAINING)}, data={"purpose": "fine-tune"}))
    assert_forbidden(httpx2.post(f"{url}/chat/completions", json=CHAT, headers=headers, timeout=30))
    assert_forbidden(httpx2.get(f"{url}/files/{training.id}/content", headers=headers, timeout=30))
    assert_forbidden(httpx2.delete(f"{url}/files/{training.id}", headers=headers, timeout=30))
    assert_forbidden(httpx2.options(f"{url}/files", headers=headers, timeout=30))
    assert [f.id for f in client.files.list()] == before


def test_this_servers_own_pages_and_programs_without_origin_pass(tiny_server):
    url = tiny_server.base_url
    same_origin = {"origin": f"http://127.0.0.1:{tiny_server.port}", "sec-fetch-site": "same-origin"}
    assert httpx2.post(f"{url}/chat/completions", json=CHAT, headers=same_origin, timeout=60).status_code == 200
    assert httpx2.post(f"{url}/chat/completions", json=CHAT, timeout=60).status_code == 200  # the SDK, curl


# ------------------------------------------------------------------------------------------------ one server per folder
def test_a_second_server_on_the_same_data_dir_is_refused_and_changes_nothing(tiny_model, tmp_path):
    from local_server.server import DataDirInUse, LocalServer, Settings
    from tests.net import free_port
    from tests.running_server import RunningServer

    settings = Settings(data_dir=tmp_path / "data", model=str(tiny_model))
    first = RunningServer(settings, train=False)
    try:
        client = first.client()
        job = client.fine_tuning.jobs.create(model=first.model, training_file=client.files.create(
            file=("train.jsonl", TRAINING), purpose="fine-tune").id)
        assert first.local.store.update_job(job.id, ("validating_files",), status="running")  # as if training
        with pytest.raises(DataDirInUse, match=f"프로세스 {os.getpid()}"):
            LocalServer(settings, progress=lambda *a: None)
        second = subprocess.run([sys.executable, "-m", "local_server", "--model", str(tiny_model), "--data-dir",
                                 str(settings.data_dir), "--port", str(free_port())],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"프로세스 {os.getpid()}" in second.stderr and "--data-dir" in second.stderr, second.stderr
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # recover() did not run
    finally:
        first.close()
    LocalServer(settings, progress=lambda *a: None).close()  # closed: the folder is free again


# ------------------------------------------------------------------------------------------------ no orphan worker
def test_killing_the_server_stops_its_training_worker(tiny_model, tmp_path):
    from tests.net import free_port, wait_until

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "local_server", "--model", str(tiny_model), "--data-dir",
                               str(tmp_path / "data"), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        client = openai.OpenAI(api_key="x", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=30)
        wait_until(lambda: _answers(client), 120, "the server to start")
        job = client.fine_tuning.jobs.create(model="tiny-gemma0", hyperparameters={"n_epochs": MAX_EPOCHS},
                                             training_file=client.files.create(file=("t.jsonl", TRAINING * 10),
                                                                               purpose="fine-tune").id)
        wait_until(lambda: any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id)), 120,
                   "the first training step")
        worker = next(p for p in psutil.Process(server.pid).children() if "spawn_main" in " ".join(p.cmdline()))
        server.kill()
        server.wait(30)
        wait_until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE, 60,
                   f"the training worker {worker.pid} to end after its server was killed")
    finally:
        server.kill()
        if worker is not None and worker.is_running():
            worker.kill()


def _answers(client) -> bool:
    try:
        return bool(client.models.list().data)
    except openai.APIConnectionError:
        return False
