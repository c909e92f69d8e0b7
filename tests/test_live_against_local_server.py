"""실제 HTTP 경로: 127.0.0.1 의 로컬 서버(작은 무작위 Gemma 3)에 connect() 의 live/record 모드로 붙어 봅니다."""
import json
import re
from pathlib import Path

import nbformat
import openai
import papermill
import pytest

from helpers import course, modes, paths, scrub
from tests import failing_server

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FAKE_KEY = "sk-" + "fakeKEYforTHElocalSERVERtest0123"  # 조각으로: 이 파일 자체에 키 모양 문자열이 없도록


@pytest.fixture
def through(monkeypatch, tmp_path):
    """through(url): 키와 주소를 환경 변수로 주고, 기록과 출력은 tmp_path 에 (개발자의 키나 COURSE_MODE 는 치움)."""
    def point_at(url):
        for name in (*modes.SETTING_NAMES, modes.MODE_ENV):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
        monkeypatch.setattr(paths, "RECORDINGS_DIR", tmp_path)
        monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "output")
        monkeypatch.setattr(scrub, "CONFIGURED_SECRETS", set())
    return point_at


def training_file(client):
    lines = (json.dumps({"messages": [{"role": "user", "content": f"질문 {i}"},
                                      {"role": "assistant", "content": f"답 {i}"}]}, ensure_ascii=False)
             for i in range(10))
    return client.files.create(file=("train.jsonl", "\n".join(lines).encode()), purpose="fine-tune")


def test_record_through_http_is_labelled_with_the_local_model_and_replays(tiny_server, through, tmp_path, capsys):
    through(tiny_server.base_url)
    live = course.connect("record", "roundtrip", dataset="호반스")
    assert course.base_model(live, "auto") == (tiny_server.model, True)  # "auto": 로컬 서버면 그 기본 모델
    upload = training_file(live)
    text = (tmp_path / "roundtrip.json").read_text(encoding="utf-8")
    header = json.loads(text)["header"]
    assert header["source"] == f"local open-weight {tiny_server.model} (LoRA, CPU)"
    assert header["source"] == "local open-weight tiny-gemma0 (LoRA, CPU)"
    assert header["dataset"] == "호반스" and FAKE_KEY not in text

    capsys.readouterr()
    replay = course.connect("replay", "roundtrip")
    assert "로컬 서버에서 학습한 오픈 웨이트 모델" in capsys.readouterr().out  # 재생도 출처를 말함
    assert course.base_model(replay, "auto") == (tiny_server.model, True)  # 기록한 서버의 답을 그대로 따름
    assert training_file(replay).id == upload.id


def test_live_refusal_to_fine_tune_is_explained_in_korean(tiny_server, through, tmp_path):
    refusal = {"message": "Fine-tuning is not available for your organization.", "type": "invalid_request_error",
               "param": None, "code": "fine_tuning_unavailable"}
    with failing_server.refusing(tiny_server.base_url, "POST", "/v1/fine_tuning/jobs", 403, refusal) as url:
        through(url)
        with pytest.raises(papermill.PapermillExecutionError) as caught:
            papermill.execute_notebook(str(NOTEBOOKS / "03_hobanse_finetune.ipynb"), str(tmp_path / "out.ipynb"),
                                       cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
                                       parameters={"MODE": "live", "MAX_TOKENS": 4})  # 작은 모델의 답은 짧게
    terminal = str(caught.value)
    code = [c for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells if c.cell_type == "code"]
    failed = next(i for i, c in enumerate(code) if "fine_tuning.jobs.create" in c.source)
    assert f"In [{code[failed].execution_count}]" in terminal  # 작업을 만드는 셀에서 멈춤
    assert not any(c.execution_count or c.outputs for c in code[failed + 1:])  # 뒤의 셀은 실행되지 않음
    assert "2027-01-06" in terminal  # 터미널에서 papermill 을 돌려도 한국어 설명이 보임 (항목 21)
    shown = "".join(o.get("text", "") + "".join(o.get("traceback", [])) for o in code[failed].outputs)
    assert "PermissionDeniedError" in shown and "2027-01-06" in shown and 'MODE = "replay"' in shown
    assert "Traceback" not in shown and "File " not in shown  # 긴 traceback 대신 설명만
    # 항목 9: 앞 셀에서 올린 학습 파일이 남아 있다는 것과 지우는 한 줄 (그 파일은 정말 로컬 서버에 있음)
    uploaded = re.search(r"file-[A-Za-z0-9]+", shown).group(0)
    assert f'client.files.delete("{uploaded}")' in shown
    assert tiny_server.client().files.retrieve(uploaded).filename == "hobanse_train.jsonl"
    assert tiny_server.client().fine_tuning.jobs.list().data == []  # 거절된 작업은 서버에 닿지 않았음
    assert FAKE_KEY not in (tmp_path / "out.ipynb").read_text(encoding="utf-8")


def test_fine_tuned_model_is_found_through_the_api_and_a_deleted_one_is_not(tiny_server, through, capsys):
    through(tiny_server.base_url)
    client = course.connect("live", "finder")
    assert course.fine_tuned_model(client, "hobanse") is None
    assert "hobanse" in capsys.readouterr().out  # 왜 없는지 말함
    job = client.fine_tuning.jobs.create(model=tiny_server.model, training_file=training_file(client).id,
                                         suffix="hobanse")
    assert course.fine_tuned_model(client, "hobanse") is None  # 아직 학습 중
    model = tiny_server.finish_without_training(job.id)
    assert model.startswith(f"ft:{tiny_server.model}:local:hobanse:")
    assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == model
    assert course.fine_tuned_model(client, "hobanse") == model
    assert course.fine_tuned_model(client, "other") is None
    client.models.delete(model)
    with pytest.raises(openai.NotFoundError):
        client.models.delete(model)  # 두 번째는 없다고 답함
    capsys.readouterr()
    assert course.fine_tuned_model(client, "hobanse") is None
    assert "지워졌습니다" in capsys.readouterr().out


def test_resolve_mode_and_recording_header(tiny_server, through, monkeypatch):
    through(tiny_server.base_url)
    assert course.resolve_mode("auto") == "live"  # 키가 있으므로
    monkeypatch.setenv(course.MODE_ENV, "replay")
    assert course.resolve_mode("live") == "replay"  # COURSE_MODE 가 우선
    assert course.recording_header("nothing-here") == {}
    monkeypatch.delenv(course.MODE_ENV)
    client = course.connect("record", "with-header", dataset="sample — 테스트")
    client.models.list()
    header = course.recording_header("with-header")
    assert header["dataset"] == "sample — 테스트" and header["source"].startswith("local open-weight tiny-gemma0")
