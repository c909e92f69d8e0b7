"""04 노트북의 검색기와 사실 채점기."""
import pytest

from helpers import datasets
from helpers.hobanse_eval import RuleRetriever, eval_questions, has_fact, normalise, rule_sentences, score_answer


@pytest.mark.parametrize("answer, fact", [
    ("호반스는 3명의 팀이 수행하는 스포츠입니다.", "3명"),
    ("한 팀은 세 명입니다", "3명"),
    ("한 팀은 세명이에요", "3 명"),
    ("공은 두 개를 씁니다", "2개"),
    ("길이는 20 m 정도", "20미터"),
    ("코트 길이 약 이십 미터", "20미터"),
    ("각 하프는 10 분입니다", "10분"),
    ("센터서클에서 시작", "센터 서클"),
    ("하프는 두 번 있습니다", "2개|2번"),
])
def test_fact_found_across_spacing_and_number_words(answer, fact):
    assert has_fact(answer, fact)


@pytest.mark.parametrize("answer, fact", [
    ("한 팀은 13명입니다", "3명"),  # 다른 수 안의 숫자
    ("호반스는 4명에서 6명으로 구성되는 스포츠입니다.", "3명"),  # 슬라이드의 기본 모델 답 (환각)
    ("한쪽 다리로 서야 합니다", "1쪽"),  # "한쪽"은 수가 아님
    ("이번 경기에서는 공을 씁니다", "2번"),  # "이번"은 2번이 아님
    ("you are factual chatbot.\n\n경기 규칙은?", "심판"),  # 사전 학습 모델이 질문을 되풀이한 답
])
def test_fact_not_found_where_it_is_not(answer, fact):
    assert not has_fact(answer, fact)


def test_normalise_keeps_ordinary_words():
    assert normalise("한쪽 다리로 세상을") == "한쪽다리로세상을"
    assert normalise("세 명, 두 개, 열 분") == "3명,2개,10분"


def test_score_is_the_share_of_required_facts():
    assert score_answer("길이 약 20미터, 폭 약 10미터", "20미터;10미터") == 1.0
    assert score_answer("길이 약 20미터", "20미터;10미터") == 0.5
    assert score_answer("모릅니다", "20미터") == 0.0


def test_rule_sentences_split_list_items_and_sentences():
    sentences = rule_sentences(datasets.hobanse_rules())
    assert "팀과 선수: 각 팀은 3명의 선수로 구성됩니다." in sentences
    assert not any(s.startswith("#") or s.startswith("- ") for s in sentences)
    assert len(sentences) == 11  # 개요 문장 2개 + 규칙 9줄


@pytest.mark.parametrize("question, expected", [
    ("하프 하나는 몇 분 동안 진행돼?", "경기 시간"),
    ("호반스 경기를 관리하는 사람은 누구야?", "심판"),
    ("코트 폭은 얼마나 돼?", "코트 크기"),
    ("득점한 다음에는 어디에서 경기를 다시 시작해?", "시작 및 재개"),
])
def test_retriever_ranks_the_relevant_rule_first(question, expected):
    retriever = RuleRetriever(rule_sentences(datasets.hobanse_rules()))
    assert retriever.search(question, k=1)[0].startswith(expected)
    scores = retriever.scores(question)
    assert list(scores) == sorted(scores, reverse=True) and len(scores) == len(retriever.sentences)


def test_eval_questions_are_held_out_and_answerable_from_the_rules():
    questions = eval_questions()
    assert 20 <= len(questions) <= 30
    trained = set(datasets.hobanse_qa().question.map(normalise))
    assert not trained & set(questions.question.map(normalise))
    assert questions.facts.str.len().min() > 0
