"""API 오류를 한국어로: 무슨 일이 있었고 다음에 무엇을 하면 되는지. 주피터에서는 긴 traceback 대신 이 설명 한 줄."""
from __future__ import annotations

import json
import sys

import openai

from helpers import local, modes
from helpers.errors import CourseError
from helpers.live import seconds_in_force
from helpers.scrub import Scrubber

WIND_DOWN = ("OpenAI는 셀프서비스 미세 조정을 닫는 중입니다: 2026-05-07부터 미세 조정을 해 본 적 없는 조직, "
             "2026-07-02부터 최근에 미세 조정 모델을 쓰지 않은 조직은 새 작업을 만들 수 없고, 2027-01-06부터는 "
             "아무도 만들 수 없습니다.")


def explain_api_error(err: Exception) -> CourseError:
    """OpenAI API 오류를 한국어 설명으로 바꿉니다. 설정된 키, 조직, 프로젝트 값은 모양과 상관없이 지웁니다.

    노트북에서는 `except openai.APIError as err: raise course.explain_api_error(err) from None`.
    """
    if isinstance(err, CourseError):
        return err
    said = getattr(err, "message", str(err))
    status = getattr(err, "status_code", None)
    request = getattr(err, "request", None)
    creating_job = (request is not None and request.method == "POST"
                    and request.url.path.rstrip("/").endswith("/fine_tuning/jobs"))
    replay = modes.replay_advice()
    refused_field = _refused_field(err) if creating_job and status in (400, 403, 404) else None
    if isinstance(err, openai.APITimeoutError):
        text = (f"시간 초과: 서버가 {seconds_in_force(request)}초 안에 답하지 않았습니다 (다시 보내도 마찬가지). 서버가 바쁘거나 "
                f"멈춘 것 같습니다. 잠시 뒤 같은 셀을 다시 실행하세요. {replay}")
    elif isinstance(err, openai.APIConnectionError):
        text = f"API 서버에 연결하지 못했습니다 (네트워크, 방화벽, OPENAI_BASE_URL 을 확인하세요). {replay}"
    elif status == 401:
        text = f"API 키가 거부되었습니다. 키를 다시 복사해 .env 나 환경 변수에 넣었는지 확인하세요. {replay}"
    elif refused_field is not None:
        what = f"의 {refused_field} 값" if refused_field else ""
        text = (f"서버가 작업 요청{what}을 거절했습니다: {said}\n  {_what_to_change(refused_field)}"
                f"{_uploaded_files(request)}")
        status = None  # 서버의 말은 이미 첫 줄에 있음
    elif creating_job and status in (400, 403, 404):
        text = (f"OpenAI가 이 조직의 새 미세 조정 작업을 받지 않았습니다. {WIND_DOWN} 기본 모델 이름이 틀렸을 수도 "
                f"있습니다 (BASE_MODEL 확인). 여러분의 잘못이 아닙니다 — {replay}{_uploaded_files(request)}")
    elif creating_job and status is not None and status >= 500:
        text = ("작업을 만드는 요청에 서버 오류가 났습니다. 작업이 만들어졌을 수도 있어, 두 번 만들어지고 요금이 들지 "
                "않도록 다시 보내지 않았습니다. client.fine_tuning.jobs.list(limit=3) 로 확인한 뒤 없을 때만 다시 실행하세요.")
    elif status == 403:
        text = f"이 키(조직/프로젝트)에는 이 기능을 쓸 권한이 없습니다. {replay}"
    elif status == 404:
        text = ("요청한 모델이나 파일을 찾을 수 없습니다. 이름을 확인하세요. 날짜가 붙은 스냅샷(gpt-4o-mini, gpt-4.1 계열)과 "
                f"그 미세 조정 모델은 2027-01-14에 종료됩니다. {replay}")
    elif status == 429:
        text = f"요청 한도나 사용 한도(크레딧)를 넘었습니다. 잠시 뒤 다시 하거나 결제/한도 설정을 확인하세요. {replay}"
    elif status is not None and status >= 500:
        text = "OpenAI 서버 쪽 오류입니다. 잠시 뒤 같은 셀을 다시 실행하세요."
    else:
        text = f"API가 요청을 받아들이지 않았습니다. {replay}"
    if status is not None:  # 서버가 답했을 때만 그 내용을 덧붙입니다 (거절한 필드를 말한 답은 이미 첫 줄에)
        text += f"\n  (서버가 보낸 내용, HTTP {status}: {said})"
    return CourseError(Scrubber().text(text))


# 작업 요청의 필드 → 무엇으로 바꾸면 되는지. 노트북의 parameters 셀에 있는 이름으로 말합니다.
FIELD_ADVICE = {
    "n_epochs": 'n_epochs 는 1~50 의 정수 또는 "auto" 여야 합니다',
    "batch_size": 'batch_size 는 1 이상의 정수 또는 "auto" 여야 합니다',
    "learning_rate_multiplier": 'learning_rate_multiplier 는 0 보다 큰 수 또는 "auto" 여야 합니다',
    "model": 'BASE_MODEL 을 client.models.list() 에 있는 이름이나 "auto" 로 바꾸세요',
    "suffix": "SUFFIX 를 더 짧게 바꾸세요",
    "training_file": "학습 데이터(JSONL)를 고쳐 다시 올리세요 (chat_data.check_chat_file 로 먼저 점검)",
}


def _refused_field(err) -> str | None:
    """작업 요청을 거절한 까닭인 요청의 필드(하이퍼파라미터, 모델 이름 등). 요청 탓이지만 필드를 모르면 "",
    OpenAI 의 미세 조정 종료일 수 있으면 None.

    종료로 거절된 요청은 어느 필드도 탓하지 않습니다. 이 과정의 로컬 서버는 닫히지 않으므로 그 서버의 거절은
    언제나 요청 탓입니다.
    """
    param = getattr(err, "param", None)
    said = getattr(err, "message", "")
    named = next((name for name in ("n_epochs", "batch_size", "learning_rate_multiplier")
                  if name in (param or "") or name in said), None)
    if getattr(err, "code", None) == "model_not_found":
        param = "model"
    response = getattr(err, "response", None)
    from_local_server = response is not None and local.SERVER_HEADER in response.headers
    return named or param or ("" if from_local_server else None)


def _what_to_change(field: str) -> str:
    advice = next((text for name, text in FIELD_ADVICE.items() if field.endswith(name)), None)
    if advice is None:
        return f"parameters 셀에서 {field or '요청 내용'} 를 고친 뒤 이 셀을 다시 실행하세요."
    return f"{advice}. parameters 셀(예: LOCAL_HYPERPARAMETERS, BASE_MODEL)에서 고친 뒤 이 셀을 다시 실행하세요."


def _uploaded_files(request) -> str:
    """거절된 작업 요청이 가리키던, 이미 올라가 있는 파일들과 지우는 한 줄."""
    try:
        body = json.loads(request.content)
    except (ValueError, TypeError):
        return ""
    files = [body.get(k) for k in ("training_file", "validation_file") if isinstance(body, dict) and body.get(k)]
    if not files:
        return ""
    deletes = "; ".join(f'client.files.delete("{f}")' for f in files)
    return (f"\n  작업은 만들어지지 않았지만, 앞 셀에서 올린 파일 {', '.join(files)} 은 서버에 남아 있습니다. "
            f"지우려면: {deletes}")


def show_course_errors_briefly() -> None:
    """주피터 안에서는 과정의 오류와 API 오류를 긴 traceback 대신 한국어 설명 한 줄로 보여 줍니다.

    셀은 여전히 오류로 멈추고, 설명은 오류 출력(ename, evalue)에 들어가므로 papermill 을 터미널에서 돌려도
    그 설명이 터미널에 보입니다.
    """
    shell = modes.jupyter_shell()
    if shell is None:
        return

    def show(shell, etype, evalue, tb, tb_offset=None):
        explained = Scrubber().text(str(explain_api_error(evalue)))
        line = f"⚠ {etype.__name__}: {explained}"
        if hasattr(shell, "_showtraceback"):  # ipykernel 이 오류 출력을 보내는 자리 (IPython 의 오랜 내부 함수)
            shell._showtraceback(etype, explained, [line])
        else:
            print(line, file=sys.stderr)

    shell.set_custom_exc((openai.OpenAIError, CourseError), show)

