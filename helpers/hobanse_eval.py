"""04 노트북의 도구: 호반스 규칙에서 관련 문장 찾기(RAG의 R)와 답에 필요한 사실이 있는지 채점하기.

- rule_sentences / RuleRetriever: 규칙 글을 문장으로 나누고, 질문과 가장 비슷한 문장을 TF-IDF로 찾습니다.
  한국어는 띄어쓰기가 들쭉날쭉해서("몇명"/"몇 명") 단어 대신 글자 2~3개 묶음(char n-gram)을 셉니다.
- has_fact / score_answer: 답에 "3명", "20미터" 같은 사실이 들어 있는지 봅니다. 띄어쓰기를 무시하고
  "세 명" → "3명", "두 개" → "2개", "20m" → "20미터" 처럼 수 표현을 맞춘 뒤 비교합니다.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

EVAL_FILE = Path(__file__).resolve().parent.parent / "data" / "hobanse" / "eval_questions.csv"

# ----------------------------------------------------------------------------- 검색 (retrieval)


def rule_sentences(rules_text: str) -> list[str]:
    """규칙 글의 목록 줄은 한 줄씩, 나머지 문단은 문장("...다.") 단위로 나눕니다. 제목(#)은 뺍니다."""
    sentences = []
    for line in rules_text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("- "):
            sentences.append(line[2:].strip())
        else:
            sentences += [s.strip() for s in re.split(r"(?<=다\.)\s+", line) if s.strip()]
    return sentences


class RuleRetriever:
    """문장들을 TF-IDF 벡터로 만들어 두고, 질문과 코사인 유사도가 높은 문장 k개를 돌려줍니다."""

    def __init__(self, sentences: list[str]):
        self.sentences = list(sentences)
        self.vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3))
        self.matrix = self.vectorizer.fit_transform(self.sentences)

    def scores(self, question: str) -> pd.Series:
        """모든 문장의 유사도 (높은 순)."""
        similarity = cosine_similarity(self.vectorizer.transform([question]), self.matrix)[0]
        return pd.Series(similarity, index=self.sentences).sort_values(ascending=False, kind="stable")

    def search(self, question: str, k: int = 3) -> list[str]:
        return list(self.scores(question).index[:k])


# ----------------------------------------------------------------------------- 채점 (scoring)

# 고유어 수(와 "십", "이십") + 단위. 뒤에 단위가 바로 붙을 때만 바꿉니다 ("한쪽", "세상"은 그대로).
# 한 글자 한자어 수(일, 이, 삼…)는 넣지 않습니다: "이번 경기", "이점" 이 "2번", "2점" 이 되기 때문입니다.
NUMBER_WORDS = {
    "이십": 20, "스무": 20, "스물": 20, "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9, "하나": 1,
    "한": 1, "두": 2, "둘": 2, "세": 3, "셋": 3, "석": 3, "네": 4, "넷": 4, "열": 10, "십": 10,
}
COUNTERS = "명|개|분|미터|점|번|하프|팀"
_NUMBER_BEFORE_COUNTER = re.compile(f"({'|'.join(NUMBER_WORDS)})(?=({COUNTERS}))")


def normalise(text: str) -> str:
    """비교용: 띄어쓰기를 없애고, 소문자로, 수 표현을 아라비아 숫자로."""
    text = "".join(str(text).split()).lower()
    text = re.sub(r"(\d+)m(?![a-z])", r"\1미터", text)
    return _NUMBER_BEFORE_COUNTER.sub(lambda m: str(NUMBER_WORDS[m.group(1)]), text)


def has_fact(answer: str, fact: str) -> bool:
    """fact 의 대안("2개|2번") 중 하나라도 답에 있으면 True. "3명"은 "13명" 안에서 찾지 않습니다."""
    text = normalise(answer)
    for option in fact.split("|"):
        wanted = normalise(option)
        guard = r"(?<!\d)" if wanted[:1].isdigit() else ""
        if re.search(guard + re.escape(wanted), text):
            return True
    return False


def score_answer(answer: str, facts: str) -> float:
    """필요한 사실(";" 로 구분) 중 답에 들어 있는 비율. 1.0 이면 정답으로 봅니다."""
    required = [f for f in facts.split(";") if f.strip()]
    return sum(has_fact(answer, f) for f in required) / len(required)


def eval_questions() -> pd.DataFrame:
    """학습 15쌍과 다르게 물은 평가 질문 (question, facts). facts: ";" 는 모두 필요, "|" 는 그중 하나."""
    return pd.read_csv(EVAL_FILE, encoding="utf-8")
