"""`--device auto` takes CUDA when torch reports a GPU, says so when the server starts and in each job's first event,
and training is handed that device. No GPU here: `torch.cuda.is_available()` is mocked, so the GPU work itself
(kernels, memory, speed) is not tested; the README says what was and was not tried on a GPU."""
from __future__ import annotations

import pytest
import torch
import uvicorn

from helpers import chat_data, datasets
from local_server import server as server_module
from local_server.__main__ import main, parse_args
from local_server.base_model import pick_device, pick_dtype
from local_server.jobs import run_job
from local_server.server import Settings
from tests.running_server import RunningServer, upload


@pytest.fixture
def cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # CUDA still comes first


def test_auto_takes_cuda_when_torch_reports_one(cuda_present, monkeypatch):
    assert pick_device("auto") == pick_device("cuda") == "cuda"
    assert pick_device("cpu") == "cpu"
    assert pick_dtype("cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # e.g. a T4
    assert pick_dtype("cuda") == "float32"


def test_auto_without_a_gpu_is_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == "cpu"
    with pytest.raises(ValueError, match="cuda"):
        pick_device("cuda")


def _load_on_the_cpu(monkeypatch, asked: list):
    """The base model goes to the CPU whatever device the server asks for (there is no GPU to put it on)."""
    real_load = server_module.load_model_and_tokenizer

    def load(source, device, dtype=None):
        asked.append(device)
        return real_load(source, "cpu", dtype)

    monkeypatch.setattr(server_module, "load_model_and_tokenizer", load)


def test_the_server_says_which_device_it_chose(cuda_present, monkeypatch, tiny_model, tmp_path, capsys):
    asked = []
    _load_on_the_cpu(monkeypatch, asked)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")  # main() sets it for its process; restored after the test

    class NotServing:  # main() would serve until stopped: here it returns at once and main() closes the server
        def __init__(self, config):
            pass

        def run(self):
            pass

    monkeypatch.setattr(uvicorn, "Server", NotServing)
    assert main(["--model", str(tiny_model), "--data-dir", str(tmp_path / "data")]) == 0
    assert asked == ["cuda"]
    assert "장치 cuda (bfloat16)" in capsys.readouterr().out


def test_a_jobs_first_event_names_the_device_and_training_uses_it(cuda_present, monkeypatch, tiny_model, tmp_path):
    _load_on_the_cpu(monkeypatch, [])
    trainer_devices = []

    def set_device(device):  # what the Trainer does first with a GPU; there is none here, so the job stops there
        trainer_devices.append(str(device))
        raise RuntimeError("no GPU on this test machine")

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    running = RunningServer(Settings(data_dir=tmp_path / "data", model=str(tiny_model)), train=False)
    try:
        client, store, local = running.client(), running.local.store, running.local
        assert local.device == "cuda"
        training_file = upload(client, chat_data.write_jsonl(datasets.hobanse_chat_examples(), tmp_path / "t.jsonl"))
        job = client.fine_tuning.jobs.create(model=running.model, training_file=training_file.id, method={
            "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 8,
                                                                     "learning_rate_multiplier": 1}}})
        # What the scheduler does when the job's turn comes, with the device the server chose (its scheduler is off)
        assert store.update_job(job.id, ("validating_files",), status="running", event="Fine-tuning job started")
        run_job(str(store.data_dir), job.id, running.model, str(local.model_source), local.device, local.dtype)
        events = [event["message"] for event in reversed(store.events(job.id))]
        first = events[events.index("Fine-tuning job started") + 1]
        assert "(장치: cuda, bfloat16, " in first
        # Training was handed the GPU: the Trainer went to put the model on it
        assert trainer_devices == ["cuda:0"]
        job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "failed" and "no GPU on this test machine" in job.error.message, job.error
    finally:
        running.close()


def test_a_device_this_computer_lacks_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--device", "cuda"])
    assert exited.value.code == 2
    assert "이 컴퓨터에서는 device 'cuda'를 쓸 수 없습니다" in capsys.readouterr().err
