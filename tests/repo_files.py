"""저장소의 파일 목록: git 체크아웃이면 git 이 추적하는 파일, ZIP 으로 받은 폴더면 .gitignore 를 뺀 모든 파일."""
from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path


def repository_files(root: Path) -> list[Path]:
    if (root / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
        return [root / name for name in filter(None, listed.decode().split("\0")) if (root / name).is_file()]
    patterns = ignore_patterns(root / ".gitignore")
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not is_ignored(p.relative_to(root).as_posix(), patterns))


def ignore_patterns(gitignore: Path) -> list[str]:
    if not gitignore.is_file():
        return []
    lines = (line.strip() for line in gitignore.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """.gitignore 의 이 저장소가 쓰는 모양(이름, *.확장자, 폴더/, 경로/*.json)만 따릅니다: git 이 없는 ZIP 에서 쓸
    규칙이라 (pathspec 같은 라이브러리는 requirements 에 없고, 이 몇 가지 모양이면 충분)."""
    parts = relative.split("/")
    if parts[0] == ".git":
        return True
    for pattern in patterns:
        body = pattern.strip("/")
        if "/" in body:  # 저장소 최상위 기준 경로
            if fnmatch.fnmatch(relative, body) or relative.startswith(body + "/"):
                return True
        elif pattern.endswith("/"):  # 어느 깊이든 그 이름의 폴더
            if any(fnmatch.fnmatch(part, body) for part in parts[:-1]):
                return True
        elif any(fnmatch.fnmatch(part, body) for part in parts):
            return True
    return False
