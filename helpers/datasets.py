"""과정에서 쓰는 데이터를 읽는 함수들. 데이터 파일은 저장소의 data/ 폴더에 있습니다."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
HOBANSE_DIR = DATA_DIR / "hobanse"


def hobanse_rules() -> str:
    """호반스 규칙 (강의 슬라이드의 최종 개정판, 종목 이름을 호반스로 통일)."""
    return (HOBANSE_DIR / "rules.md").read_text(encoding="utf-8")


def hobanse_qa() -> pd.DataFrame:
    """학습용 질문/답변 15쌍 (question, answer)."""
    return pd.read_csv(HOBANSE_DIR / "qa.csv", encoding="utf-8")


def hobanse_chat_examples(system_message: str = "you are factual chatbot.") -> list[dict]:
    """15쌍을 채팅 미세 조정 형식으로. 02 노트북에서 한 줄씩 만들어 본 변환과 같습니다."""
    return [
        {"messages": [
            {"role": "system", "content": system_message},
            {"role": "user", "content": row.question},
            {"role": "assistant", "content": row.answer},
        ]}
        for row in hobanse_qa().itertuples()
    ]
