"""정리는 이 학습자의 노트북이 만든 것만 지웁니다 (이슈 10의 8): 같은 조직 동료의 같은 접미사 모델, 직접 적은 이름."""
import json
from pathlib import Path

import nbformat
import openai
import pytest

from helpers import cleanup, course, modes, paths, scrub
from tests import standin

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TRAINING = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"글 {i}"},
                                               {"role": "assistant", "content": "hockey"}]}) for i in range(10))


def fine_tune(client, suffix="baseball-hockey"):
    training = client.files.create(file=("train.jsonl", TRAINING.encode()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=standin.BASE_MODELS[0], training_file=training.id, suffix=suffix)
    while job.status != "succeeded":
        job = client.fine_tuning.jobs.retrieve(job.id)
    return job.fine_tuned_model


@pytest.fixture
def learner_and_colleague(monkeypatch, tmp_path):
    """같은 서버(같은 조직)에 학습자(course.connect)와 동료(그냥 SDK, 다른 컴퓨터)."""
    for name in (*modes.SETTING_NAMES, modes.MODE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(paths, "OUTPUT_DIR", tmp_path / "output")
    monkeypatch.setattr(scrub, "CONFIGURED_SECRETS", set())
    with standin.serve() as url:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "fakeKEYforTHEcleanupTEST01")
        colleague = openai.OpenAI(api_key="sk-colleague", base_url=url, max_retries=0)
        yield course.connect("live", "cleanup"), colleague


def test_a_colleagues_model_with_the_same_suffix_is_used_but_never_deleted(learner_and_colleague, capsys):
    learner, colleague = learner_and_colleague
    theirs = fine_tune(colleague)
    assert course.fine_tuned_model(learner, "baseball-hockey") == theirs
    assert "다른 사람" in capsys.readouterr().out
    assert course.delete_if_mine(learner, theirs) is False
    assert learner.models.retrieve(theirs).id == theirs  # 아직 있음
    assert f'client.models.delete("{theirs}")' in capsys.readouterr().out


def test_the_learners_own_model_is_preferred_and_deleted(learner_and_colleague):
    learner, colleague = learner_and_colleague
    mine = fine_tune(learner)
    theirs = fine_tune(colleague)  # 더 최근이지만 동료의 것
    assert course.fine_tuned_model(learner, "baseball-hockey") == mine
    assert course.delete_if_mine(learner, mine) is True
    with pytest.raises(openai.NotFoundError):
        learner.models.retrieve(mine)
    assert learner.models.retrieve(theirs).id == theirs


def test_a_typed_in_model_name_is_not_deleted(learner_and_colleague):
    learner, colleague = learner_and_colleague
    typed = fine_tune(colleague, suffix="my-old-run")
    assert course.delete_if_mine(learner, typed) is False
    assert learner.models.retrieve(typed).id == typed


def test_in_replay_the_recordings_are_the_ledger():
    client = course.connect("replay", "08_newsgroups_logprobs")
    created = cleanup.created_here(client, "replay")
    assert "ft:gpt-4.1-mini-2025-04-14:your-org:baseball-hockey:standin01" in created  # 07 의 기록이 만든 모델
    assert not any(i.startswith("ft:") and "colleague" in i for i in created)


def test_notebooks_delete_models_only_through_the_ledger():
    cells = {name: "\n".join(c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells
                             if c.cell_type == "code")
             for name in ("03_hobanse_finetune.ipynb", "07_newsgroups_finetune.ipynb", "08_newsgroups_logprobs.ipynb")}
    for source in cells.values():
        assert "models.delete(" not in source and "course.delete_if_mine(client," in source
