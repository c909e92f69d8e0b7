"""tests/ 의 공통 fixture: 작은 무작위 Gemma 3 모델(tests/tiny_model.py)과, 그 모델로 도는 이 과정의 로컬 서버.

torch 와 transformers 는 이 fixture 를 쓰는 테스트가 있을 때만 불러옵니다 (다른 테스트의 수집을 느리게 하지 않도록).
"""
import pytest

from helpers import modes, paths, scrub


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """개발자 컴퓨터의 키, .env, 기록과 출력 폴더가 테스트에 새어 들지 않게: 모든 자리를 tmp_path 로."""
    for name in (*modes.SETTING_NAMES, modes.MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(paths, "ROOT", tmp_path)
    monkeypatch.setattr(paths, "RECORDINGS_DIR", tmp_path / "recordings")
    monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "output")
    monkeypatch.setattr(scrub, "CONFIGURED_SECRETS", set())
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Folder of the tiny random Gemma 3 (its id on the server is the folder name, tiny-gemma0). Made once."""
    from tests.tiny_model import make_tiny_model

    # Not mktemp("tiny-gemma"): that would number the folders of modules that make their own (tiny-gemma0, 1, …).
    return make_tiny_model(tmp_path_factory.mktemp("shared-tiny-model") / "tiny-gemma0")


@pytest.fixture
def tiny_server(tiny_model, tmp_path):
    """A fresh local server (own data folder, loads in well under a second) over the tiny model, on real HTTP.

    Jobs do not train: finish them with tiny_server.finish_without_training(job_id) (see tests/running_server.py).
    """
    from local_server.server import Settings
    from tests.running_server import RunningServer

    running = RunningServer(Settings(data_dir=tmp_path / "server-data", model=str(tiny_model)), train=False)
    yield running
    running.close()
