"""helpers/recordings.py 를 망가뜨리려는 시도들 (이슈 10의 1~7): 재시도, 실패한 기록 실행, 깨진 파일, 수의 모양,
기록보다 많은 질문, 커지는 파일, 쓰지 못한 기록."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai
import pytest

from helpers import recordings
from helpers.errors import CourseAPIError, CourseError
from helpers.recordings import RecordingFile, RecordingTransport, ReplayMissError, ReplayTransport, read_recording

BASE = "https://api.openai.com/v1"
ROOT = Path(__file__).resolve().parent.parent


def chat_reply(text="답"):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


def recorder(path, handler, max_retries=2):
    transport = RecordingTransport(httpx2.MockTransport(handler), path, BASE, "시험", "t")
    return openai.OpenAI(api_key="sk-test", base_url=BASE, max_retries=max_retries,
                         http_client=openai.DefaultHttpxClient(transport=transport))


def replayer(path):
    transport = ReplayTransport(path)
    return openai.OpenAI(api_key="x", base_url=transport.BASE_URL, max_retries=0,
                         http_client=openai.DefaultHttpxClient(transport=transport))


def ask(client, **kwargs):
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": "질문"}], **kwargs)


def good_api(request):
    if request.url.path.endswith("/files"):
        return httpx2.Response(200, json={"id": "file-new1", "object": "file", "bytes": 1, "created_at": 1,
                                          "filename": "a.jsonl", "purpose": "fine-tune", "status": "processed"})
    return httpx2.Response(200, json=chat_reply())


# ----------------------------------------------------------------------------- 1. 재시도


def test_a_failure_the_sdk_retried_is_not_replayed(tmp_path):
    path = tmp_path / "t.json"
    attempts = []

    def flaky(request):  # 처음엔 429 (바로 다시 해도 된다는 retry-after-ms: 0), 그다음 성공
        attempts.append(request.headers.get("x-stainless-retry-count"))
        if len(attempts) == 1:
            return httpx2.Response(429, headers={"retry-after-ms": "0"}, json={"error": {"message": "slow down"}})
        return httpx2.Response(200, json=chat_reply("성공한 답"))

    assert ask(recorder(path, flaky)).choices[0].message.content == "성공한 답"
    assert attempts == ["0", "1"]
    assert ask(replayer(path)).choices[0].message.content == "성공한 답"  # 예전: RateLimitError


def test_a_final_failure_is_still_replayed_as_a_failure(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"header": {"source": "openai", "recorded_on": "2026-01-01", "sdk": "openai 3"},
                                "interactions": []}), encoding="utf-8")

    def down(request):
        return httpx2.Response(500, headers={"retry-after-ms": "0"}, json={"error": {"message": "down"}})

    client = recorder(path, good_api)
    ask(client)  # 성공 하나로 기록이 바뀐 뒤
    client._client._transport.inner = httpx2.MockTransport(down)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "다른 질문"}])
    with pytest.raises(openai.InternalServerError):  # 세 번 시도 모두 실패: 학습자가 본 것도 실패
        replayer(path).chat.completions.create(model="m", messages=[{"role": "user", "content": "다른 질문"}])


# ----------------------------------------------------------------------------- 2. 실패한 기록 실행


def finished_run(path):
    """오류 없이 끝난 기록 실행 하나 (프로세스가 끝날 때 하는 일을 바로)."""
    client = recorder(path, good_api)
    ask(client)
    client._client._transport.file.finish()


def test_a_record_run_that_only_failed_keeps_the_good_recording_and_its_previous(tmp_path):
    path = tmp_path / "t.json"
    finished_run(path)
    finished_run(path)  # 두 번째 좋은 기록: 첫 기록이 previous 로
    good, previous = path.read_bytes(), (tmp_path / "t.previous.json").read_bytes()

    def refused(request):
        return httpx2.Response(401, json={"error": {"message": "bad key"}})

    for _ in range(2):  # 실패한 실행 두 번
        with pytest.raises(openai.AuthenticationError):
            ask(recorder(path, refused))
    assert path.read_bytes() == good and (tmp_path / "t.previous.json").read_bytes() == previous
    assert ask(replayer(path)).choices[0].message.content == "답"
    assert json.loads((tmp_path / "t.json.tmp").read_text())["interactions"][0]["response"]["status"] == 401


def test_two_interrupted_record_runs_in_a_row_keep_the_good_recording_as_previous(tmp_path):
    path = tmp_path / "t.json"
    finished_run(path)
    good = path.read_bytes()
    assert json.loads(good)["header"]["complete"] is True
    for _ in range(2):  # 첫 응답 뒤에 멈춘(커널이 죽은) 실행 두 번: finish 가 불리지 않음
        ask(recorder(path, good_api))
        assert json.loads(path.read_bytes())["header"]["complete"] is False
        assert (tmp_path / "t.previous.json").read_bytes() == good  # 예전: 두 번째에 첫 실패 실행의 파일로
    assert "중간에 멈춘 기록 실행" in ReplayTransport(path).describe()
    finished_run(path)  # 다시 끝까지 마친 실행 뒤의 실행은, 그 마친 기록을 직전 기록으로
    finished = path.read_bytes()
    ask(recorder(path, good_api))
    assert (tmp_path / "t.previous.json").read_bytes() == finished


def test_a_later_connect_that_records_nothing_does_not_stop_the_run_from_finishing(tmp_path):
    path = tmp_path / "t.json"
    ask(recorder(path, good_api))
    recorder(path, good_api)  # connect 셀을 다시 실행했지만 아무것도 묻지 않음
    recordings._finish_recordings()  # 커널이 끝날 때
    assert json.loads(path.read_text(encoding="utf-8"))["header"]["complete"] is True


RUN = """
import sys, httpx2, openai
sys.path.insert(0, {root!r})
from helpers.recordings import RecordingTransport
reply = {{"id": "c", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{{"index": 0, "finish_reason": "stop", "message": {{"role": "assistant", "content": "x"}}}}]}}
transport = RecordingTransport(httpx2.MockTransport(lambda r: httpx2.Response(200, json=reply)), {path!r},
                               "https://api.openai.com/v1", "", "t")
client = openai.OpenAI(api_key="sk-x", http_client=openai.DefaultHttpxClient(transport=transport))
client.chat.completions.create(model="m", messages=[{{"role": "user", "content": "q"}}])
{end}
"""


@pytest.mark.parametrize("end, complete", [("", True),
                                           ("raise RuntimeError('a cell failed')", False)])
def test_a_record_run_is_complete_only_when_its_process_ends_without_an_error(tmp_path, end, complete):
    path = tmp_path / "t.json"
    subprocess.run([sys.executable, "-c", RUN.format(root=str(ROOT), path=str(path), end=end)],
                   capture_output=True, timeout=120)
    assert json.loads(path.read_text(encoding="utf-8"))["header"]["complete"] is complete


def test_a_cell_that_fails_in_jupyter_leaves_the_record_run_unfinished(tmp_path):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.user_ns.update(recorder=recorder, ask=ask, good_api=good_api, path=tmp_path / "t.json")
        shell.run_cell("client = recorder(path, good_api)\nask(client)")
        shell.run_cell("1 / 0")  # 셀 하나가 오류로 멈춤
        file = shell.user_ns["client"]._client._transport.file
        assert file.failed
    finally:
        InteractiveShell.clear_instance()


# ----------------------------------------------------------------------------- 3. 깨진 기록


@pytest.mark.parametrize("content, words", [
    (b'{"header": {"source": "openai", "recorded_on": "2026-01-01", "sdk": "openai 3"}, "interactions": [{"req',
     "JSON 이 깨졌습니다"),
    (b'{"interactions": []}', "머리말"),
    (b'[1, 2]', "JSON 객체"),
    ('{"header": "호반스"}'.encode("cp949"), "UTF-8"),
    (b'{"header": {"source": "openai", "recorded_on": "2026-01-01", "sdk": "openai 3"}, "interactions": [{}]}',
     "1번째 요청/응답"),
])
def test_a_broken_recording_is_one_korean_error_naming_the_file_and_the_fix(tmp_path, content, words):
    path = tmp_path / "03_broken.json"
    path.write_bytes(content)
    for load in (ReplayTransport, read_recording):
        with pytest.raises(CourseError) as caught:
            load(path)
        message = str(caught.value)
        assert words in message and "03_broken.json" in message
        assert "git checkout -- " in message and "tests/rerecord.py" in message


# ----------------------------------------------------------------------------- 4. 수의 모양


def test_an_int_matches_a_recorded_float_and_a_real_difference_is_named(tmp_path):
    path = tmp_path / "t.json"
    ask(recorder(path, good_api), temperature=1.0)
    assert ask(replayer(path), temperature=1).choices[0].message.content == "답"
    with pytest.raises(ReplayMissError) as caught:
        ask(replayer(path), temperature=0.5)
    assert "다른 부분: temperature" in str(caught.value) and "(순서)" not in str(caught.value)


# ----------------------------------------------------------------------------- 5. 기록보다 많은 질문


def test_replay_does_not_invent_answers_past_the_recording(tmp_path):
    path = tmp_path / "t.json"
    client = recorder(path, good_api)
    for _ in range(3):
        ask(client)
    replay = replayer(path)
    for _ in range(3):
        ask(replay)
    with pytest.raises(ReplayMissError) as caught:
        ask(replay)  # 네 번째: 예전에는 세 번째 답을 다시 줌
    assert "기록에 3번" in str(caught.value) and "4번째" in str(caught.value)


# ----------------------------------------------------------------------------- 6. 파일 크기와 상관없는 기록 비용


def interaction(i):
    return {"request": {"method": "POST", "path": "/chat/completions", "body": {"n": i, "text": "호반스 " * 40}},
            "response": {"status": 200, "content_type": "application/json", "json": chat_reply(f"답 {i}")}}


def test_appending_writes_only_the_new_interaction_and_keeps_valid_json(tmp_path, monkeypatch):
    file = RecordingFile(tmp_path / "t.json", {"source": "openai", "recorded_on": "2026-01-01", "sdk": "openai 3"})
    for i in range(3000):
        file.append(interaction(i), succeeded=True)
    written = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, *args):
            return self.f.seek(*args)

        def write(self, data):
            written.append(len(data))
            return self.f.write(data)

    monkeypatch.setattr(recordings, "open", lambda *a, **k: Spy(real_open(*a, **k)), raising=False)
    file.append(interaction(3000), succeeded=True)
    assert sum(written) < 2 * len(json.dumps(interaction(3000), ensure_ascii=False).encode())
    assert len(read_recording(tmp_path / "t.json")["interactions"]) == 3001


KILLED_WRITER = """
import sys, httpx2, openai
sys.path.insert(0, {root!r})
from helpers.recordings import RecordingTransport
reply = {{"id": "c", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{{"index": 0, "finish_reason": "stop", "message": {{"role": "assistant", "content": "x" * 2000}}}}]}}
transport = RecordingTransport(httpx2.MockTransport(lambda r: httpx2.Response(200, json=reply)), {path!r},
                               "https://api.openai.com/v1", "", "t")
client = openai.OpenAI(api_key="sk-x", http_client=openai.DefaultHttpxClient(transport=transport))
i = 0
while True:
    client.chat.completions.create(model="m", messages=[{{"role": "user", "content": str(i)}}])
    i += 1
    if i == 20:
        print("ready", flush=True)
"""


def test_a_recording_survives_sigkill_mid_run(tmp_path):
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("SIGKILL 이 없는 운영체제")
    path = tmp_path / "t.json"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER.format(root=str(ROOT), path=str(path))],
                              stdout=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"ready"
    time.sleep(0.3)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert len(read_recording(path)["interactions"]) >= 20


# ----------------------------------------------------------------------------- 7. 쓰지 못한 기록


def test_a_recording_that_cannot_be_written_still_shows_the_created_id(tmp_path):
    path = tmp_path / "t.json"
    path.mkdir()  # 같은 이름의 폴더: 기록을 그 자리로 옮길 수 없음
    client = recorder(path, good_api)
    with pytest.raises(CourseAPIError) as caught:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="fine-tune")
    message = str(caught.value)
    assert "file-new1" in message and 'client.files.delete("file-new1")' in message and "기록 파일" in message
