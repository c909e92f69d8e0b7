"""모드와 키: 어느 모드로 돌지, 누가 그렇게 정했는지, 키와 주소를 어디서 읽는지.

- MODE (노트북의 parameters 셀) 또는 환경 변수 COURSE_MODE (있으면 MODE 보다 우선)
- "auto" 는 키가 있으면 "live", 없으면 "replay". "local" 은 키 없이 이 컴퓨터의 로컬 서버 (helpers/local.py)
- 키와 주소: 환경 변수가 먼저, 없으면 .env 파일 (현재 폴더에서 위로 찾기, 그다음 저장소 최상위)
"""
from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values, find_dotenv

from helpers import paths
from helpers.errors import CourseError

MODE_ENV = "COURSE_MODE"
MODES = ("auto", "live", "record", "replay", "local")
SETTING_NAMES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID")
OPENAI_URL = "https://api.openai.com/v1"


def settings() -> dict:
    """키, 주소, 조직, 프로젝트: 환경 변수가 먼저, 없으면 .env 파일."""
    found = {}
    for env_file in (find_dotenv(usecwd=True), paths.ROOT / ".env"):
        if env_file and Path(env_file).is_file():
            found = {k: v for k, v in dotenv_values(env_file).items() if k in SETTING_NAMES and v}
            break
    return {name: os.environ.get(name) or found.get(name) for name in SETTING_NAMES}


def resolve_mode(mode: str = "auto") -> str:
    """connect() 가 고를 모드: COURSE_MODE 가 MODE 보다 우선, "auto" 는 키가 있으면 "live", 없으면 "replay"."""
    requested = os.environ.get(MODE_ENV, mode).strip().lower()
    if requested not in MODES:
        raise CourseError(f'{decided_by()} 는 {", ".join(MODES)} 중 하나여야 합니다 (받은 값: "{requested}").')
    if requested == "auto":
        return "live" if settings().get("OPENAI_API_KEY") else "replay"
    return requested


def decided_by() -> str:
    """모드를 정한 것의 이름: 환경 변수가 있으면 "환경 변수 COURSE_MODE", 아니면 노트북의 "MODE"."""
    return f"환경 변수 {MODE_ENV}" if MODE_ENV in os.environ else "MODE"


def replay_advice() -> str:
    """기록으로 계속하는 방법. COURSE_MODE 가 정했으면 노트북의 MODE 를 바꿔도 소용없으므로 그 변수를 말합니다."""
    if MODE_ENV in os.environ:
        return (f'환경 변수 {MODE_ENV}={os.environ[MODE_ENV]} 이 노트북의 MODE 보다 우선합니다. '
                f"{MODE_ENV}=replay 로 바꾸면(또는 지우고 MODE = \"replay\") 기록된 응답으로 끝까지 따라갈 수 있습니다.")
    return ('MODE = "replay" 로 바꾸면 기록된 응답으로 이 노트북을 끝까지 따라갈 수 있고, MODE = "local" 이면 키 없이 '
            "이 컴퓨터의 오픈 웨이트 모델로 직접 실행합니다.")


def base_url(found: dict) -> str:
    return found.get("OPENAI_BASE_URL") or OPENAI_URL


def where(url: str) -> str:
    """주소의 호스트(와 포트)만: user:password@ 같은 주소 속 비밀은 화면과 기록에 남기지 않습니다."""
    parts = urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


def ask_for_key() -> str:
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
            f"API 키가 없습니다 ({decided_by()} 가 실제 API 를 쓰는 모드를 골랐습니다). OPENAI_API_KEY 환경 변수나 "
            f"저장소 최상위의 .env 파일에 키를 넣거나, {replay_advice()}"
        )
    return key.strip()


def jupyter_shell():
    """노트북(IPython) 안이면 그 셸, 아니면 None: 셀 실행과 오류 표시에 훅을 거는 곳 (recordings, explain)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()
