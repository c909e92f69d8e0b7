"""기록(record)과 재생(replay): SDK 의 `http_client=` 자리에 끼우는 두 전송(transport).

기록 파일 data/recordings/<노트북>.json 은 읽을 수 있는 JSON 입니다: 머리말(header: 출처, 날짜, SDK, 데이터)과
요청/응답 쌍(interactions) 목록. 요청은 '방법, 경로, 의미 있는 본문' 으로 줄여 두고, 재생은 같은 방식으로 줄인
요청을 찾아 기록된 응답을 돌려줍니다.

vcrpy 대신 직접 만든 이유: vcrpy 는 전역으로 패치하고 카세트를 끝날 때 한 번에 써서, 커널이 죽으면 기록이
사라지고 노트북의 셀 단위 실행과 맞지 않기 때문입니다.
"""
from __future__ import annotations

import atexit
import datetime as dt
import email.parser
import email.policy
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import openai

from helpers import local, modes, paths
from helpers.errors import CourseAPIError, CourseError
from helpers.scrub import Scrubber

RERECORD_HINT = "강사용으로 모든 기록을 한 번에 다시 만들려면: python tests/rerecord.py"
# 응답 내용에 영향을 주지 않는 요청 필드 — 재생할 때 비교에서 뺍니다.
IGNORED_BODY_FIELDS = {"user", "metadata", "store", "stream_options", "safety_identifier"}
RETRY_HEADER = "x-stainless-retry-count"  # SDK 가 같은 요청을 다시 보낼 때 붙이는 횟수


class ReplayMissError(CourseAPIError):
    """재생할 기록이 없는 요청 (기록에 없거나, 기록된 응답을 다 씀)."""


# ----------------------------------------------------------------------------- 요청을 비교 가능한 형태로


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
    return canonical(scrub(described))


def canonical(value):
    """JSON 이 같은 수로 보는 값을 하나로: 1.0 → 1 (TEMPERATURE = 1 과 기록된 1.0 이 같은 요청이 되도록)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return value


def request_key(described: dict) -> str:
    return json.dumps(canonical(described), sort_keys=True, ensure_ascii=False)


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


def response_body(stored: dict):
    """기록된 응답의 본문 (JSON 이면 dict/list, 아니면 문자열)."""
    return stored["json"] if "json" in stored else stored.get("text")


# ----------------------------------------------------------------------------- 기록 파일 읽기


def read_recording(path: Path) -> dict:
    """기록 파일을 읽고 모양을 확인합니다. 망가졌으면 어느 파일이 어떻게 망가졌고 어떻게 되살리는지 말합니다."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        _broken(path, f"UTF-8 텍스트가 아닙니다 ({err.start}번째 바이트) — 다른 프로그램이 다른 인코딩으로 저장한 것 같습니다")
    except json.JSONDecodeError as err:
        _broken(path, f"{err.lineno}번째 줄 {err.colno}번째 글자에서 JSON 이 깨졌습니다 ({err.msg}) — "
                      "기록이 중간에 잘렸거나 손으로 고치다 망가진 것 같습니다")
    if not isinstance(data, dict):
        _broken(path, f"JSON 객체({{\"header\": …, \"interactions\": […]}})가 아니라 {type(data).__name__} 입니다")
    header, interactions = data.get("header"), data.get("interactions")
    if not isinstance(header, dict):
        _broken(path, "머리말(\"header\")이 없습니다")
    missing = [k for k in ("source", "recorded_on", "sdk") if not isinstance(header.get(k), str)]
    if missing:
        _broken(path, f"머리말에 {', '.join(missing)} 가 없습니다")
    if not isinstance(interactions, list):
        _broken(path, "요청/응답 목록(\"interactions\")이 없습니다")
    for number, interaction in enumerate(interactions, start=1):
        try:
            request, response = interaction["request"], interaction["response"]
            assert isinstance(request["method"], str) and isinstance(request["path"], str)
            assert isinstance(response["status"], int) and ("json" in response or "text" in response)
        except (KeyError, TypeError, AssertionError):
            _broken(path, f"{number}번째 요청/응답 쌍에 request(method, path) 나 response(status, 본문)가 없습니다")
    return data


def _broken(path: Path, problem: str):
    shown = paths.shown(path)
    previous = path.with_name(path.stem + ".previous.json")
    backup = f" 직전 기록 {paths.shown(previous)} 이 있으면 그 파일을 {path.name} 으로 복사해도 됩니다." \
        if previous.is_file() else ""
    raise CourseError(f"기록 파일 {shown} 을 읽을 수 없습니다: {problem}.\n"
                      f"  저장소에 들어 있던 기록으로 되돌리려면: git checkout -- {shown}{backup}\n"
                      f'  또는 API 키로 MODE = "record" 로 다시 기록하세요. {RERECORD_HINT}')


# ----------------------------------------------------------------------------- 기록 (record)


class RecordingFile:
    """요청/응답 쌍을 한 번에 하나씩 덧붙이는 기록 파일.

    - 덧붙이기는 끝의 `]}` 앞에 한 번의 write 로 씁니다: 비용이 파일 크기와 상관없고, 커널이 죽어도 파일은
      언제나 온전한 JSON 입니다 (write 하나는 프로세스가 죽어도 반쯤 쓰이지 않음).
    - 새 기록은 먼저 <이름>.json.tmp 에 쓰고, 성공한 응답을 처음 받을 때에야 원래 기록의 자리에 들어갑니다.
      그래서 401 처럼 처음부터 실패한 실행은 좋은 기록도, 직전 기록도 건드리지 않습니다.
    - 머리말의 "complete" 는 기록 실행이 오류 없이 끝났을 때(finish) true 가 됩니다. 원래 기록은 끝까지 마친
      기록일 때만 <이름>.previous.json 으로 옮깁니다: 중간에 멈춘 실행이 두 번 이어져도 좋은 기록이 남습니다.
    """

    TAIL = b"\n]}\n"

    def __init__(self, path: Path, header: dict):
        self.path, self.header = Path(path), header
        self.draft = self.path.with_name(self.path.name + ".tmp")
        self.previous = self.path.with_name(self.path.stem + ".previous.json")
        self.target: Path | None = None  # 지금 덧붙이는 파일: 처음엔 draft, 첫 성공 뒤에는 path
        self.head = b""  # 파일 맨 앞의 머리말 부분 (finish 가 complete 를 바꿔 씀)
        self.count = 0
        self.failed = False  # 이 실행 중에 셀이 오류로 멈췄는지 (track_failed_cells)
        _runs.append(self)

    def append(self, interaction: dict, succeeded: bool) -> None:
        if self.target is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.head = self._head(complete=False)
            self.draft.write_bytes(self.head + self.TAIL)
            self.target = self.draft
        chunk = ("\n" if self.count == 0 else ",\n") + json.dumps(interaction, ensure_ascii=False)
        with open(self.target, "r+b", buffering=0) as f:
            f.seek(-len(self.TAIL), os.SEEK_END)
            f.write(chunk.encode("utf-8") + self.TAIL)
        self.count += 1
        if succeeded and self.target == self.draft:
            if self.path.is_file() and finished_recording(self.path):
                os.replace(self.path, self.previous)
            os.replace(self.draft, self.path)  # 끝까지 마치지 못한 기록은 직전 기록을 남긴 채 덮어씀
            self.target = self.path
            _recording_now[self.path] = self

    def finish(self) -> None:
        """기록 실행이 오류 없이 끝났다고 머리말에 적습니다 (다음 기록 실행이 이 기록을 직전 기록으로 남기도록)."""
        if _recording_now.get(self.path) is not self:
            return  # 이 실행이 기록을 바꾸지 않았거나, 같은 커널의 나중 실행이 이어받음
        content = self.path.read_bytes()
        if content.startswith(self.head):
            finished = self.path.with_name(self.path.name + ".finished")
            finished.write_bytes(self._head(complete=True) + content[len(self.head):])
            os.replace(finished, self.path)

    def _head(self, complete: bool) -> bytes:
        header = json.dumps({**self.header, "complete": complete}, ensure_ascii=False, indent=1)
        return ('{"header": ' + header + ',\n"interactions": [').encode("utf-8")

    @property
    def replaced(self) -> bool:
        """이번 실행이 원래 기록을 바꿨는지 (성공한 응답을 하나라도 받았는지)."""
        return self.target == self.path


def finished_recording(path: Path) -> bool:
    """기록 실행이 끝까지 마친 기록인지. complete 가 없는 기록(저장소의 예전 기록)도 마친 것으로 봅니다."""
    try:
        return read_recording(path)["header"].get("complete", True) is not False
    except CourseError:  # 망가진 기록은 직전 기록으로 남길 까닭이 없음
        return False


_runs: list[RecordingFile] = []  # 이 프로세스의 기록 실행들
_recording_now: dict[Path, RecordingFile] = {}  # 기록 파일마다, 그 자리를 마지막으로 차지한 이 프로세스의 실행


@atexit.register
def _finish_recordings() -> None:
    """커널(프로세스)이 정상으로 끝날 때: 셀 오류도, 처리되지 않은 예외도 없던 기록 실행을 '마침' 으로 적습니다.
    커널이 죽으면 이 함수는 불리지 않으므로 그 기록은 마치지 못한 기록으로 남습니다."""
    if getattr(sys, "last_value", None) is not None:  # 스크립트가 처리되지 않은 예외로 끝남
        return
    for file in list(_recording_now.values()):
        if not file.failed:
            try:
                file.finish()
            except OSError:
                pass  # 끝나는 중에는 알릴 곳이 없음: 기록은 마치지 못한 기록으로 남을 뿐


def track_failed_cells() -> None:
    """주피터(IPython) 안이면, 오류로 멈춘 셀이 있을 때 지금의 기록 실행들을 '마치지 못함' 으로 둡니다."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or _note_failed_cell in shell.events.callbacks["post_run_cell"]:
        return
    shell.events.register("post_run_cell", _note_failed_cell)


def _note_failed_cell(result) -> None:
    if result.error_before_exec is not None or result.error_in_exec is not None:
        for file in _runs:
            file.failed = True


class RecordingTransport(httpx2.BaseTransport):
    """진짜 전송(inner)으로 보내고, 주고받은 한 쌍을 바로 파일에 덧붙여 씁니다 (비밀은 지운 뒤에)."""

    def __init__(self, inner, path: Path, base_url: str, dataset: str, notebook: str, secrets=()):
        self.inner = inner
        self.base_path = urlsplit(base_url).path.rstrip("/")
        self.host = modes.where(base_url)  # 주소 속 user:password 는 빼고
        self.scrub = Scrubber(secrets)
        self.header = {
            "source": None,  # 첫 응답을 받을 때 정합니다
            "recorded_on": dt.date.today().isoformat(),
            "sdk": f"openai {openai.__version__}",
            "dataset": dataset,
            "notebook": notebook,
        }
        self.file = RecordingFile(path, self.header)
        track_failed_cells()
        self.lock = threading.Lock()  # 여러 스레드가 함께 보낸 요청도 한 쌍씩 온전히 덧붙이도록

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        response = self.inner.handle_request(request)
        content = response.read()  # 압축은 이미 풀려 있으므로 아래에서 관련 헤더를 뺍니다
        response.close()
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")}
        interaction = {"request": describe_request(request, self.base_path, self.scrub),
                       "response": self._stored(response.status_code, headers, content)}
        retry = int(request.headers.get(RETRY_HEADER) or 0)
        if retry:  # SDK 가 다시 보낸 요청: 재생은 바로 앞의 실패한 시도를 건너뜁니다
            interaction["retry"] = retry
        try:
            with self.lock:
                if self.header["source"] is None:
                    self.header["source"] = self._source(headers)
                self.file.append(interaction, succeeded=response.status_code < 400)
        except OSError as err:
            raise CourseAPIError(self._write_failed(err, request, interaction["response"])) from err
        return httpx2.Response(response.status_code, headers=headers, content=content, request=request)

    def _stored(self, status: int, headers: dict, content: bytes) -> dict:
        content_type = headers.get("content-type", "")
        stored = {"status": status, "content_type": content_type.split(";")[0]}
        try:
            stored["json"] = self.scrub(json.loads(content)) if content_type.startswith("application/json") else None
        except ValueError:  # JSON 이라면서 JSON 이 아닌 응답도 있는 그대로 남깁니다
            stored["json"] = None
        if stored["json"] is None:
            del stored["json"]
            stored["text"] = self.scrub(content.decode("utf-8", "replace"))
        return stored

    def _write_failed(self, err: OSError, request: httpx2.Request, stored: dict) -> str:
        body = response_body(stored)
        created = body.get("id") if isinstance(body, dict) and request.method == "POST" else None
        text = f"서버는 요청({request.method} {request.url.path})을 처리했지만 기록 파일 {paths.shown(self.file.path)} 에 " \
               f"쓰지 못했습니다 ({type(err).__name__}: {err.strerror or err})."
        if created:
            text += (f"\n  서버에는 {created} 가 만들어졌습니다. 지우려면 이 id 를 적어 두었다가 "
                     f"{_delete_line(request.url.path, created)} 를 실행하세요.")
        return text + "\n  기록 폴더를 쓸 수 있는지(디스크 공간, 권한, 같은 이름의 폴더) 확인한 뒤 다시 기록하세요."

    def _source(self, headers: dict) -> str:
        served_by = next((v for k, v in headers.items() if k.lower() == local.SERVER_HEADER), None)
        if served_by:  # "<모델>; device=<장치>"
            model, _, device = served_by.partition("; device=")
            return local.source_label(model, device)
        if self.host == "api.openai.com":
            return "openai"
        return f"openai-compatible {self.host}"


def _delete_line(path: str, object_id: str) -> str:
    if "fine_tuning/jobs" in path:
        return f'client.fine_tuning.jobs.cancel("{object_id}")'
    return f'client.files.delete("{object_id}")'


# ----------------------------------------------------------------------------- 재생 (replay)


class ReplayTransport(httpx2.BaseTransport):
    """기록 파일에서 응답을 꺼냅니다. 같은 요청이 여러 번이면 기록된 순서대로, 다 쓰면 그렇다고 말합니다."""

    BASE_URL = "https://replay.invalid/v1"  # 어떤 요청도 네트워크로 나가지 않습니다

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CourseError(
                f"재생할 기록 파일이 없습니다: {paths.shown(self.path)}.\n"
                f"  저장소에 들어 있던 기록을 되살리려면: git checkout -- {paths.shown(paths.RECORDINGS_DIR)}\n"
                '  키 없이 직접 실행하려면 MODE = "local" (이 컴퓨터의 오픈 웨이트 모델로 학습하고 답합니다).\n'
                f'  API 키가 있으면 MODE = "record" 로 이 노트북을 실행해 새로 기록할 수 있습니다. {RERECORD_HINT}'
            )
        recording = read_recording(self.path)
        self.header = recording["header"]
        self.requests = [canonical(i["request"]) for i in recording["interactions"]]
        self.queues: dict[str, list[dict]] = {}
        for request, interaction in zip(self.requests, recording["interactions"]):
            queue = self.queues.setdefault(request_key(request), [])
            if interaction.get("retry") and queue and queue[-1]["status"] >= 400:
                queue.pop()  # SDK 가 실패 뒤 다시 보내 성공한 요청: 학습자가 본 것은 마지막 결과뿐
            queue.append(interaction["response"])
        self.used: dict[str, int] = {}
        self.used_before_cell: dict[str, dict[str, int]] = {}  # 셀마다, 그 셀을 처음 실행할 때의 재생 위치
        self.lock = threading.Lock()  # 여러 스레드가 함께 물어도 같은 요청의 응답을 기록된 순서대로 한 번씩
        self.scrub = Scrubber()

    def cell_starts(self, cell: str) -> None:
        """노트북의 셀 하나가 실행되기 직전에 불립니다 (follow_cell_reruns). 처음 실행하는 셀이면 지금 재생 위치를
        적어 두고, 다시 실행하는 셀이면 그 위치로 되돌립니다: 같은 셀은 처음 실행 때와 같은 응답을 다시 받습니다."""
        with self.lock:
            if cell in self.used_before_cell:
                self.used = dict(self.used_before_cell[cell])
            else:
                self.used_before_cell[cell] = dict(self.used)

    def describe(self) -> str:
        h = self.header
        note = " — OpenAI 모델이 아니라 이 과정의 로컬 서버에서 학습한 오픈 웨이트 모델의 응답입니다" \
            if h["source"].startswith("local open-weight") else ""
        dataset = f", 데이터: {h['dataset']}" if h.get("dataset") else ""
        count = sum(len(q) for q in self.queues.values())
        if h.get("complete") is False:
            dataset += "; 중간에 멈춘 기록 실행이 남긴 기록"
        return (f"▶ 재생(replay) 모드: {paths.shown(self.path)} ({count}개 응답) — "
                f"출처: {h['source']}{note} ({h['recorded_on']} 기록, {h['sdk']}{dataset}). 키와 네트워크는 쓰지 않습니다.")

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        described = describe_request(request, urlsplit(self.BASE_URL).path, self.scrub)
        key = request_key(described)
        responses = self.queues.get(key)
        if not responses:
            raise ReplayMissError(self._miss_message(described))
        with self.lock:
            used = self.used.get(key, 0)
            self.used[key] = used + 1
        if used >= len(responses):
            raise ReplayMissError(self._miss_message(described, recorded_times=len(responses)))
        stored = responses[used]
        body = response_body(stored)
        content = json.dumps(body, ensure_ascii=False) if "json" in stored else body
        return httpx2.Response(stored["status"], headers={"content-type": stored["content_type"]},
                               content=content.encode("utf-8"), request=request)

    def _miss_message(self, described: dict, recorded_times: int = 0) -> str:
        lines = [
            f"재생 모드인데 기록에 없는 요청입니다: {described['method']} {described['path']} {_summary(described)}",
            f"  기록 파일: {paths.shown(self.path)} (출처: {self.header['source']}, {self.header['recorded_on']})",
        ]
        if recorded_times:
            lines.append(f"  이 요청은 기록에 {recorded_times}번 있고, 그 응답을 모두 썼습니다 (지금이 {recorded_times + 1}번째). "
                         "기록할 때보다 더 여러 번 묻고 있습니다 (예: 반복 횟수를 늘림). 없는 답을 지어내지 않고 멈춥니다. "
                         "처음부터 다시 재생하려면 course.connect 셀부터 다시 실행하세요.")
        else:
            same_route = [r for r in self.requests
                          if r["method"] == described["method"] and r["path"] == described["path"]]
            if same_route:
                closest = min(same_route, key=lambda r: len(_differing_fields(r, described)))
                fields = ", ".join(_differing_fields(closest, described))
                lines.append(f"  같은 주소로 기록된 요청 {len(same_route)}개 중 가장 가까운 것과 다른 부분: {fields}")
        lines.append(
            '  바꾼 것을 직접 실행해 보려면 MODE = "local" 로 바꾸세요: 키 없이 이 컴퓨터의 오픈 웨이트 모델이 실제로 '
            "학습하고 답합니다. 기록대로 따라가려면 노트북의 입력(질문, 데이터, 모델 이름, 매개변수)을 기록할 때와 같게 "
            f'되돌리세요. 키가 있으면 MODE = "record" 로 이 요청을 새로 기록할 수 있습니다. {RERECORD_HINT}'
        )
        return "\n".join(lines)


_following: list = []  # 셀 다시 실행을 따라가는 훅: 마지막 connect 의 재생 전송 하나만


def follow_cell_reruns(transport: ReplayTransport) -> None:
    """주피터(IPython) 안이면, 셀을 실행할 때마다 transport.cell_starts 를 부르게 합니다 (pre_run_cell 이벤트).

    셀을 다시 실행하는 것은 노트북에서 가장 흔한 일입니다. 셀은 JupyterLab 이 주는 cell_id 로, 없으면 셀의
    내용으로 알아봅니다. connect 셀을 다시 실행하면 새 전송이 앞의 것을 대신해 처음부터 재생합니다.
    """
    shell = modes.jupyter_shell()
    if shell is None:
        return

    def before_cell(info):
        transport.cell_starts(getattr(info, "cell_id", None) or info.raw_cell)

    for hook in _following:
        if hook in shell.events.callbacks["pre_run_cell"]:
            shell.events.unregister("pre_run_cell", hook)
    _following[:] = [before_cell]
    shell.events.register("pre_run_cell", before_cell)


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
    """기록된 요청과 다른 필드 이름들. 값은 JSON 으로 비교합니다 (파이썬에서는 1 == 1.0 == True 라서)."""
    def same(a, b):
        return request_key({"v": a}) == request_key({"v": b})

    diffs = [k for k in ("query",) if not same(recorded.get(k), described.get(k))]
    a, b = recorded.get("body"), described.get("body")
    if isinstance(a, dict) and isinstance(b, dict):
        diffs += sorted(k for k in a.keys() | b.keys() if not same(a.get(k), b.get(k)))
    elif not same(a, b):
        diffs.append("body")
    return diffs
