"""모든 노트북이 쓰는 OpenAI 클라이언트와 세 가지 모드 (live / record / replay).

노트북은 `client = course.connect(MODE, "03_hobanse_finetune")` 한 줄로 클라이언트를 얻고,
그 뒤로는 평범한 `openai.OpenAI` 클라이언트처럼 씁니다. 모드에 따라 달라지는 것은
SDK가 공식으로 열어 둔 `http_client=` 자리에 끼우는 전송(transport) 하나뿐입니다.

- live   : 여러분의 키로 실제 API에 요청합니다.
- record : live와 같지만, 요청/응답 한 쌍이 오갈 때마다 data/recordings/<노트북>.json 에
           바로 덧붙여 씁니다 (키, 조직/프로젝트 ID 같은 계정 정보는 지운 뒤에).
- replay : 키도 네트워크도 쓰지 않고 기록 파일에서 응답을 꺼내 줍니다.
- auto   : 키가 있으면 live, 없으면 replay (기본값).

환경 변수 COURSE_MODE 가 있으면 노트북의 MODE 보다 우선합니다 (테스트는 replay 로 고정).
vcrpy 대신 직접 만든 이유: vcrpy 는 전역으로 패치하고 카세트를 끝날 때 한 번에 써서,
커널이 죽으면 기록이 사라지고 노트북의 셀 단위 실행과 맞지 않기 때문입니다.
"""
from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import getpass
import hashlib
import json
import os
import re
import sys
import weakref
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import openai
from dotenv import dotenv_values, find_dotenv

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS_DIR = ROOT / "data" / "recordings"
MODE_ENV = "COURSE_MODE"
MODES = ("auto", "live", "record", "replay")
STANDIN_HEADER = "x-offline-stand-in"  # 로컬 대역 서버가 모든 응답에 붙이는 표시
RERECORD_HINT = "강사용으로 모든 기록을 한 번에 다시 만들려면: python tests/rerecord.py"

# 응답 내용에 영향을 주지 않는 요청 필드 — 재생할 때 비교에서 뺍니다.
IGNORED_BODY_FIELDS = {"user", "metadata", "store", "stream_options", "safety_identifier"}

_modes: "weakref.WeakKeyDictionary[openai.OpenAI, str]" = weakref.WeakKeyDictionary()


class CourseError(Exception):
    """학습자에게 무엇이 일어났고 무엇을 하면 되는지 한국어로 알려 주는 오류."""


class ReplayMissError(CourseError, openai.OpenAIError):
    """재생할 기록이 없는 요청. OpenAIError 라서 SDK가 재시도하거나 감싸지 않고 그대로 올립니다."""


# ----------------------------------------------------------------------------- 모드와 키


def connect(mode: str = "auto", recording: str = "scratch", dataset: str = "") -> openai.OpenAI:
    """MODE에 맞는 OpenAI 클라이언트를 만들고, 어떤 모드인지 한 줄로 알려 줍니다.

    recording: 기록 파일 이름 (data/recordings/<recording>.json), 보통 노트북 이름.
    dataset:   record 모드에서 기록 머리말에 남길 데이터 설명.
    """
    settings = _settings()
    resolved = resolve_mode(mode)

    path = RECORDINGS_DIR / f"{recording}.json"
    if resolved == "replay":
        transport = ReplayTransport(path)
        client = openai.OpenAI(
            api_key="replay-mode-no-key",
            organization=None,
            project=None,
            base_url=transport.BASE_URL,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=transport),
        )
        print(transport.describe())
    else:
        key = settings.get("OPENAI_API_KEY") or _ask_for_key()
        base_url = settings.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        http_client = None
        if resolved == "record":
            secrets = [key, settings.get("OPENAI_ORG_ID"), settings.get("OPENAI_PROJECT_ID")]
            transport = RecordingTransport(httpx2.HTTPTransport(), path, base_url, dataset, recording, secrets)
            http_client = openai.DefaultHttpxClient(transport=transport)
        client = openai.OpenAI(
            api_key=key,
            organization=settings.get("OPENAI_ORG_ID"),
            project=settings.get("OPENAI_PROJECT_ID"),
            base_url=base_url,
            http_client=http_client,
        )
        where = urlsplit(base_url).netloc
        if resolved == "live":
            print(f"▶ 실시간(live) 모드: {where} 에 여러분의 키로 요청합니다 (키는 출력하거나 저장하지 않습니다).")
        else:
            print(f"● 기록(record) 모드: {where} 의 응답을 {_shown(path)} 에 기록합니다 (키·계정 ID는 지웁니다).")
    _modes[client] = resolved
    _show_errors_in_korean()
    return client


def resolve_mode(mode: str = "auto") -> str:
    """connect() 가 고를 모드: COURSE_MODE 가 MODE 보다 우선, "auto" 는 키가 있으면 "live", 없으면 "replay"."""
    requested = os.environ.get(MODE_ENV, mode).strip().lower()
    if requested not in MODES:
        raise CourseError(f'MODE 는 {", ".join(MODES)} 중 하나여야 합니다 (받은 값: "{requested}").')
    if requested == "auto":
        return "live" if _settings().get("OPENAI_API_KEY") else "replay"
    return requested


def mode_of(client: openai.OpenAI) -> str:
    """connect() 가 이 클라이언트에 정한 모드: "live", "record" 또는 "replay"."""
    return _modes.get(client, "live")


def pause(client: openai.OpenAI, seconds: float) -> None:
    """작업 상태를 다시 묻기 전에 기다립니다. 재생 모드에서는 기다릴 이유가 없으므로 바로 돌아옵니다."""
    if mode_of(client) != "replay":
        import time

        time.sleep(seconds)


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
    path = RECORDINGS_DIR / f"{recording}.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["header"]


def fine_tuned_model(client: openai.OpenAI, suffix: str) -> str | None:
    """이 계정에서 접미사가 suffix 인 미세 조정 작업 중 가장 최근에 성공한 것의 모델 이름.

    앞 노트북(03, 07)이 만든 모델을 다음 노트북이 이름을 받아 적지 않고 찾습니다. API 로 찾으므로 live,
    record, replay 어디서나 같은 셀이 돕니다. 모델이 없거나 이미 지워졌으면 이유를 출력하고 None 을 돌려줍니다.
    """
    for job in client.fine_tuning.jobs.list(limit=50):  # 최근 작업부터
        if job.status == "succeeded" and job.fine_tuned_model and f":{suffix}:" in job.fine_tuned_model:
            try:
                client.models.retrieve(job.fine_tuned_model)
            except openai.NotFoundError:
                print(f"미세 조정 모델 {job.fine_tuned_model} 은 이미 지워졌습니다 (앞 노트북의 CLEAN_UP = True).")
                return None
            return job.fine_tuned_model
    print(f'접미사가 "{suffix}" 인, 성공한 미세 조정 작업이 이 계정에 없습니다.')
    return None


def _settings() -> dict:
    """환경 변수가 먼저, 없으면 .env 파일 (현재 폴더에서 위로 찾기, 그다음 저장소 최상위)."""
    names = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")
    found = {}
    for env_file in (find_dotenv(usecwd=True), ROOT / ".env"):
        if env_file and Path(env_file).is_file():
            found = {k: v for k, v in dotenv_values(env_file).items() if k in names and v}
            break
    return {name: os.environ.get(name) or found.get(name) for name in names}


def _ask_for_key() -> str:
    """키가 어디에도 없을 때, 대화형이면 화면에 보이지 않게 묻습니다."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = lambda: None  # noqa: E731
    interactive = get_ipython() is not None or sys.stdin.isatty()
    try:
        key = getpass.getpass("OpenAI API 키 (입력한 글자는 보이지 않고, 어디에도 저장되지 않습니다): ") if interactive else ""
    except Exception:  # papermill 처럼 입력을 받을 수 없는 커널
        key = ""
    if not key.strip():
        raise CourseError(
            "API 키가 없습니다. OPENAI_API_KEY 환경 변수나 저장소 최상위의 .env 파일에 키를 넣거나, "
            'MODE = "replay" 로 바꾸어 기록된 응답으로 실습하세요.'
        )
    return key.strip()


def _show_errors_in_korean() -> None:
    """주피터 안에서는 API 오류를 긴 traceback 대신 한국어 설명으로 보여 줍니다 (셀은 여전히 실패로 멈춤)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def show(shell, etype, evalue, tb, tb_offset=None):
        error = evalue if isinstance(evalue, CourseError) else explain_api_error(evalue)
        print(f"⚠ {type(evalue).__name__}: {error}", file=sys.stderr)

    shell.set_custom_exc((openai.OpenAIError, CourseError), show)


def _shown(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- 요청을 비교 가능한 형태로


class Scrubber:
    """키, Bearer 토큰, 조직/사용자/프로젝트 ID, 미세 조정 모델 이름 속 조직 이름을 지웁니다."""

    PATTERNS = [
        (re.compile(r"sk-[A-Za-z0-9_\-]{16,}"), "sk-REDACTED"),
        (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.]{8,}"), r"\1REDACTED"),
        (re.compile(r"org-[A-Za-z0-9]{12,}"), "org-REDACTED"),
        (re.compile(r"user-[A-Za-z0-9]{12,}"), "user-REDACTED"),
        (re.compile(r"proj_[A-Za-z0-9]{12,}"), "proj_REDACTED"),
        # ft:<기본 모델>:<조직 이름>:<접미사>:<id> 의 조직 이름
        (re.compile(r"\b(ft:[^:\s\"']+:)(?!your-org:)[^:\s\"']+:"), r"\1your-org:"),
    ]

    def __init__(self, secrets=()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, "REDACTED")
        for pattern, replacement in self.PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def __call__(self, obj):
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, list):
            return [self(item) for item in obj]
        if isinstance(obj, dict):
            return {self.text(k): self(v) for k, v in obj.items()}
        return obj


def describe_request(request: httpx2.Request, base_path: str, scrub: Scrubber) -> dict:
    """요청을 '방법, 경로, 의미 있는 본문' 으로 줄입니다. 기록과 재생이 같은 함수를 써야 서로 맞습니다."""
    path = request.url.path
    if path.startswith(base_path):
        path = "/" + path[len(base_path):].lstrip("/")
    described = {"method": request.method, "path": path}
    if request.url.query:
        described["query"] = dict(sorted(request.url.params.multi_items()))
    body = request.content
    content_type = request.headers.get("content-type", "")
    if body:
        if content_type.startswith("application/json"):
            data = json.loads(body)
            if isinstance(data, dict):
                data = {k: v for k, v in data.items() if k not in IGNORED_BODY_FIELDS}
            described["body"] = data
        elif content_type.startswith("multipart/form-data"):
            described["body"] = _describe_multipart(content_type, body)
        else:
            described["body"] = _file_fingerprint(None, body)
    return scrub(described)


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """multipart/form-data 본문을 {필드 이름: (파일 이름 또는 None, 바이트)} 로 나눕니다."""
    # 표준 라이브러리 email 파서로 충분합니다 (cgi 모듈은 사라졌고, 의존성을 늘릴 이유가 없음).
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True) or b"")
            for part in message.iter_parts()}


def _describe_multipart(content_type: str, body: bytes) -> dict:
    """업로드는 파일 내용 대신 이름, 크기, sha256 만 남깁니다 (기록이 커지지 않고, 내용이 바뀌면 알아챔)."""
    return {name: _file_fingerprint(filename, data) if filename else data.decode("utf-8", "replace")
            for name, (filename, data) in parse_multipart(content_type, body).items()}


def _file_fingerprint(filename: str | None, data: bytes) -> dict:
    fingerprint = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return {"filename": filename, **fingerprint} if filename else fingerprint


def _key(described: dict) -> str:
    return json.dumps(described, sort_keys=True, ensure_ascii=False)


# ----------------------------------------------------------------------------- 기록 (record)


class RecordingTransport(httpx2.BaseTransport):
    """진짜 전송(inner)으로 보내고, 주고받은 한 쌍을 바로 파일에 덧붙여 씁니다."""

    def __init__(self, inner, path: Path, base_url: str, dataset: str, notebook: str, secrets=()):
        self.inner, self.path = inner, Path(path)
        self.base_path = urlsplit(base_url).path.rstrip("/")
        self.host = urlsplit(base_url).netloc
        self.scrub = Scrubber(secrets)
        self.recording = {
            "header": {
                "source": None,  # 첫 응답을 받을 때 정합니다
                "recorded_on": dt.date.today().isoformat(),
                "sdk": f"openai {openai.__version__}",
                "dataset": dataset,
                "notebook": notebook,
            },
            "interactions": [],
        }

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        response = self.inner.handle_request(request)
        content = response.read()  # 압축은 이미 풀려 있으므로 아래에서 관련 헤더를 뺍니다
        response.close()
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")}
        self._append(request, response.status_code, headers, content)
        return httpx2.Response(response.status_code, headers=headers, content=content, request=request)

    def _append(self, request, status: int, headers: dict, content: bytes) -> None:
        header = self.recording["header"]
        if header["source"] is None:
            header["source"] = self._source(headers)
            self._keep_previous_file()
        content_type = headers.get("content-type", "")
        stored = {"status": status, "content_type": content_type.split(";")[0]}
        if content_type.startswith("application/json"):
            stored["json"] = self.scrub(json.loads(content))
        else:
            stored["text"] = self.scrub(content.decode("utf-8", "replace"))
        self.recording["interactions"].append(
            {"request": describe_request(request, self.base_path, self.scrub), "response": stored}
        )
        # 매번 통째로 새로 쓰고 바꿔치기: 커널이 죽어도 이미 기록한 것은 온전히 남습니다.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.recording, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def _source(self, headers: dict) -> str:
        if any(k.lower() == STANDIN_HEADER for k in headers):
            return "offline stand-in"
        if self.host == "api.openai.com":
            return "openai"
        return f"openai-compatible {self.host}"

    def _keep_previous_file(self) -> None:
        if self.path.exists():
            os.replace(self.path, self.path.with_name(self.path.stem + ".previous.json"))


# ----------------------------------------------------------------------------- 재생 (replay)


class ReplayTransport(httpx2.BaseTransport):
    """기록 파일에서 응답을 꺼냅니다. 같은 요청이 여러 번이면 기록된 순서대로, 다 쓰면 마지막 것을 다시."""

    BASE_URL = "https://replay.invalid/v1"  # 어떤 요청도 네트워크로 나가지 않습니다

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CourseError(
                f"재생할 기록 파일이 없습니다: {_shown(self.path)}. API 키를 설정하고 "
                f'MODE = "record" 로 이 노트북을 실행하면 만들어집니다. {RERECORD_HINT}'
            )
        self.recording = json.loads(self.path.read_text(encoding="utf-8"))
        self.header = self.recording["header"]
        self.scrub = Scrubber()
        self.queues: dict[str, list[dict]] = {}
        for interaction in self.recording["interactions"]:
            self.queues.setdefault(_key(interaction["request"]), []).append(interaction["response"])
        self.used: dict[str, int] = {}

    def describe(self) -> str:
        h = self.header
        note = " — 실제 OpenAI 응답이 아닙니다" if h["source"] == "offline stand-in" else ""
        dataset = f", 데이터: {h['dataset']}" if h.get("dataset") else ""
        return (f"▶ 재생(replay) 모드: {_shown(self.path)} ({len(self.recording['interactions'])}개 응답) — "
                f"출처: {h['source']}{note} ({h['recorded_on']} 기록, {h['sdk']}{dataset}). 키와 네트워크는 쓰지 않습니다.")

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        described = describe_request(request, urlsplit(self.BASE_URL).path, self.scrub)
        key = _key(described)
        responses = self.queues.get(key)
        if not responses:
            raise ReplayMissError(self._miss_message(described))
        index = min(self.used.get(key, 0), len(responses) - 1)
        self.used[key] = index + 1
        stored = responses[index]
        if "json" in stored:
            content = json.dumps(stored["json"], ensure_ascii=False).encode("utf-8")
        else:
            content = stored["text"].encode("utf-8")
        return httpx2.Response(stored["status"], headers={"content-type": stored["content_type"]},
                               content=content, request=request)

    def _miss_message(self, described: dict) -> str:
        lines = [
            f"재생 모드인데 기록에 없는 요청입니다: {described['method']} {described['path']} {_summary(described)}",
            f"  기록 파일: {_shown(self.path)} (출처: {self.header['source']}, {self.header['recorded_on']})",
        ]
        same_route = [i["request"] for i in self.recording["interactions"]
                      if i["request"]["method"] == described["method"] and i["request"]["path"] == described["path"]]
        if same_route:
            closest = min(same_route, key=lambda r: len(_differing_fields(r, described)))
            fields = ", ".join(_differing_fields(closest, described)) or "(순서)"
            lines.append(f"  같은 주소로 기록된 요청 {len(same_route)}개 중 가장 가까운 것과 다른 부분: {fields}")
        lines.append(
            "  노트북의 입력(질문, 데이터, 모델 이름, 매개변수)을 기록할 때와 같게 되돌리거나, API 키를 설정하고 "
            f'MODE = "record" 로 실행해 이 요청을 새로 기록하세요. {RERECORD_HINT}'
        )
        return "\n".join(lines)


def _summary(described: dict) -> str:
    body = described.get("body")
    if not isinstance(body, dict):
        return ""
    parts = [f"{k}={body[k]}" for k in ("model", "training_file", "suffix") if k in body]
    if isinstance(body.get("messages"), list) and body["messages"]:
        last = str(body["messages"][-1].get("content", ""))
        parts.append(f"마지막 메시지='{last[:60]}{'…' if len(last) > 60 else ''}'")
    if isinstance(body.get("file"), dict):
        parts.append(f"파일={body['file'].get('filename')} ({body['file'].get('bytes')} bytes)")
    return "(" + ", ".join(parts) + ")" if parts else ""


def _differing_fields(recorded: dict, described: dict) -> list[str]:
    diffs = [k for k in ("query",) if recorded.get(k) != described.get(k)]
    a, b = recorded.get("body"), described.get("body")
    if isinstance(a, dict) and isinstance(b, dict):
        diffs += sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    elif a != b:
        diffs.append("body")
    return diffs


# ----------------------------------------------------------------------------- API 오류 설명


def explain_api_error(err: Exception) -> CourseError:
    """OpenAI API 오류를 한국어 설명으로 바꿉니다: 무슨 일이 있었고, 다음에 무엇을 하면 되는지.

    노트북에서는 `except openai.APIError as err: raise course.explain_api_error(err) from None`.
    """
    said = getattr(err, "message", str(err))
    status = getattr(err, "status_code", None)
    request = getattr(err, "request", None)
    creating_job = (request is not None and request.method == "POST"
                    and request.url.path.rstrip("/").endswith("/fine_tuning/jobs"))
    replay_hint = 'MODE = "replay" 로 바꾸면 기록된 응답으로 이 노트북을 끝까지 따라갈 수 있습니다.'
    if isinstance(err, ReplayMissError):
        return err
    if isinstance(err, openai.APIConnectionError):
        text = f"API 서버에 연결하지 못했습니다 (네트워크, 방화벽, OPENAI_BASE_URL 을 확인하세요). {replay_hint}"
    elif status == 401:
        text = f"API 키가 거부되었습니다. 키를 다시 복사해 .env 나 환경 변수에 넣었는지 확인하세요. {replay_hint}"
    elif creating_job and status in (400, 403, 404):
        text = (
            "OpenAI가 이 조직의 새 미세 조정 작업을 받지 않았습니다. OpenAI는 셀프서비스 미세 조정을 닫는 중입니다: "
            "2026-05-07부터 미세 조정을 해 본 적 없는 조직, 2026-07-02부터 최근에 미세 조정 모델을 쓰지 않은 조직은 "
            "새 작업을 만들 수 없고, 2027-01-06부터는 아무도 만들 수 없습니다. 기본 모델 이름이 틀렸을 수도 있습니다 "
            f"(BASE_MODEL 확인). 여러분의 잘못이 아닙니다 — {replay_hint}"
        )
    elif status == 403:
        text = f"이 키(조직/프로젝트)에는 이 기능을 쓸 권한이 없습니다. {replay_hint}"
    elif status == 404:
        text = ("요청한 모델이나 파일을 찾을 수 없습니다. 이름을 확인하세요. 날짜가 붙은 스냅샷(gpt-4o-mini, gpt-4.1 계열)과 "
                f"그 미세 조정 모델은 2027-01-14에 종료됩니다. {replay_hint}")
    elif status == 429:
        text = "요청 한도나 사용 한도(크레딧)를 넘었습니다. 잠시 뒤 다시 하거나 결제/한도 설정을 확인하세요."
    elif status is not None and status >= 500:
        text = "OpenAI 서버 쪽 오류입니다. 잠시 뒤 같은 셀을 다시 실행하세요."
    else:
        text = f"API가 요청을 받아들이지 않았습니다. {replay_hint}"
    code = f"HTTP {status}" if status else type(err).__name__
    return CourseError(f"{text}\n  (서버가 보낸 내용, {code}: {Scrubber()(said)})")
