"""미세 조정 작업을 끝날 때까지 따라가기 (03, 07): 상태가 바뀔 때 한 줄, 학습 중에는 진행 막대 하나.

진행은 작업의 `metrics` 이벤트에서 읽습니다. OpenAI 와 로컬 서버 모두 학습 단계마다 이벤트 하나를 남기고, 그
`data` 에 단계(step), 전체 단계 수(total_steps), 그 단계의 학습 손실(train_loss)이 들어 있습니다. 상태와 이벤트를
API 로 물으므로 재생 모드에서도 기록된 응답이 같은 순서로 돌아와, 기록할 때 본 상태와 진행이 다시 보입니다.

막대는 보통 출력(sys.stdout)에 쓰는 tqdm 글자 막대입니다: 주피터에서도 터미널에서도 한 줄이 제자리에서 바뀌고, 걸린
시간과 속도는 빼서 같은 진행이면 언제나 같은 글자가 나옵니다. 재생 모드는 묻는 사이에 기다리지 않아 중간 모습은
보일 틈이 없으므로, 막대를 마지막 모습 한 줄로만 찍습니다 (저장된 노트북 출력이 짧고 늘 같도록).
"""
from __future__ import annotations

import sys

import openai
from tqdm import tqdm

from helpers import course

ENDED = ("succeeded", "failed", "cancelled")
# 마지막 metrics 이벤트 뒤에 체크포인트, 마침, 모델 생성 같은 이벤트가 몇 개 더 올 수 있어 넉넉히
EVENTS_PER_POLL = 20
BAR_FORMAT = "학습 {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} 단계{postfix}"


def latest_metrics(client: openai.OpenAI, job_id: str) -> dict | None:
    """가장 최근 metrics 이벤트의 data ({"step", "total_steps", "train_loss", …}). 아직 없으면 None."""
    for event in client.fine_tuning.jobs.list_events(job_id, limit=EVENTS_PER_POLL):  # 최신 것부터
        if event.type == "metrics" and isinstance(event.data, dict) and "total_steps" in event.data:
            return event.data
    return None


def _loss(metrics: dict) -> str:
    return f"학습 손실 {metrics['train_loss']:.2f}"


def _show(bar: tqdm | None, metrics: dict) -> tqdm:
    """막대를 (처음이면 만들고) 이 단계로 옮깁니다. 단계가 그대로면 다시 그리지 않아 출력이 늘지 않습니다."""
    if bar is None:
        return tqdm(total=metrics["total_steps"], initial=metrics["step"], file=sys.stdout, bar_format=BAR_FORMAT,
                    ascii=False, mininterval=0, postfix=_loss(metrics))
    if metrics["step"] != bar.n:
        bar.n = metrics["step"]
        bar.set_postfix_str(_loss(metrics))  # 다시 그리기도 합니다
    return bar


def follow(client: openai.OpenAI, job_id: str, poll_seconds: float):
    """작업이 끝날 때까지 poll_seconds 마다 묻고, 끝난 작업(FineTuningJob)을 돌려줍니다.

    상태는 **물어서 본 것**만 찍습니다: 두 번 묻는 사이에 지나간 상태(예: 로컬 서버에서 금방 지나가는
    validating_files, queued)는 나오지 않습니다. 학습 중(running)과 끝난 뒤에는 진행 막대를 보여 줍니다.
    """
    moving = course.mode_of(client) != "replay"  # 재생은 기다리지 않으니 막대를 움직여 봐야 보이지 않습니다
    status, bar, metrics = None, None, None
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        ended = job.status in ENDED
        if job.status != status and not ended:
            print("상태:", job.status)
        if job.status == "running" or ended:
            metrics = latest_metrics(client, job_id) or metrics
            if metrics and moving:
                bar = _show(bar, metrics)
        if ended:
            if bar is not None:
                bar.close()  # 마지막 모습을 남기고 줄을 바꿉니다
            elif metrics:
                print(tqdm.format_meter(metrics["step"], metrics["total_steps"], 0, bar_format=BAR_FORMAT,
                                        postfix=_loss(metrics)))
            if job.status != status:
                print("상태:", job.status)
            return job
        status = job.status
        course.pause(client, poll_seconds)
