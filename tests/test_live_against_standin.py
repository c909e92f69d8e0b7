"""실제 HTTP 경로: 127.0.0.1 의 오프라인 대역 서버에 connect() 의 live/record 모드로 붙어 봅니다."""
import json
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from helpers import course, paths, scrub
from tests import standin

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def standin_url(monkeypatch, tmp_path):
    def start(server=None):
        url = stack.enter_context(standin.serve(server))
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "fakeKEYforTHEstandinTEST0123")
        monkeypatch.delenv(course.MODE_ENV, raising=False)
        monkeypatch.setattr(paths, "RECORDINGS_DIR", tmp_path)
        monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "output")
        monkeypatch.setattr(scrub, "CONFIGURED_SECRETS", set())
        return url

    import contextlib
    with contextlib.ExitStack() as stack:
        yield start


def test_record_through_http_is_labelled_offline_standin_and_replays(standin_url, tmp_path):
    standin_url()
    live = course.connect("record", "roundtrip", dataset="호반스")
    upload = live.files.create(file=("train.jsonl", b"{}\n"), purpose="fine-tune")
    ids = [m.id for m in live.models.list().data]
    text = (tmp_path / "roundtrip.json").read_text(encoding="utf-8")
    assert json.loads(text)["header"]["source"] == "offline stand-in"
    assert "fakeKEYforTHEstandinTEST" not in text

    replay = course.connect("replay", "roundtrip")
    assert replay.files.create(file=("train.jsonl", b"{}\n"), purpose="fine-tune").id == upload.id
    assert [m.id for m in replay.models.list().data] == ids


def test_live_refusal_to_fine_tune_is_explained_in_korean(standin_url, tmp_path):
    server = standin.StandIn()
    server.refuse_fine_tuning = True
    standin_url(server)
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        papermill.execute_notebook(str(NOTEBOOKS / "03_hobanse_finetune.ipynb"), str(tmp_path / "out.ipynb"),
                                   cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
                                   parameters={"MODE": "live"})
    terminal = str(caught.value)
    assert "In [7]" in terminal  # 작업을 만드는 셀에서 멈춤: 뒤의 셀은 실행되지 않음
    assert "2027-01-06" in terminal  # 터미널에서 papermill 을 돌려도 한국어 설명이 보임 (항목 21)
    failed = next(c for c in nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
                  if c.cell_type == "code" and "fine_tuning.jobs.create" in c.source)
    shown = "".join(o.get("text", "") + "".join(o.get("traceback", [])) for o in failed.outputs)
    assert "PermissionDeniedError" in shown and "2027-01-06" in shown and 'MODE = "replay"' in shown
    assert "Traceback" not in shown and "File " not in shown  # 긴 traceback 대신 설명만
    # 항목 9: 앞 셀에서 올린 학습 파일이 남아 있다는 것과 지우는 한 줄
    uploaded = re.search(r"file-[A-Za-z0-9]+", shown).group(0)
    assert f'client.files.delete("{uploaded}")' in shown
    assert "fakeKEYforTHEstandinTEST" not in (tmp_path / "out.ipynb").read_text(encoding="utf-8")


def test_fine_tuned_model_is_found_through_the_api_and_a_deleted_one_is_not(standin_url, capsys):
    standin_url()
    client = course.connect("live", "finder")
    assert course.fine_tuned_model(client, "hobanse") is None
    assert "hobanse" in capsys.readouterr().out  # 왜 없는지 말함
    training = client.files.create(file=("train.jsonl", "\n".join(
        json.dumps({"messages": [{"role": "user", "content": f"질문 {i}"}, {"role": "assistant", "content": f"답 {i}"}]},
                   ensure_ascii=False) for i in range(10)).encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=standin.BASE_MODELS[0], training_file=training.id, suffix="hobanse")
    while job.status != "succeeded":
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert course.fine_tuned_model(client, "hobanse") == job.fine_tuned_model
    assert course.fine_tuned_model(client, "other") is None
    client.models.delete(job.fine_tuned_model)
    assert course.fine_tuned_model(client, "hobanse") is None
    assert "지워졌습니다" in capsys.readouterr().out


def test_resolve_mode_and_recording_header(standin_url, monkeypatch, tmp_path):
    standin_url()
    assert course.resolve_mode("auto") == "live"  # 키가 있으므로
    monkeypatch.setenv(course.MODE_ENV, "replay")
    assert course.resolve_mode("live") == "replay"  # COURSE_MODE 가 우선
    assert course.recording_header("nothing-here") == {}
    monkeypatch.delenv(course.MODE_ENV)
    client = course.connect("record", "with-header", dataset="sample — 테스트")
    client.models.list()
    assert course.recording_header("with-header")["dataset"] == "sample — 테스트"
