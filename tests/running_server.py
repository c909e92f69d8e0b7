"""A local server on a free loopback port inside the test process, and the SDK calls tests repeat."""
from __future__ import annotations

import socket
import threading
import time

import openai
import uvicorn

from local_server.api import create_app
from local_server.server import LocalServer


class RunningServer:
    """A LocalServer behind a real uvicorn on a free loopback port, in this test process."""

    def __init__(self, settings):
        self.local = LocalServer(settings, progress=lambda *a: None)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(create_app(self.local), host="127.0.0.1", port=self.port, log_level="warning")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started and time.monotonic() < deadline:
            time.sleep(0.05)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def client(self, api_key: str = "local-no-key-needed") -> openai.OpenAI:
        return openai.OpenAI(api_key=api_key, base_url=self.base_url, max_retries=0, timeout=60)

    def close(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(10)
        self.local.close()


def upload(client, path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


def wait_for(client, job_id, statuses, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stayed {job.status}; events: "
                         f"{[e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50)]}")
