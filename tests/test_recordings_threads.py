"""기록과 재생을 여러 스레드가 함께 쓸 때 (노트북이 질문을 한꺼번에 보낼 때): 재생은 요청마다 기록된 응답을
기록된 순서대로 한 번씩, 기록은 쌍마다 온전히 (파일이 깨지지 않고, 요청과 응답이 뒤섞이지 않고)."""
import collections
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pytest

from helpers.recordings import RecordingTransport, ReplayMissError, ReplayTransport, read_recording

BASE = "https://api.openai.com/v1"
THREADS = 16
POLLS = 8  # 스레드마다 같은 작업을 묻는 횟수


def chat_request(question):
    return {"method": "POST", "path": "/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": question}]}}


def chat_reply(text):
    return {"status": 200, "content_type": "application/json",
            "json": {"id": f"chatcmpl-{text}", "object": "chat.completion", "created": 1, "model": "m",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}]}}


def job_reply(step):
    return {"status": 200, "content_type": "application/json",
            "json": {"id": "ftjob-1", "object": "fine_tuning.job", "created_at": 1, "model": "m", "status": "running",
                     "training_file": "file-1", "hyperparameters": {"n_epochs": 1}, "organization_id": "org",
                     "result_files": [], "seed": 1, "trained_tokens": step, "fine_tuned_model": None,
                     "finished_at": None, "error": None, "validation_file": None}}


@pytest.fixture
def recording(tmp_path):
    """질문 i 를 두 번 물어 두 답(i-1, i-2)을 받았고, 같은 작업을 THREADS×POLLS 번 물어 단계 1, 2, … 를 받은 기록.

    요청들은 섞여 있습니다: 재생이 지켜야 하는 것은 같은 요청의 응답끼리의 순서뿐입니다.
    """
    requests = [chat_request(f"질문 {i}") for i in range(THREADS) for _ in (1, 2)]
    requests += [{"method": "GET", "path": "/fine_tuning/jobs/ftjob-1"}] * (THREADS * POLLS)
    random.Random(0).shuffle(requests)
    seen = collections.Counter()
    interactions = []
    for request in requests:
        key = json.dumps(request, sort_keys=True)
        seen[key] += 1
        if request["method"] == "POST":
            question = request["body"]["messages"][0]["content"]
            response = chat_reply(f"{question.removeprefix('질문 ')}-{seen[key]}")
        else:
            response = job_reply(seen[key])
        interactions.append({"request": request, "response": response})
    path = tmp_path / "threads.json"
    header = {"source": "openai", "recorded_on": "2026-11-21", "sdk": "openai 3"}
    path.write_text(json.dumps({"header": header, "interactions": interactions}, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def switch_threads_often():
    """Python 이 스레드를 아주 자주 바꾸게 해서, 잠금 없이 읽고 쓰는 곳이 있으면 실제로 부딪치게 합니다."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def replay_client(path):
    transport = ReplayTransport(path)
    return openai.OpenAI(api_key="x", base_url=transport.BASE_URL, max_retries=0,
                         http_client=openai.DefaultHttpxClient(transport=transport))


def ask(client, question):
    return client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}])


@pytest.mark.parametrize("round_", range(3))
def test_replay_answers_concurrent_requests_each_once_in_recorded_order(recording, round_):
    client = replay_client(recording)
    start = threading.Barrier(THREADS)

    def one_learner(i):
        start.wait()  # 모두 한꺼번에
        first, second = ask(client, f"질문 {i}"), ask(client, f"질문 {i}")
        steps = [client.fine_tuning.jobs.retrieve("ftjob-1").trained_tokens for _ in range(POLLS)]
        return (first.choices[0].message.content, second.choices[0].message.content), steps

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(one_learner, range(THREADS)))
    assert [pair for pair, _ in answers] == [(f"{i}-1", f"{i}-2") for i in range(THREADS)]  # 같은 결과, 매번
    for _, steps in answers:
        assert steps == sorted(steps)  # 한 스레드가 본 작업 상태는 기록된 순서대로
    everything = sorted(step for _, steps in answers for step in steps)
    assert everything == list(range(1, THREADS * POLLS + 1))  # 같은 요청의 응답은 빠짐도 겹침도 없이 한 번씩
    with pytest.raises(ReplayMissError, match=f"{THREADS * POLLS}번 있고"):  # 다 쓰면 지어내지 않고 멈춤
        client.fine_tuning.jobs.retrieve("ftjob-1")
    with pytest.raises(ReplayMissError, match="2번 있고"):
        ask(client, "질문 0")


def test_recording_concurrent_requests_keeps_every_pair_whole(tmp_path):
    path = tmp_path / "threads.json"
    delays = random.Random(1)

    def api(request):
        time.sleep(delays.random() / 200)  # 응답이 뒤섞여 돌아오도록
        if request.url.path.endswith("/models/missing"):
            return httpx2.Response(404, json={"error": {"message": "The model `missing` does not exist"}})
        question = json.loads(request.content)["messages"][0]["content"]
        return httpx2.Response(200, json=chat_reply(f"답: {question}")["json"])

    transport = RecordingTransport(httpx2.MockTransport(api), path, BASE, "시험", "threads")
    client = openai.OpenAI(api_key="sk-test", base_url=BASE, max_retries=0,
                           http_client=openai.DefaultHttpxClient(transport=transport))
    start = threading.Barrier(THREADS)

    def one_learner(i):
        start.wait()
        if i % 4 == 0:  # 실패한 응답도 섞여서 (처음 응답이 실패여도 기록은 첫 성공에 자리를 잡음)
            with pytest.raises(openai.NotFoundError):
                client.models.retrieve("missing")
        return [ask(client, f"질문 {i}-{n}").choices[0].message.content for n in range(3)]

    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(one_learner, range(THREADS)))
    assert answers == [[f"답: 질문 {i}-{n}" for n in range(3)] for i in range(THREADS)]

    recorded = read_recording(path)  # 온전한 JSON, 모양도 맞음
    assert not path.with_name(path.name + ".tmp").exists()
    chats = [i for i in recorded["interactions"] if i["request"]["path"] == "/chat/completions"]
    pairs = {i["request"]["body"]["messages"][0]["content"]: i["response"]["json"]["choices"][0]["message"]["content"]
             for i in chats}
    assert len(chats) == len(pairs) == 3 * THREADS  # 빠지거나 겹친 쌍 없음
    assert all(answer == f"답: {question}" for question, answer in pairs.items())  # 요청과 응답이 제짝
    assert sum(i["response"]["status"] == 404 for i in recorded["interactions"]) == THREADS // 4
    assert recorded["header"]["source"] == "openai"

    replayed = replay_client(path)  # 그리고 그 기록으로 재생하면 같은 답
    with ThreadPoolExecutor(THREADS) as pool:
        again = list(pool.map(lambda i: [ask(replayed, f"질문 {i}-{n}").choices[0].message.content for n in range(3)],
                              range(THREADS)))
    assert again == answers
