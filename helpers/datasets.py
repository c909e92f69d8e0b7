"""과정에서 쓰는 데이터를 읽는 함수들. 데이터 파일은 저장소의 data/ 폴더에 있습니다."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import fetch_20newsgroups
from sklearn.utils import Bunch, check_random_state

from helpers.errors import CourseError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
HOBANSE_DIR = DATA_DIR / "hobanse"
NEWSGROUPS_DIR = DATA_DIR / "newsgroups"
NEWSGROUPS_CATEGORIES = ["rec.sport.baseball", "rec.sport.hockey"]
NEWSGROUPS_SOURCES = {
    "20newsgroups": "scikit-learn fetch_20newsgroups(subset='train')의 실제 Usenet 글, "
                    "rec.sport.baseball/rec.sport.hockey 1197개 (야구 597, 하키 600)",
    "sample": "이 과정이 직접 쓴 Usenet 형식의 야구/하키 글 100개 (야구 50, 하키 50), "
              "data/newsgroups/sample.jsonl — 실제 Usenet 글이 아닙니다",
}


def hobanse_rules() -> str:
    """호반스 규칙 (강의 슬라이드의 최종 개정판, 종목 이름을 호반스로 통일)."""
    return (HOBANSE_DIR / "rules.md").read_text(encoding="utf-8")


def hobanse_qa() -> pd.DataFrame:
    """학습용 질문/답변 15쌍 (question, answer)."""
    return pd.read_csv(HOBANSE_DIR / "qa.csv", encoding="utf-8")


def slide_quotes() -> pd.DataFrame:
    """강의 슬라이드(2023)의 Playground 화면에 찍힌 모델 답 (question, answer, model_in_slides).

    지금 모델의 답이 아니므로 노트북은 늘 "수업 슬라이드의 답" 이라는 제 이름의 열로만 보여 줍니다.
    """
    quotes = json.loads((HOBANSE_DIR / "slide_quotes.json").read_text(encoding="utf-8"))["quotes"]
    return pd.DataFrame(quotes)[["question", "answer", "model_in_slides"]]


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


def newsgroups_sample() -> Bunch:
    """저장소에 든 샘플 글을 fetch_20newsgroups 와 같은 모양(data, target, target_names)으로.

    fetch_20newsgroups(shuffle=True, random_state=42) 처럼 섞습니다: 순서는 언제나 같고, 종류별로 몰려 있지 않습니다.
    """
    path = NEWSGROUPS_DIR / "sample.jsonl"
    posts = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    order = check_random_state(42).permutation(len(posts))  # scikit-learn 이 섞는 방법과 같음
    posts = [posts[i] for i in order]
    return Bunch(
        data=[post["text"] for post in posts],
        target=np.array([NEWSGROUPS_CATEGORIES.index(post["category"]) for post in posts]),
        target_names=list(NEWSGROUPS_CATEGORIES),
        filenames=np.array([f"{path.relative_to(DATA_DIR.parent)}:{i + 1}" for i in order]),  # 파일:줄 번호
        DESCR="이 과정이 직접 쓴 야구/하키 Usenet 형식 글 (실제 20newsgroups 글이 아님). "
              "머리말 From/Subject/Organization/Lines, 인용 답글과 서명이 있는 글도 있습니다.",
    )


def load_newsgroups(source: str = "auto", data_home=None) -> tuple[Bunch, str]:
    """야구/하키 글을 읽어 (bunch, 실제로 쓴 출처) 를 돌려줍니다.

    - "20newsgroups": 실제 데이터 (학습용 1197개). 없으면 내려받고, 안 되면 CourseError.
    - "auto": 실제 데이터가 이미 내려받아져 있으면 그것, 아니면 샘플. 인터넷은 쓰지 않습니다.
    - "sample": 저장소의 샘플 (newsgroups_sample).
    data_home 은 scikit-learn 데이터 폴더 (None 이면 기본값 ~/scikit_learn_data).
    """
    real = dict(data_home=data_home, subset="train", categories=NEWSGROUPS_CATEGORIES,
                shuffle=True, random_state=42)
    if source == "sample":
        return newsgroups_sample(), "sample"
    if source == "auto":
        try:
            return fetch_20newsgroups(**real, download_if_missing=False), "20newsgroups"
        except OSError:  # 캐시에 없음: 내려받으려 하지 않고 샘플로
            return newsgroups_sample(), "sample"
    if source == "20newsgroups":
        try:
            return fetch_20newsgroups(**real), "20newsgroups"
        except Exception as err:  # 인터넷 없음, 내려받기 실패, 깨진 파일 …
            raise CourseError(
                f"실제 20newsgroups 데이터를 읽지도 내려받지도 못했습니다 ({type(err).__name__}: {err}). "
                '인터넷이 되는 곳에서 한 번 내려받아 두거나, source="sample" (저장소의 샘플) 또는 '
                'source="auto" (있으면 실제 데이터, 없으면 샘플) 를 쓰세요.') from err
    raise CourseError(f'source 는 "auto", "20newsgroups", "sample" 중 하나여야 합니다 (받은 값: {source!r}).')
