"""helpers/course.py: 재생의 적중/실패와 순서, 기록→재생 왕복, 비밀 지우기, 모드 고르기, 오류 설명."""
import json

import httpx2
import openai
import pytest

from helpers import course
from helpers.recordings import RecordingTransport, ReplayTransport

# Pieced together at run time so that this file itself never holds a secret-shaped string.
PLANTED_KEY = "sk-" + "proj-PLANTEDfakeKEY0123456789abcdefXYZ"
PLANTED_ORG = "org-" + "PLANTEDfakeORG0123456789"
PLANTED_PROJECT = "proj_" + "PLANTEDfakePROJECT012345"


def fake_api(request: httpx2.Request) -> httpx2.Response:
    """요청 헤더를 본문에 되돌려 주는 짓궂은 서버: 기록기가 그래도 비밀을 지우는지 봅니다."""
    echoed = {k: v for k, v in request.headers.items() if k in ("authorization", "openai-organization", "openai-project")}
    path = request.url.path
    if path.endswith("/models"):
        return httpx2.Response(200, json={"object": "list", "data": [
            {"id": "gpt-4.1-mini-2025-04-14", "object": "model", "created": 1744588800, "owned_by": "system"}],
            "echo": echoed})
    if path.endswith("/files"):
        return httpx2.Response(200, json={"id": "file-1", "object": "file", "bytes": 8, "created_at": 1,
                                          "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed"})
    if path.endswith("/fine_tuning/jobs/ftjob-1"):
        fake_api.polls += 1
        status = ["validating_files", "running", "succeeded"][min(fake_api.polls, 3) - 1]
        return httpx2.Response(200, json={
            "id": "ftjob-1", "object": "fine_tuning.job", "created_at": 1, "model": "gpt-4.1-mini-2025-04-14",
            "organization_id": PLANTED_ORG, "status": status, "training_file": "file-1", "validation_file": None,
            "result_files": [], "seed": 1, "hyperparameters": {"n_epochs": 3}, "error": None,
            "fine_tuned_model": "ft:gpt-4.1-mini-2025-04-14:acme-corp:hobanse:abc123" if status == "succeeded" else None,
            "finished_at": None, "trained_tokens": None, "echo": echoed})
    if path.endswith("/chat/completions"):
        question = json.loads(request.content)["messages"][-1]["content"]
        return httpx2.Response(200, json={
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"답: {question}"}}]})
    return httpx2.Response(404, json={"error": {"message": "not found", "type": "invalid_request_error"}})


fake_api.polls = 0


def recording_client(path, secrets=(PLANTED_KEY, PLANTED_ORG, PLANTED_PROJECT)):
    fake_api.polls = 0
    base = "https://api.openai.com/v1"
    transport = RecordingTransport(httpx2.MockTransport(fake_api), path, base, "시험 데이터", "t", secrets)
    return openai.OpenAI(api_key=PLANTED_KEY, organization=PLANTED_ORG, project=PLANTED_PROJECT, base_url=base,
                         http_client=openai.DefaultHttpxClient(transport=transport))


def replay_client(path):
    transport = ReplayTransport(path)
    return openai.OpenAI(api_key="x", base_url=transport.BASE_URL, max_retries=0,
                         http_client=openai.DefaultHttpxClient(transport=transport))


def exercise(client):
    """노트북이 하는 일의 축소판: 목록, 업로드, 같은 요청 세 번(작업 따라가기), 질문."""
    models = [m.id for m in client.models.list().data]
    upload = client.files.create(file=("train.jsonl", "{\"a\": 1}\n".encode()), purpose="fine-tune")
    statuses = [client.fine_tuning.jobs.retrieve("ftjob-1").status for _ in range(3)]
    job = client.fine_tuning.jobs.retrieve("ftjob-1")
    answer = client.chat.completions.create(model=job.fine_tuned_model,
                                            messages=[{"role": "user", "content": "호반스는 몇 명?"}])
    return models, upload.id, statuses, job.fine_tuned_model, answer.choices[0].message.content


def test_record_then_replay_gives_the_same_results(tmp_path):
    path = tmp_path / "t.json"
    recorded = exercise(recording_client(path))
    replayed = exercise(replay_client(path))
    assert list(replayed) == course.Scrubber()(list(recorded))  # 조직 이름만 your-org 로 바뀜
    assert replayed[3] == "ft:gpt-4.1-mini-2025-04-14:your-org:hobanse:abc123"
    assert recorded[2] == ["validating_files", "running", "succeeded"]  # 같은 요청은 기록된 순서대로


def test_recording_is_readable_json_with_header_and_upload_fingerprint(tmp_path):
    path = tmp_path / "t.json"
    exercise(recording_client(path))
    text = path.read_text(encoding="utf-8")
    assert "호반스는 몇 명?" in text  # 한글을 \\u 이스케이프 없이
    recording = json.loads(text)
    header = recording["header"]
    assert header["source"] == "openai" and header["dataset"] == "시험 데이터"
    assert header["sdk"] == f"openai {openai.__version__}"
    upload = next(i["request"] for i in recording["interactions"] if i["request"]["path"] == "/files")
    assert upload["body"]["purpose"] == "fine-tune"
    assert upload["body"]["file"]["filename"] == "train.jsonl" and upload["body"]["file"]["bytes"] == 9
    assert len(upload["body"]["file"]["sha256"]) == 64


def test_planted_key_org_and_project_never_reach_the_recording(tmp_path):
    path = tmp_path / "t.json"
    exercise(recording_client(path))
    text = path.read_text(encoding="utf-8")
    for secret in (PLANTED_KEY, PLANTED_ORG, PLANTED_PROJECT, "PLANTED", "acme-corp"):
        assert secret not in text
    assert "Bearer sk-REDACTED" in text or "Bearer REDACTED" in text  # 되돌려 준 헤더가 지워진 채 남음
    assert "ft:gpt-4.1-mini-2025-04-14:your-org:hobanse:abc123" in text


def test_scrubber_catches_key_shapes_without_being_told_the_secret():
    scrub = course.Scrubber()
    tail = "abcdefghijklmnopqrstuv"
    dirty = {"k": "sk-" + tail, "o": "org-" + tail, "u": "user-" + tail,
             "p": "proj_" + tail, "h": "Bearer " + tail, "korean": "호반스 유저-설명"}
    clean = scrub(dirty)
    assert clean == {"k": "sk-REDACTED", "o": "org-REDACTED", "u": "user-REDACTED",
                     "p": "proj_REDACTED", "h": "Bearer REDACTED", "korean": "호반스 유저-설명"}


def test_scrubber_hides_an_organisation_in_a_model_name_but_not_the_local_servers():
    scrub = course.Scrubber()
    assert scrub("ft:gpt-4.1-mini-2025-04-14:acme-corp:hobanse:abc123") == \
        "ft:gpt-4.1-mini-2025-04-14:your-org:hobanse:abc123"
    assert scrub("ft:gemma-3-270m:local:hobanse:92des7p2:ckpt-step-15") == \
        "ft:gemma-3-270m:local:hobanse:92des7p2:ckpt-step-15"  # "local" is the course's server, not an account


def test_replay_miss_names_the_request_and_how_to_record(tmp_path):
    path = tmp_path / "t.json"
    exercise(recording_client(path))
    client = replay_client(path)
    with pytest.raises(course.ReplayMissError) as caught:
        client.chat.completions.create(model="ft:gpt-4.1-mini-2025-04-14:your-org:hobanse:abc123",
                                       messages=[{"role": "user", "content": "기록에 없는 질문"}])
    message = str(caught.value)
    assert "POST /chat/completions" in message and "기록에 없는 질문" in message
    assert "messages" in message  # 가장 가까운 기록과 다른 필드
    assert 'MODE = "record"' in message and "tests/rerecord.py" in message


def test_replay_ignores_fields_that_do_not_change_the_answer(tmp_path):
    path = tmp_path / "t.json"
    exercise(recording_client(path))
    answer = replay_client(path).chat.completions.create(
        model="ft:gpt-4.1-mini-2025-04-14:your-org:hobanse:abc123", user="someone", metadata={"a": "b"},
        messages=[{"role": "user", "content": "호반스는 몇 명?"}])
    assert answer.choices[0].message.content == "답: 호반스는 몇 명?"


def test_record_keeps_previous_file_and_rewrites_after_each_call(tmp_path):
    path = tmp_path / "t.json"
    old = {"header": {"source": "openai", "recorded_on": "2026-01-01", "sdk": "openai 3"}, "interactions": []}
    path.write_text(json.dumps(old), encoding="utf-8")  # 저장소의 기록처럼 "complete" 가 없는 기록: 마친 기록
    client = recording_client(path)
    client.models.list()
    assert json.loads((tmp_path / "t.previous.json").read_text()) == old
    assert len(json.loads(path.read_text())["interactions"]) == 1  # 첫 호출 직후 이미 디스크에
    client.models.list()
    assert len(json.loads(path.read_text())["interactions"]) == 2


def test_auto_mode_without_key_replays_and_says_so(clean_env, capsys):
    exercise(recording_client(clean_env / "recordings" / "nb.json"))
    client = course.connect("auto", "nb")
    assert course.mode_of(client) == "replay"
    out = capsys.readouterr().out
    assert "재생(replay) 모드" in out and "출처: openai" in out and "recordings/nb.json" in out


def test_environment_variable_overrides_the_notebook_mode(clean_env, monkeypatch):
    exercise(recording_client(clean_env / "recordings" / "nb.json"))
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED_KEY)
    monkeypatch.setenv(course.MODE_ENV, "replay")
    client = course.connect("live", "nb")
    assert course.mode_of(client) == "replay"
    assert client.api_key != PLANTED_KEY


def test_auto_mode_with_key_in_dotenv_goes_live_without_printing_it(clean_env, capsys):
    (clean_env / ".env").write_text(f"OPENAI_API_KEY={PLANTED_KEY}\n", encoding="utf-8")
    client = course.connect("auto", "nb")
    assert course.mode_of(client) == "live" and client.api_key == PLANTED_KEY
    assert PLANTED_KEY not in capsys.readouterr().out


def test_live_without_key_and_without_terminal_gives_a_korean_error(clean_env):
    with pytest.raises(course.CourseError, match="API 키가 없습니다"):
        course.connect("live", "nb")


def test_unknown_mode_and_missing_recording_are_explained(clean_env):
    with pytest.raises(course.CourseError, match="MODE"):
        course.connect("offline", "nb")
    with pytest.raises(course.CourseError, match="기록 파일이 없습니다"):
        course.connect("replay", "does_not_exist")


def test_no_recording_and_no_key_names_restoring_the_recordings_and_local_mode(clean_env):
    with pytest.raises(course.CourseError) as caught:
        course.connect("auto", "03_hobanse_finetune")  # 키가 없어 재생인데 기록이 없음
    message = str(caught.value)
    assert "git checkout -- recordings" in message  # clean_env 의 기록 폴더 (저장소에서는 data/recordings)
    assert 'MODE = "local"' in message and 'MODE = "record"' in message


def test_refused_fine_tuning_job_is_explained_with_the_wind_down_dates():
    request = httpx2.Request("POST", "https://api.openai.com/v1/fine_tuning/jobs")
    response = httpx2.Response(403, request=request, json={"error": {"message": "no"}})
    err = openai.PermissionDeniedError("Fine-tuning is not available for this organization", response=response,
                                       body=None)
    text = str(course.explain_api_error(err))
    assert "2027-01-06" in text and 'MODE = "replay"' in text and "HTTP 403" in text


def test_other_api_errors_get_their_own_advice():
    request = httpx2.Request("GET", "https://api.openai.com/v1/models")
    for status, words in ((401, "키가 거부"), (404, "찾을 수 없습니다"), (429, "한도"), (500, "서버")):
        response = httpx2.Response(status, request=request, json={})
        err = openai.APIStatusError(f"said {PLANTED_KEY}", response=response, body=None)
        text = str(course.explain_api_error(err))
        assert words in text and PLANTED_KEY not in text


# ----------------------------------------------------------------------------- 이슈 18의 1: 거절한 까닭 먼저

TRAINING = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"질문 {i}"},
                                               {"role": "assistant", "content": "답"}]}) for i in range(10))


@pytest.mark.parametrize("change, field", [
    ({"hyperparameters": {"n_epochs": 0}}, "n_epochs"),
    ({"hyperparameters": {"learning_rate_multiplier": -1}}, "learning_rate_multiplier"),
    ({"model": "no-such-model"}, "model"),
])
def test_a_job_the_local_server_refuses_shows_its_reason_not_the_shutdown(tiny_server, change, field):
    client = tiny_server.client()
    training = client.files.create(file=("t.jsonl", TRAINING.encode()), purpose="fine-tune")
    request = {"model": tiny_server.model, "training_file": training.id, **change}
    with pytest.raises(openai.APIStatusError) as caught:
        client.fine_tuning.jobs.create(**request)
    text = str(course.explain_api_error(caught.value))
    first_line = text.splitlines()[0]
    assert field in first_line and caught.value.message in first_line  # 서버의 말이 첫 줄에
    assert "거절" in first_line and "고친 뒤" in text
    assert "2027-01-06" not in text and "잘못이 아닙니다" not in text


def test_openais_invalid_hyperparameter_is_not_explained_as_the_shutdown():
    request = httpx2.Request("POST", "https://api.openai.com/v1/fine_tuning/jobs")
    said = "Invalid n_epochs: 0. Must be between 1 and 50."
    body = {"message": said, "type": "invalid_request_error", "param": "hyperparameters.n_epochs", "code": None}
    err = openai.BadRequestError(said, response=httpx2.Response(400, request=request, json={"error": body}),
                                 body=body)
    text = str(course.explain_api_error(err))
    assert text.startswith("서버가 작업 요청의 n_epochs 값을 거절했습니다: " + said)
    assert "1~50" in text and "2027-01-06" not in text
