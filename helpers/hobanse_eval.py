"""04 노트북의 도구: 호반스 규칙에서 관련 문장 찾기(RAG의 R)와 답에 필요한 사실이 있는지 채점하기.

- rule_sentences / RuleRetriever: 규칙 글을 문장으로 나누고, 질문과 가장 비슷한 문장을 TF-IDF로 찾습니다.
  한국어는 띄어쓰기가 들쭉날쭉해서("몇명"/"몇 명") 단어 대신 글자 2~3개 묶음(char n-gram)을 셉니다.
- has_fact / score_answer: 답에 "3명", "20미터" 같은 사실이 들어 있는지 봅니다. 띄어쓰기를 무시하고
  "세 명" → "3명", "두 개" → "2개", "20m" → "20미터" 처럼 수 표현을 맞춘 뒤 비교합니다. 같은 단위의 수를 셋 이상
  늘어놓은 답("1개, 2개, 3개, …")은 찍기 목록이라 그 수를 말한 것으로 보지 않습니다.
- judge: 답이 프롬프트를 되풀이(echo)했는지 가려내고, 답이 스스로 말한 사실만 셉니다 (아래 "되풀이" 절의 규칙).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
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


GUESS_LIST = 3  # 같은 단위의 서로 다른 수를 이만큼 늘어놓은 답("1개, 2개, 3개, …")은 그 수를 말한 것이 아님


def has_fact(answer: str, fact: str) -> bool:
    """fact 의 대안("2개|2번") 중 하나라도 답에 있으면 True. "3명"은 "13명" 안에서 찾지 않고, 같은 단위의 수를
    GUESS_LIST 개 이상 늘어놓은 답에서는 그 단위의 수를 찾지 않습니다 (찍기 목록)."""
    text = normalise(answer)
    for option in fact.split("|"):
        wanted = normalise(option)
        number = re.fullmatch(r"(\d+)(\D+)", wanted)
        if number and len(set(re.findall(rf"(?<!\d)(\d+){re.escape(number.group(2))}", text))) >= GUESS_LIST:
            continue
        guard = r"(?<!\d)" if wanted[:1].isdigit() else ""
        if re.search(guard + re.escape(wanted), text):
            return True
    return False


def score_answer(answer: str, facts: str) -> float:
    """필요한 사실(";" 로 구분) 중 답에 들어 있는 비율. 1.0 이면 정답으로 봅니다."""
    required = [f for f in facts.split(";") if f.strip()]
    return sum(has_fact(answer, f) for f in required) / len(required)


# ----------------------------------------------------------------------------- 되풀이 (echo)
# 규칙: 답과 프롬프트(지시, 질문, few-shot 예시, 검색한 규칙 문장 — 모델이 받은 글 전체)를 띄어쓰기를 빼고 수 표현을
# 맞춘 뒤, 답을 앞에서부터 읽으며 프롬프트에 그대로 있는 COPY_MIN 글자 이상의 가장 긴 조각을 "베낀 조각"으로 찾습니다
# (그보다 짧은 겹침, 예: "호반스 코트", "10미터" 는 제 말로 답해도 생기므로 봐줍니다). 베낀 조각 중 필요한 사실이 들어
# 있고 QUOTE_MAX 글자 이하인 첫 조각 하나는 관련 구절의 인용으로 인정합니다 (규칙 한 문장쯤: "경기는 두 개의 하프로
# 구성되며 각 하프의 시간은 10분입니다."). 나머지 베낀 조각은 답에서 지우고, 남은 글에서만 사실을 찾습니다. 지운
# 글자가 답의 ECHO_SHARE 이상이면 그 답은 되풀이(echo)이고 점수는 0 입니다: 질문을 따라 쓴 답, 지시문과 규칙 목록을
# 통째로 옮긴 답, 다른 질문의 예시 답을 가져온 답, 사실과 상관없는 규칙 줄을 베낀 답이 여기에 걸립니다.
# 미세 조정 모델에는 그 모델이 학습한 답(learned)을 함께 줍니다: 학습한 답에도 있는 조각은 모델이 외운 제 말이지 프롬프트를
# 베낀 것이 아니므로 지우지 않습니다 (학습 답이 규칙 문장과 같아서, 미세 조정 + RAG 의 답이 되풀이로 잘못 걸리지 않도록).
# 질문(question)을 되받아 쓴 조각("공이 경기장 밖으로 나가면 턴오버가 됩니다")은 답의 틀이라 베낀 글자로 세지 않습니다 (사실은
# 그 조각 밖에서만 찾음). 다만 질문만 되풀이하고 제 말이 없는 답은 되풀이입니다.
COPY_MIN = 10  # 띄어쓰기를 뺀 글자 수
QUOTE_MAX = 40
ECHO_SHARE = 0.5


@dataclass(frozen=True)
class Judgement:
    score: float  # 필요한 사실 중 답이 스스로 말한 비율 (되풀이면 0)
    echo: bool  # 답의 절반 이상이 인용으로 인정받지 못한 베낀 글
    copied_share: float  # 인정받지 못한 베낀 글자의 비율


def prompt_text(prompt: str | list[dict]) -> str:
    """이어 쓰기의 prompt 문자열이나 채팅의 messages 목록 → 모델이 받은 글 하나."""
    return prompt if isinstance(prompt, str) else "\n".join(message["content"] for message in prompt)


def copied_spans(answer: str, prompt: str | list[dict]) -> list[tuple[int, int]]:
    """normalise(answer) 안에서 프롬프트에 그대로 있는 COPY_MIN 글자 이상의 가장 긴 조각들 (시작, 끝)."""
    text, source = normalise(answer), normalise(prompt_text(prompt))
    spans, start = [], 0
    while start + COPY_MIN <= len(text):
        end = start + COPY_MIN
        if text[start:end] not in source:
            start += 1
            continue
        while end < len(text) and text[start:end + 1] in source:
            end += 1
        spans.append((start, end))
        start = end
    return spans


def judge(answer: str, facts: str, prompt: str | list[dict], learned: tuple[str, ...] = (),
          question: str = "") -> Judgement:
    """답이 스스로 말한 사실만 셉니다. 규칙은 위 설명 (COPY_MIN, QUOTE_MAX, ECHO_SHARE, learned, question)."""
    text = normalise(answer)
    known, asked = [normalise(item) for item in learned], normalise(question)
    spans = [(start, end) for start, end in copied_spans(answer, prompt)
             if not any(text[start:end] in item for item in known)]
    restated = {span for span in spans if asked and text[span[0]:span[1]] in asked}
    quote = next((span for span in spans if span not in restated and span[1] - span[0] <= QUOTE_MAX
                  and score_answer(text[span[0]:span[1]], facts) > 0), None)
    own, copied, last = [], 0, 0
    for start, end in (span for span in spans if span != quote):
        own.append(text[last:start])
        copied, last = copied + (0 if (start, end) in restated else end - start), end
    own.append(text[last:])
    share = copied / len(text) if text else 0.0
    only_the_question = bool(restated) and len(re.sub(r"[\W_]", "", "".join(own))) < 2 and quote is None
    echo = share >= ECHO_SHARE or only_the_question
    # 지운 자리를 "·" 로 이어 붙여, 지운 조각 양쪽의 글자가 붙어 새 사실("2" + "0미터")이 되지 않게 합니다.
    return Judgement(0.0 if echo else score_answer("·".join(own), facts), echo, round(share, 3))


def eval_questions() -> pd.DataFrame:
    """학습 15쌍과 다르게 물은 평가 질문 (question, facts). facts: ";" 는 모두 필요, "|" 는 그중 하나."""
    return pd.read_csv(EVAL_FILE, encoding="utf-8")
