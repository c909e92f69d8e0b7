"""실제 API 에 보내는 전송(live, record 모드): 교실에 맞는 시간 제한, 두 번 만들지 않기, 이상한 200 응답 설명,
그리고 이 노트북이 만든 것을 장부(cleanup.py)에 적기."""
from __future__ import annotations

import json

import httpx2

from helpers import cleanup
from helpers.errors import CourseAPIError

TIMEOUT_SECONDS = 60  # 한 요청이 답을 기다리는 최대 시간 (SDK 기본 600초): 셀이 말없이 30분 멈춰 있지 않도록
CONNECT_TIMEOUT_SECONDS = 10  # 서버에 닿는 데 걸리는 최대 시간
MAX_RETRIES = 1  # 실패하면 한 번만 다시 보냄 (SDK 기본 2번). 만드는 요청은 아래 이유로 다시 보내지 않음
# 보낸 뒤에 끊겨서, 서버가 받았는지 알 수 없는 실패
UNCERTAIN = (httpx2.ReadTimeout, httpx2.WriteTimeout, httpx2.ReadError, httpx2.RemoteProtocolError)


def timeout() -> httpx2.Timeout:
    return httpx2.Timeout(TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)


def seconds_in_force(request: httpx2.Request) -> str:
    """이 요청에 걸린 응답 시간 제한 (원격 60초, 이 컴퓨터의 서버 600초, 또는 바꾼 값), 예: "60", "0.5"."""
    read = (request.extensions.get("timeout") or {}).get("read")
    return "?" if read is None else f"{read:g}"


class LiveTransport(httpx2.BaseTransport):
    """진짜 전송(inner) 위의 얇은 층.

    파일 업로드와 작업 생성(만드는 POST)은 서버가 받았는지 모를 실패(5xx, 응답 전 시간 초과)에서 다시 보내지
    않습니다: 이미 만들어진 작업이 두세 번 만들어지고 요금이 들 수 있기 때문입니다 (OpenAI 의 이 주소들은
    Idempotency-Key 를 약속하지 않으므로 키를 보내는 대신 다시 보내지 않기를 고름).
    """

    def __init__(self, inner: httpx2.BaseTransport, base_url: str):
        self.inner, self.base_url = inner, base_url

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        creating = request.method == "POST" and request.url.path.rstrip("/").endswith(cleanup.CREATING_PATHS)
        try:
            response = self.inner.handle_request(request)
        except UNCERTAIN as err:
            if not creating:
                raise  # SDK 가 다시 보내고, 끝내 안 되면 APITimeoutError
            what = f"{type(err).__name__}: {seconds_in_force(request)}초 안에 답이 없었거나 연결이 끊겼습니다"
            raise CourseAPIError(_uncertain_creation(request, what)) from err
        content = response.read()
        response.close()
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")}
        status = response.status_code
        if creating and (status >= 500 or status == 408):
            headers["x-should-retry"] = "false"  # SDK 가 이 헤더를 따릅니다
        body = _checked_body(request, status, headers.get("content-type", ""), content)
        cleanup.note(self.base_url, request.method, request.url.path, status, body)
        return httpx2.Response(status, headers=headers, content=content, request=request)


def _checked_body(request: httpx2.Request, status: int, content_type: str, content: bytes):
    """성공 응답이 API 응답답지 않으면(HTML 페이지, 깨진 JSON) 한국어로 설명합니다. JSON 이면 그 값을 돌려줍니다."""
    where = f"{request.method} {request.url.path}"
    if 200 <= status < 300 and content_type.startswith("text/html"):
        raise CourseAPIError(
            f"{where} 에 API 응답(JSON) 대신 웹 페이지(HTML)가 왔습니다. 학교·회사 네트워크의 로그인 페이지나 프록시가 "
            "가로챈 것 같습니다: 브라우저로 아무 사이트나 열어 로그인한 뒤 다시 실행하거나, OPENAI_BASE_URL 이 API 주소"
            "(…/v1)인지 확인하세요.")
    if not content_type.startswith("application/json"):
        return None
    try:
        return json.loads(content)
    except ValueError:
        if 200 <= status < 300:
            raise CourseAPIError(
                f"{where} 의 응답이 JSON 이라고 했지만 읽을 수 없었습니다 ({len(content)} bytes, 중간에 잘렸거나 "
                "서버/프록시 오류). 잠시 뒤 같은 셀을 다시 실행하고, 되풀이되면 OPENAI_BASE_URL 의 서버를 확인하세요.") from None
        return None


def _uncertain_creation(request: httpx2.Request, what: str) -> str:
    listing = ("client.fine_tuning.jobs.list(limit=3)" if "fine_tuning" in request.url.path
               else 'client.files.list(purpose="fine-tune")')
    return (f"{request.method} {request.url.path} 를 보냈지만 결과를 모릅니다 ({what}). 서버가 이미 만들었을 수 있어, "
            f"두 번 만들어지고 요금이 들지 않도록 다시 보내지 않았습니다. {listing} 로 만들어졌는지 확인한 뒤, "
            "없을 때만 같은 셀을 다시 실행하세요.")
