"""A local server on a free loopback port inside the test process, and the SDK calls tests repeat."""
from __future__ import annotations

import threading

import openai
import uvicorn

from local_server.api import create_app
from local_server.jobs import fine_tuned_model_id
from local_server.server import LocalServer
from tests.net import listening_socket, wait_until


class RunningServer:
    """A LocalServer behind a real uvicorn on a free loopback port, in this test process.

    train=False stops the job scheduler: created jobs wait in "validating_files" until finish_without_training()
    finishes them. For tests about the course's helpers (who made which model, what gets deleted), where a real
    training process (a new interpreter importing torch: 5-20 seconds each) would only add time.
    """

    def __init__(self, settings, train: bool = True):
        self.local = LocalServer(settings, progress=lambda *a: None)
        if not train:
            self.local.scheduler.stop()
        sock = listening_socket()  # uvicorn serves on this very socket: no other process can take the port meanwhile
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(create_app(self.local), log_level="warning")
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.uvicorn.started, 30, "the test server to start", poll=0.05)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The base model's id, as the API lists it (the tiny model's folder name, e.g. tiny-gemma0)."""
        return self.local.base_model_id

    def client(self, api_key: str = "local-no-key-needed") -> openai.OpenAI:
        return openai.OpenAI(api_key=api_key, base_url=self.base_url, max_retries=0, timeout=60)

    def finish_without_training(self, job_id: str) -> str:
        """Let a job created through the API succeed without training (needs train=False); return its model id.

        The job ends the way the training worker ends it (Store.finish_job: status, model, result file and closing
        events in one transaction), with the model id the worker would give it. Its adapter folder does not exist,
        so the model can be listed, retrieved and deleted but not asked anything.
        """
        store = self.local.store
        job = store.job(job_id)
        assert store.update_job(job_id, ("validating_files", "queued"), status="running",
                                event="Fine-tuning job started"), job
        model = fine_tuned_model_id(self.model, job["suffix"], job_id)
        assert store.finish_job(job_id, model, store.adapters_dir / job_id, b"step,train_loss\n", trained_tokens=0)
        return model

    def close(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(10)
        self.local.close()


def upload(client, path):
    with open(path, "rb") as f:
        return client.files.create(file=f, purpose="fine-tune")


def wait_for(client, job_id, statuses, timeout=180):
    def reached():
        job = client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in statuses else None

    return wait_until(reached, timeout, lambda: f"job {job_id} to reach {statuses}; events: "
                      f"{[e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50)]}", poll=0.2)
