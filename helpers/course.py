"""모든 노트북이 쓰는 OpenAI 클라이언트와 네 가지 모드 (live / record / replay / local).

노트북은 `client = course.connect(MODE, "03_hobanse_finetune")` 한 줄로 클라이언트를 얻고,
그 뒤로는 평범한 `openai.OpenAI` 클라이언트처럼 씁니다. 모드에 따라 달라지는 것은
SDK가 공식으로 열어 둔 `http_client=` 자리에 끼우는 전송(transport) 하나뿐입니다.

- live   : 여러분의 키로 실제 API에 요청합니다.
- record : live와 같지만, 요청/응답 한 쌍이 오갈 때마다 data/recordings/<노트북>.json 에
           바로 덧붙여 씁니다 (키, 조직/프로젝트 ID 같은 계정 정보는 지운 뒤에).
- replay : 키도 네트워크도 쓰지 않고 기록 파일에서 응답을 꺼내 줍니다.
- local  : 키도 네트워크도 없이, 이 컴퓨터의 로컬 미세 조정 서버(오픈 웨이트 모델, LoRA 학습)에 요청합니다.
- auto   : 키가 있으면 live, 없으면 replay (기본값).

한 가지씩 열어 볼 수 있게 나누어 두었습니다:
  modes.py (모드와 키) · scrub.py (비밀 지우기) · recordings.py (기록과 재생) · live.py (실제 API 전송) ·
  explain.py (오류 설명) · cleanup.py (내가 만든 것만 지우기) · paths.py (저장소 안의 자리) · local.py (로컬 서버)
"""
from __future__ import annotations

import datetime as dt
import time
import weakref

import httpx2
import openai

from helpers import cleanup, live, local, modes, paths
from helpers.errors import CourseError
from helpers.explain import explain_api_error, show_course_errors_briefly
from helpers.modes import MODE_ENV, resolve_mode
from helpers.recordings import RecordingTransport, ReplayMissError, ReplayTransport, follow_cell_reruns, read_recording
from helpers.scrub import Scrubber, remember_secrets

__all__ = ["connect", "mode_of", "pause", "utc", "recording_header", "base_model", "fine_tuned_model", "delete_if_mine",
           "CourseError", "ReplayMissError", "explain_api_error", "resolve_mode", "MODE_ENV", "Scrubber"]

_modes: "weakref.WeakKeyDictionary[openai.OpenAI, str]" = weakref.WeakKeyDictionary()
# OpenAI 에서 미세 조정할 수 있는 스냅샷: 새 작업은 2027-01-06 전까지, 모델은 2027-01-14 에 종료
OPENAI_BASE_MODEL = "gpt-4.1-mini-2025-04-14"
LOCAL_POLL_SECONDS = 2


def connect(mode: str = "auto", recording: str = "scratch", dataset: str = "") -> openai.OpenAI:
    """MODE에 맞는 OpenAI 클라이언트를 만들고, 어떤 모드인지 한 줄로 알려 줍니다.

    recording: 기록 파일 이름 (data/recordings/<recording>.json), 보통 노트북 이름.
    dataset:   record 모드에서 기록 머리말에 남길 데이터 설명.
    """
    show_course_errors_briefly()  # 먼저: connect 자신의 오류(키 없음, 기록 없음)도 짧게 보이도록
    settings = modes.settings()
    remember_secrets(*(settings[name] for name in ("OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")))
    resolved = resolve_mode(mode)
    path = paths.RECORDINGS_DIR / f"{recording}.json"
    if resolved == "replay":
        transport = ReplayTransport(path)
        follow_cell_reruns(transport)  # 셀을 다시 실행하면 그 셀의 기록된 응답을 다시
        client = openai.OpenAI(api_key="replay-mode-no-key", organization=None, project=None,
                               base_url=transport.BASE_URL, max_retries=0,
                               http_client=openai.DefaultHttpxClient(transport=transport))
        print(transport.describe())
    elif resolved == "local":
        server = local.ensure_server()
        transport = live.LiveTransport(httpx2.HTTPTransport(), server.url)
        client = openai.OpenAI(api_key="local-server-needs-no-key", organization=None, project=None,
                               base_url=server.url, timeout=local.TIMEOUT, max_retries=0,
                               http_client=openai.DefaultHttpxClient(transport=transport))
        print(f"▶ 로컬(local) 모드: 이 컴퓨터의 오픈 웨이트 모델 {server.model} (장치: {server.device}) — 학습도 답도 "
              "이 컴퓨터에서 합니다. 키와 네트워크는 쓰지 않습니다.")
    else:
        key = settings.get("OPENAI_API_KEY") or modes.ask_for_key()
        remember_secrets(key)
        base_url = modes.base_url(settings)
        remember_secrets(httpx2.URL(base_url).password)  # 주소에 든 비밀번호도 어디에도 남기지 않음
        transport = live.LiveTransport(httpx2.HTTPTransport(), base_url)
        if resolved == "record":
            transport = RecordingTransport(transport, path, base_url, dataset, recording)
        client = openai.OpenAI(api_key=key, organization=settings.get("OPENAI_ORG_ID"),
                               project=settings.get("OPENAI_PROJECT_ID"), base_url=base_url,
                               timeout=local.TIMEOUT if local.computes_for_minutes(base_url) else live.timeout(),
                               max_retries=live.MAX_RETRIES,
                               http_client=openai.DefaultHttpxClient(transport=transport))
        where = modes.where(base_url)
        if resolved == "live":
            print(f"▶ 실시간(live) 모드: {where} 에 여러분의 키로 요청합니다 (키는 출력하거나 저장하지 않습니다).")
        else:
            print(f"● 기록(record) 모드: {where} 의 응답을 {paths.shown(path)} 에 기록합니다 (키·계정 ID는 지웁니다).")
    _modes[client] = resolved
    return client


def mode_of(client: openai.OpenAI) -> str:
    """connect() 가 이 클라이언트에 정한 모드: "live", "record", "replay" 또는 "local"."""
    return _modes.get(client, "live")


def pause(client: openai.OpenAI, seconds: float) -> None:
    """작업 상태를 다시 묻기 전에 기다립니다. 재생 모드는 기다릴 이유가 없고, 로컬 모드는 이 컴퓨터의 작업이라
    묻는 데 돈이 들지 않으므로 2초 넘게 기다리지 않습니다."""
    mode = mode_of(client)
    if mode != "replay":
        time.sleep(min(seconds, LOCAL_POLL_SECONDS) if mode == "local" else seconds)


def base_model(client: openai.OpenAI, requested: str = "auto", openai_default: str = OPENAI_BASE_MODEL) -> tuple[str, bool]:
    """BASE_MODEL 을 실제 모델 이름으로: (이름, 로컬 오픈 웨이트 모델인지).

    "auto" 는 서버가 정합니다: 이 과정의 로컬 서버면 그 기본 모델(예: gemma-3-270m), OpenAI 면 미세 조정할 수 있는
    스냅샷 openai_default. 모델 목록을 API 로 물어서 정하므로 재생 모드에서도 기록한 서버의 답을 그대로 따릅니다.
    """
    if requested != "auto":
        return requested, client.models.retrieve(requested).owned_by == local.LOCAL_OWNER
    local_models = [m.id for m in client.models.list() if m.owned_by == local.LOCAL_OWNER and not m.id.startswith("ft:")]
    return (local_models[0], True) if local_models else (openai_default, False)


def utc(timestamp: int | None) -> str:
    """유닉스 시각을 'YYYY-MM-DD HH:MM UTC' 로. 어느 컴퓨터에서나 같은 출력을 내려고 UTC로 고정합니다."""
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def recording_header(recording: str) -> dict:
    """data/recordings/<recording>.json 의 머리말 (출처, 날짜, SDK, 데이터). 기록이 없으면 빈 dict.

    재생 모드에서는 기록할 때와 똑같은 데이터를 써야 요청이 기록과 맞으므로, 노트북은 이 머리말의
    dataset 으로 어느 데이터를 쓸지 정합니다.
    """
    path = paths.RECORDINGS_DIR / f"{recording}.json"
    return read_recording(path)["header"] if path.is_file() else {}


def fine_tuned_model(client: openai.OpenAI, suffix: str) -> str | None:
    """이 계정에서 접미사가 suffix 인 미세 조정 작업 중 가장 최근에 성공한 것의 모델 이름.

    앞 노트북(03, 07)이 만든 모델을 다음 노트북이 이름을 받아 적지 않고 찾습니다. 같은 조직의 동료도 같은
    접미사를 쓸 수 있으므로 여러분의 노트북이 만든 모델을 먼저 고릅니다. API 로 찾으므로 live, record, replay
    어디서나 같은 셀이 돕니다. 모델이 없거나 이미 지워졌으면 이유를 출력하고 None 을 돌려줍니다.
    """
    mine = cleanup.created_here(client, mode_of(client))
    candidates = [job.fine_tuned_model for job in client.fine_tuning.jobs.list(limit=50)  # 최근 작업부터
                  if job.status == "succeeded" and job.fine_tuned_model and f":{suffix}:" in job.fine_tuned_model]
    if not candidates:
        print(f'접미사가 "{suffix}" 인, 성공한 미세 조정 작업이 이 계정에 없습니다.')
        return None
    model = next((m for m in candidates if m in mine), candidates[0])
    try:
        client.models.retrieve(model)
    except openai.NotFoundError:
        print(f"미세 조정 모델 {model} 은 이미 지워졌습니다 (앞 노트북의 CLEAN_UP = True).")
        return None
    if model not in mine:
        print(f"{model} 은 이 컴퓨터의 노트북이 만든 모델이 아닙니다 (같은 조직의 다른 사람 것일 수 있음). "
              "쓰기만 하고 지우지는 않습니다.")
    return model


def delete_if_mine(client: openai.OpenAI, model: str) -> bool:
    """미세 조정 모델과, 그 모델을 만든 작업의 체크포인트 모델과 결과 파일을 지웁니다. 단, 이 학습자의 노트북(03, 07)이
    만든 모델일 때만.

    직접 적어 넣은 이름이나 같은 접미사의 동료 모델은 지우지 않고, 정말 지우려면 실행할 한 줄을 알려 줍니다.
    2027-01-06 이후에는 지운 미세 조정 모델을 다시 만들 수 없기 때문입니다.
    """
    mine = cleanup.created_here(client, mode_of(client))
    if model not in mine:
        print(f"지우지 않습니다: {model} 은 이 컴퓨터의 노트북이 만든 모델이 아닙니다 (직접 적은 이름이거나 다른 사람의 "
              f'모델일 수 있음). 여러분의 것이 확실하면: client.models.delete("{model}")')
        return False
    jobs = [job for job in client.fine_tuning.jobs.list(limit=50) if job.fine_tuned_model == model and job.id in mine]
    deleted = client.models.delete(model).deleted
    print("모델 삭제:", model, deleted)
    for job in jobs:
        cleanup.delete_job_outputs(client, job)
    return deleted
