"""저장소 안의 자리: 노트북을 어느 폴더에서 실행하든 같은 곳을 가리키도록 저장소 최상위 기준으로 정합니다."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS_DIR = ROOT / "data" / "recordings"
OUTPUT_DIR = ROOT / "output"  # 실습 중에 생기는 파일(JSONL, 결과 CSV)을 두는 한 곳. .gitignore 에 있어 커밋되지 않음


def output_file(name: str) -> Path:
    """OUTPUT_DIR 안의 파일 경로 (폴더가 없으면 만듦)."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUTPUT_DIR / name


def shown(path) -> str:
    """화면에 보여 줄 경로: 저장소 안이면 최상위 기준 상대 경로 (컴퓨터마다 다른 앞부분을 숨김)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
