"""local 모드: 이 과정의 로컬 미세 조정 서버(local_server/)를 찾거나 띄웁니다.

- 127.0.0.1 의 포트(기본 8765)에 서버가 이미 있으면 그대로 씁니다 (앞 노트북이 띄웠거나, 직접 띄운 서버).
- 없으면 `python -m local_server` 를 하위 프로세스로 띄우고 모델을 다 불러올 때까지 기다립니다.
  서버의 출력은 output/local_server.log 에 남습니다.
- 이 노트북이 띄운 서버는 커널이 끝나면 함께 멈춥니다: 서버는 표준 입력(파이프)이 닫히면 스스로 끝나므로,
  커널이 강제로 죽어도 서버가 남지 않습니다 (운영체제와 상관없이).

바꿀 수 있는 것 (환경 변수): COURSE_LOCAL_PORT (포트), COURSE_LOCAL_DATA_DIR (작업과 모델을 둘 폴더),
COURSE_LOCAL_MODEL (기본 모델: Hugging Face id 또는 폴더).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2

from helpers import paths
from helpers.errors import CourseError

DEFAULT_PORT = 8765
LOCAL_OWNER = "local"  # 로컬 서버의 모델(기본 모델과 미세 조정 모델)의 owned_by: OpenAI 모델과 가려내는 표시
SERVER_HEADER = "x-course-local-server"  # 로컬 서버가 모든 응답에 붙이는 표시: "<모델>; device=<장치>"
# CPU 에서는 한꺼번에 보낸 요청이 묶여 차례로 계산되므로, 한 요청이 몇 분 기다릴 수 있습니다
TIMEOUT = httpx2.Timeout(600, connect=10)
START_TIMEOUT_SECONDS = 900  # 처음 한 번은 GGUF 를 변환하느라 1분 안팎, 느린 컴퓨터면 더
# 데이터 폴더는 서버 하나만 씁니다. 커널을 다시 시작하면 앞 커널의 서버가 학습 프로세스를 기다리며 끝나는 데 10초쯤
# 걸릴 수 있어, 그동안은 새 서버가 "다른 서버가 쓰고 있습니다" 로 끝나면 다시 띄워 봅니다.
DATA_DIR_BUSY_RETRY_SECONDS = 30
DATA_DIR_BUSY = "다른 서버(프로세스"  # local_server 가 그 폴더를 쓰는 서버가 있을 때 남기는 말
_started: list[subprocess.Popen] = []  # 이 커널이 띄운 서버 (커널이 끝나면 파이프가 닫혀 함께 끝남)


@dataclass
class LocalServer:
    url: str        # http://127.0.0.1:<port>/v1
    model: str      # 서버의 기본 모델 id (예: gemma-3-270m)
    device: str     # cpu, cuda, mps
    started_here: bool


def source_label(model: str, device: str) -> str:
    """기록 머리말의 출처: 어떤 모델을 어떤 방법으로 어디서 돌렸는지."""
    return f"local open-weight {model} (LoRA, {device.upper()})"


def on_this_computer(url: str) -> bool:
    """A server at 127.0.0.1/localhost computes on this CPU: its answers may take minutes, not seconds."""
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def port() -> int:
    return int(os.environ.get("COURSE_LOCAL_PORT", DEFAULT_PORT))


def health(port_number: int) -> dict | None:
    """그 포트의 로컬 서버 상태 ({"model", "device"}). 아무것도 없으면 None, 다른 프로그램이면 CourseError."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port_number}/health", timeout=2) as response:
            found = json.loads(response.read())
    except urllib.error.HTTPError:  # a web program answered, but not /health: another program holds the port
        found = {}
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    except ValueError:
        found = {}
    if not (isinstance(found, dict) and found.get("status") == "ok" and "model" in found):
        raise CourseError(f"127.0.0.1:{port_number} 을 다른 프로그램이 쓰고 있습니다. 환경 변수 COURSE_LOCAL_PORT 로 "
                          "다른 포트를 고르세요 (예: COURSE_LOCAL_PORT=8766).")
    return found


def ensure_server() -> LocalServer:
    """실행 중인 로컬 서버를 찾고, 없으면 띄웁니다."""
    port_number = port()
    found = health(port_number)
    started_here = found is None
    if started_here:
        found = _start(port_number)
    return LocalServer(f"http://127.0.0.1:{port_number}/v1", found["model"], found["device"], started_here)


def _start(port_number: int) -> dict:
    retry_until = time.monotonic() + DATA_DIR_BUSY_RETRY_SECONDS
    while True:
        found, exit_code, log_tail = _start_once(port_number)
        if found:
            return found
        if time.monotonic() > retry_until or not any(DATA_DIR_BUSY in line for line in log_tail):
            raise CourseError(f"로컬 서버가 시작하지 못하고 끝났습니다 (exit code {exit_code}). "
                              f"{paths.shown(paths.output_file('local_server.log'))} 의 마지막 줄:\n  "
                              + "\n  ".join(log_tail))
        time.sleep(1)  # 앞 서버가 데이터 폴더를 놓을 때까지


def _start_once(port_number: int) -> tuple[dict | None, int | None, list[str]]:
    """서버를 띄우고 준비되면 (상태, None, []), 준비되기 전에 끝나면 (None, exit code, 로그의 마지막 줄들)."""
    command = [sys.executable, "-m", "local_server", "--port", str(port_number), "--exit-when-stdin-closes"]
    for option, env in (("--data-dir", "COURSE_LOCAL_DATA_DIR"), ("--model", "COURSE_LOCAL_MODEL")):
        if os.environ.get(env):
            command += [option, os.environ[env]]
    log_path = paths.output_file("local_server.log")
    print("로컬 서버를 띄우고 모델을 불러옵니다 (처음 한 번은 모델 변환에 1분쯤, 그다음부터는 몇 초)…", flush=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=paths.ROOT, stdin=subprocess.PIPE, stdout=log,
                                   stderr=subprocess.STDOUT)
    _started.append(process)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _started.remove(process)  # 끝난 서버는 이 커널이 띄운 것으로 두지 않음
            return None, process.returncode, log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        found = health(port_number)
        if found:
            return found, None, []
        time.sleep(0.5)
    process.kill()
    raise CourseError(f"로컬 서버가 {START_TIMEOUT_SECONDS}초 안에 준비되지 않았습니다. {paths.shown(log_path)} 를 "
                      "확인하세요.")
