"""정리는 이 학습자의 노트북이 만든 것만 지웁니다 (이슈 10의 8): 같은 조직 동료의 같은 접미사 모델, 직접 적은 이름.

서버는 이 과정의 로컬 서버(작은 무작위 Gemma 3, tests/conftest.py 의 tiny_server)입니다. 누가 어느 모델을 만들었는지만
보므로 작업은 학습 없이 끝냅니다 (tiny_server.finish_without_training).
"""
import json
from pathlib import Path

import httpx2
import nbformat
import openai
import pytest

from helpers import cleanup, course, modes, paths, scrub
from local_server.jobs import fine_tuned_model_id

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TRAINING = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"글 {i}"},
                                               {"role": "assistant", "content": "hockey"}]}) for i in range(10))


def fine_tune(client, server, suffix="baseball-hockey"):
    """client 가 파일을 올리고 작업을 만들고, 끝난 작업을 물어 모델 이름을 받습니다 (노트북이 하는 순서)."""
    training = client.files.create(file=("train.jsonl", TRAINING.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=server.model, training_file=training.id, suffix=suffix)
    server.finish_without_training(job.id)
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded"
    return job.fine_tuned_model


@pytest.fixture
def learner_and_colleague(tiny_server, monkeypatch, tmp_path):
    """같은 서버(같은 조직)에 학습자(course.connect)와 동료(그냥 SDK, 다른 컴퓨터)."""
    for name in (*modes.SETTING_NAMES, modes.MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "output")
    monkeypatch.setattr(scrub, "CONFIGURED_SECRETS", set())
    monkeypatch.setenv("OPENAI_BASE_URL", tiny_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "fakeKEYforTHEcleanupTEST01")
    return course.connect("live", "cleanup"), tiny_server.client("sk-colleague")


def test_a_colleagues_model_with_the_same_suffix_is_used_but_never_deleted(learner_and_colleague, tiny_server,
                                                                           capsys):
    learner, colleague = learner_and_colleague
    theirs = fine_tune(colleague, tiny_server)
    assert course.fine_tuned_model(learner, "baseball-hockey") == theirs
    assert "다른 사람" in capsys.readouterr().out
    assert course.delete_if_mine(learner, theirs) is False
    assert learner.models.retrieve(theirs).id == theirs  # 아직 있음
    assert f'client.models.delete("{theirs}")' in capsys.readouterr().out


def test_the_learners_own_model_is_preferred_and_deleted(learner_and_colleague, tiny_server):
    learner, colleague = learner_and_colleague
    mine = fine_tune(learner, tiny_server)
    theirs = fine_tune(colleague, tiny_server)  # 더 최근이지만 동료의 것
    ledger = json.loads((paths.OUTPUT_DIR / cleanup.LEDGER_NAME).read_text(encoding="utf-8"))
    assert mine in ledger[tiny_server.base_url] and theirs not in ledger[tiny_server.base_url]
    assert course.fine_tuned_model(learner, "baseball-hockey") == mine
    assert course.delete_if_mine(learner, mine) is True
    with pytest.raises(openai.NotFoundError):
        learner.models.retrieve(mine)
    assert learner.models.retrieve(theirs).id == theirs


def test_a_typed_in_model_name_is_not_deleted(learner_and_colleague, tiny_server):
    learner, colleague = learner_and_colleague
    typed = fine_tune(colleague, tiny_server, suffix="my-old-run")
    assert course.delete_if_mine(learner, typed) is False
    assert learner.models.retrieve(typed).id == typed


def interaction(method, path, status, body):
    return {"request": {"method": method, "path": path}, "response": {"status": status, "json": body}}


def job(job_id, status="running", model=None):
    return {"id": job_id, "object": "fine_tuning.job", "status": status, "fine_tuned_model": model}


def test_in_replay_the_recordings_are_the_ledger(tmp_path, monkeypatch):
    monkeypatch.delenv(modes.MODE_ENV, raising=False)
    monkeypatch.setattr(paths, "RECORDINGS_DIR", tmp_path)
    header = {"source": "local open-weight tiny-gemma0 (LoRA, CPU)", "recorded_on": "2026-11-21", "sdk": "openai 3"}
    mine, theirs = "ft:tiny-gemma0:local:baseball-hockey:mine0001", "ft:tiny-gemma0:local:baseball-hockey:colleague"
    (tmp_path / "07_newsgroups_finetune.json").write_text(json.dumps({"header": header, "interactions": [
        interaction("POST", "/files", 200, {"id": "file-mine", "object": "file"}),
        interaction("POST", "/fine_tuning/jobs", 200, job("ftjob-mine")),
        interaction("POST", "/fine_tuning/jobs", 400, {"error": {"message": "no"}}),  # 실패는 아무것도 만들지 않음
        interaction("GET", "/fine_tuning/jobs/ftjob-mine", 200, job("ftjob-mine", "succeeded", mine)),
    ]}), encoding="utf-8")
    (tmp_path / "08_newsgroups_logprobs.json").write_text(json.dumps({"header": header, "interactions": [
        interaction("GET", "/fine_tuning/jobs", 200, {"object": "list", "data": [  # 동료의 작업도 목록에는 보임
            job("ftjob-colleague", "succeeded", theirs), job("ftjob-mine", "succeeded", mine)]}),
    ]}), encoding="utf-8")
    client = course.connect("replay", "08_newsgroups_logprobs")
    assert cleanup.created_here(client, "replay") == {"file-mine", "ftjob-mine", mine}
    assert course.delete_if_mine(client, theirs) is False


def test_the_models_the_stored_recordings_made_are_the_learners(monkeypatch):
    """저장소의 기록(누가 다시 기록하든): 07 이 만든 작업의 모델은 08 의 재생에서 '내 것' 입니다."""
    monkeypatch.delenv(modes.MODE_ENV, raising=False)
    recording = json.loads((paths.RECORDINGS_DIR / "07_newsgroups_finetune.json").read_text(encoding="utf-8"))
    made = {i["response"]["json"]["id"] for i in recording["interactions"]
            if i["request"]["method"] == "POST" and i["request"]["path"] == "/fine_tuning/jobs"
            and i["response"]["status"] < 400}
    models = {i["response"]["json"]["fine_tuned_model"] for i in recording["interactions"]
              if isinstance(i["response"].get("json"), dict) and i["response"]["json"].get("id") in made
              and i["response"]["json"].get("fine_tuned_model")}
    assert models and all(":baseball-hockey:" in m for m in models)
    assert models <= cleanup.created_here(course.connect("replay", "08_newsgroups_logprobs"), "replay")


def test_notebooks_delete_models_only_through_the_ledger():
    cells = {name: "\n".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells
                             if c.cell_type == "code")
             for name in ("03_hobanse_finetune.ipynb", "07_newsgroups_finetune.ipynb", "08_newsgroups_logprobs.ipynb")}
    for source in cells.values():
        assert "models.delete(" not in source and "course.delete_if_mine(client," in source


# ----------------------------------------------------------------------------- 이슈 18의 4: 작업이 남긴 것까지


def fine_tune_with_checkpoints(client, server, suffix="baseball-hockey", steps=(5, 10)):
    """fine_tune 과 같되, 작업이 에포크마다 남기는 체크포인트 모델(로컬 서버는 모델 목록에도 올림)을 함께 만듭니다."""
    training = client.files.create(file=("train.jsonl", TRAINING.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=server.model, training_file=training.id, suffix=suffix)
    model = fine_tuned_model_id(server.model, suffix, job.id)
    store = server.local.store
    checkpoints = [f"{model}:ckpt-step-{step}" for step in steps]
    for step, checkpoint in zip(steps, checkpoints):
        store.add_checkpoint(job.id, step, checkpoint, store.adapters_dir / job.id / f"ckpt-step-{step}", {})
    assert server.finish_without_training(job.id) == model
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.result_files and {m.id for m in client.models.list()} >= set(checkpoints)
    return model, checkpoints, job.result_files


def test_deleting_my_model_also_deletes_its_checkpoint_models_and_result_file(learner_and_colleague, tiny_server,
                                                                               capsys):
    learner, colleague = learner_and_colleague
    mine, my_checkpoints, my_results = fine_tune_with_checkpoints(learner, tiny_server)
    theirs, their_checkpoints, their_results = fine_tune_with_checkpoints(colleague, tiny_server)
    assert course.delete_if_mine(learner, mine) is True
    for checkpoint in my_checkpoints:
        with pytest.raises(openai.NotFoundError):
            learner.models.retrieve(checkpoint)
    for file_id in my_results:
        with pytest.raises(openai.NotFoundError):
            learner.files.retrieve(file_id)
    shown = capsys.readouterr().out
    assert f"체크포인트 모델 삭제: {my_checkpoints[0]} True" in shown and f"결과 파일 삭제: {my_results[0]} True" in shown
    for checkpoint in their_checkpoints:  # 동료의 작업이 남긴 것은 그대로
        assert learner.models.retrieve(checkpoint).id == checkpoint
    assert learner.files.retrieve(their_results[0]).id == their_results[0]


def test_a_checkpoint_the_server_will_not_delete_is_reported_and_the_rest_still_goes(learner_and_colleague,
                                                                                    tiny_server, monkeypatch, capsys):
    learner, _ = learner_and_colleague
    mine, checkpoints, results = fine_tune_with_checkpoints(learner, tiny_server)
    delete_model = learner.models.delete

    def openai_like_delete(model_id):  # OpenAI 는 체크포인트 모델을 지우지 못하게 할 수 있음
        if ":ckpt-step-" in model_id:
            request = httpx2.Request("DELETE", f"{tiny_server.base_url}/models/{model_id}")
            raise openai.BadRequestError("Checkpoints cannot be deleted", body=None,
                                         response=httpx2.Response(400, request=request))
        return delete_model(model_id)

    monkeypatch.setattr(learner.models, "delete", openai_like_delete)
    assert course.delete_if_mine(learner, mine) is True
    shown = capsys.readouterr().out
    assert f"체크포인트 모델 {checkpoints[0]} 은 서버가 지우지 못하게 합니다 (HTTP 400)" in shown
    with pytest.raises(openai.NotFoundError):
        learner.files.retrieve(results[0])
