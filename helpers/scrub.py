"""기록, 오류 설명, 화면 출력에서 비밀과 계정 정보를 지웁니다.

두 가지로 지웁니다: connect() 가 알려 준 실제 값(키, 조직, 프로젝트, 주소 속 비밀번호)은 모양과 상관없이,
그리고 모르는 값이라도 키나 계정 ID 처럼 생긴 문자열은 모양으로.
"""
from __future__ import annotations

import re

# connect() 가 설정에서 읽은 비밀 값들. 한 번 알려 주면 이 과정의 모든 Scrubber 가 지웁니다.
CONFIGURED_SECRETS: set[str] = set()
MIN_SECRET_LENGTH = 4  # 이보다 짧은 값은 보통 글자와 겹쳐 오히려 글을 망가뜨리므로 모양 규칙에 맡깁니다


def remember_secrets(*values: str | None) -> None:
    CONFIGURED_SECRETS.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


class Scrubber:
    """키, Bearer 토큰, 주소 속 사용자:비밀번호, 조직/사용자/프로젝트 ID, 미세 조정 모델 이름 속 조직 이름을 지웁니다."""

    PATTERNS = [
        (re.compile(r"sk-[A-Za-z0-9_\-]{16,}"), "sk-REDACTED"),
        (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.]{8,}"), r"\1REDACTED"),
        (re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]{8,}"), r"\1REDACTED"),
        (re.compile(r"(://)[^/\s@\"']+@"), r"\1REDACTED@"),  # https://user:pw@host → https://REDACTED@host
        (re.compile(r"org-[A-Za-z0-9]{12,}"), "org-REDACTED"),
        (re.compile(r"user-[A-Za-z0-9]{12,}"), "user-REDACTED"),
        (re.compile(r"proj_[A-Za-z0-9]{12,}"), "proj_REDACTED"),
        # ft:<기본 모델>:<조직 이름>:<접미사>:<id> 의 조직 이름 (로컬 서버의 "local" 은 조직이 아니므로 그대로)
        (re.compile(r"\b(ft:[^:\s\"']+:)(?!your-org:|local:)[^:\s\"']+:"), r"\1your-org:"),
    ]

    def __init__(self, secrets=()):
        known = CONFIGURED_SECRETS | {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        self.secrets = sorted(known, key=len, reverse=True)  # 긴 것부터: 한 비밀이 다른 비밀을 품어도 남김없이

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
