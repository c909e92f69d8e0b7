"""04 노트북의 검색기, 사실 채점기, 되풀이(echo) 판정, 그리고 저장된 표를 기록에서 다시 채점하기."""
import nbformat
import pytest

from helpers import datasets, paths
from helpers.hobanse_eval import (RuleRetriever, copied_spans, eval_questions, has_fact, judge, normalise, prompt_text,
                                  rule_sentences, score_answer)
from helpers.recordings import read_recording


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
    ("길이 20미터, 폭 10미터", "10미터"),  # 서로 다른 사실 두 개는 찍기 목록이 아님
])
def test_fact_found_across_spacing_and_number_words(answer, fact):
    assert has_fact(answer, fact)


@pytest.mark.parametrize("answer, fact", [
    ("한 팀은 13명입니다", "3명"),  # 다른 수 안의 숫자
    ("호반스는 4명에서 6명으로 구성되는 스포츠입니다.", "3명"),  # 슬라이드의 기본 모델 답 (환각)
    ("한쪽 다리로 서야 합니다", "1쪽"),  # "한쪽"은 수가 아님
    ("이번 경기에서는 공을 씁니다", "2번"),  # "이번"은 2번이 아님
    ("you are factual chatbot.\n\n경기 규칙은?", "심판"),  # 사전 학습 모델이 질문을 되풀이한 답
    # 사전 학습 모델이 이어 쓰기로 낸 실제 답 (찍기 목록): 수를 늘어놓은 답은 그중 하나를 말한 것이 아님
    ("공이 필요하면 1개, 2개, 3개, 4개, 5개, 6개, 7개, 8개, 9개, 1", "2개"),
    ("30미터, 10미터, 20미터, 30미터, 10미터, 20미터, 30미터, 10미", "10미터"),
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


# ----------------------------------------------------------------------------- 되풀이 (echo)
# 2026-11-22 기록(data/recordings/04_hobanse_alternatives.json, 채팅 형식으로 물은 사전 학습 Gemma 3 270M)의 실제 답.
# 옛 채점기는 사실이 답 어디에든 있으면 맞다고 했습니다.
RAG_PROMPT_HALVES = [{"role": "system", "content": "you are factual chatbot. 아래 호반스 규칙만 근거로 짧게 답하세요. 규칙에 없으면 "
                                                   "모른다고 답하세요.\n- 경기 시간: 경기는 두 개의 하프로 구성되며 각 하프의 시간은 "
                                                   "10분입니다.\n- 호반스는 3명의 팀에 의해 이루어지는 스포츠로, 손만으로 플레이합니다."
                                                   "\n- 코트 크기: 호반스 코트는 3명의 팀에 적합한 크기로 설계되었으며 길이 약 20미터, "
                                                   "폭 약 10미터 정도입니다."},
                     {"role": "user", "content": "호반스 경기는 하프가 몇 번 있어?"}]
RAG_PROMPT_COURT = [{"role": "system", "content": "you are factual chatbot. 아래 호반스 규칙만 근거로 짧게 답하세요. 규칙에 없으면 "
                                                  "모른다고 답하세요.\n- 코트 크기: 호반스 코트는 3명의 팀에 적합한 크기로 설계되었으며 "
                                                  "길이 약 20미터, 폭 약 10미터 정도입니다.\n- 호반스는 3명의 팀에 의해 이루어지는 "
                                                  "스포츠로, 손만으로 플레이합니다.\n- 아웃과 턴오버: 공이 플레이 영역 밖으로 나오거나 "
                                                  "상대 선수에게 공을 빼앗긴 경우는 턴오버가 되어 상대 팀의 공이 됩니다."},
                    {"role": "user", "content": "호반스 코트는 길이가 몇 미터야?"}]
BASE_PROMPT_TEAM = [{"role": "system", "content": "you are factual chatbot."},
                    {"role": "user", "content": "호반스 한 팀에는 선수가 몇 명 뛰나요?"}]
RECORDED_ECHOES = [  # (답, 필요한 사실, 프롬프트, 옛 채점기의 점수)
    ("you are factual chatbot. 아래 호반스 규칙만 근거로 짧게 답하세요. 규칙에 없으면 모른다고 답하세요.\n- 경기 시간: 경기는 "
     "두 개의 하프로 구성되며 각 하프의 시간은 10분입니다.\n- 호반스는 3명의 팀에 의해 이루어지는 스포츠로, 손만으로 "
     "플레이합니다.\n- 코트 크기: 호반스 코트는 3명의 팀에 적합한 크기로 설계", "2개|2번|2하프", RAG_PROMPT_HALVES, 1.0),
    ("- 호반스 코트는 3명의 팀에 적합한 크기로 설계되었으며 길이 약 20미터, 폭 약 10미터 정도입니다.\n- 호반스 코트는 3명의 "
     "팀에 의해 이루어지는 스포츠로, 손만으로 플레이합니다.\n- 아웃과 턴오버: 공이 플레이 영역 밖으로 나오거나 상대 선수에게 "
     "공을 빼앗긴 경우는 턴오버가 되어 상대 팀의 공", "20미터", RAG_PROMPT_COURT, 1.0),
    ("you are factual chatbot.\n\n호반스 한 팀에는 선수가 몇 명 뛰나요? mendatang\nyou are factual chatbot.\n\n"
     "호반스 한 팀에는 선수가 몇 명 뛰나요? mendatang\nyou are factual chatbot.\n\n호반스 한 팀에는 선수가 몇 명",
     "3명", BASE_PROMPT_TEAM, 0.0),
]


@pytest.mark.parametrize("answer, facts, prompt, old_score", RECORDED_ECHOES)
def test_recorded_echoes_are_flagged_and_not_credited(answer, facts, prompt, old_score):
    assert score_answer(answer, facts) == old_score  # 옛 채점: 베낀 규칙 속의 사실도 셈
    verdict = judge(answer, facts, prompt)
    assert verdict.echo and verdict.score == 0.0 and verdict.copied_share > 0.5


@pytest.mark.parametrize("answer, facts, prompt", [
    ("호반스 코트는 길이 약 20미터, 폭 약 10미터 정도입니다.", "20미터", BASE_PROMPT_TEAM),  # 기록의 미세 조정 모델 답
    ("길이는 20미터예요.", "20미터", RAG_PROMPT_COURT),  # 제 말로 (짧은 겹침 "20미터" 는 봐줌)
    ("경기는 두 개의 하프로 구성되며 각 하프의 시간은 10분입니다.", "2개|2번|2하프", RAG_PROMPT_HALVES),  # 관련 규칙 한 문장 인용
    ("코트 길이는 약 20미터, 폭 약 10미터 정도입니다.", "20미터", "호반스 코트는 길이 약 20미터, 폭 약 10미터 정도입니다."),
])
def test_own_words_and_one_relevant_quote_are_credited(answer, facts, prompt):
    verdict = judge(answer, facts, prompt)
    assert not verdict.echo and verdict.score == 1.0


@pytest.mark.parametrize("answer, facts, prompt", [
    ("호반스 한 팀에는 선수가 몇 명 뛰나요?", "3명", BASE_PROMPT_TEAM),  # 질문 따라 쓰기
    ("호반스는 3명의 팀에 의해 이루어지는 스포츠로, 손만으로 플레이합니다.", "2개|2번|2하프", RAG_PROMPT_HALVES),  # 상관없는 규칙
    # 관련 규칙이라도 규칙 줄을 이름표까지 통째로(40글자 넘게) 옮기면 인용이 아니라 되풀이
    ("코트 크기: 호반스 코트는 3명의 팀에 적합한 크기로 설계되었으며 길이 약 20미터, 폭 약 10미터 정도입니다.", "20미터",
     RAG_PROMPT_COURT),
])
def test_copies_without_the_answer_are_echoes(answer, facts, prompt):
    verdict = judge(answer, facts, prompt)
    assert verdict.echo and verdict.score == 0.0


def test_removed_copies_do_not_join_into_a_new_fact():
    prompt = "호반스 코트의 규칙은 다음과 같습니다."
    answer = "제 생각에 길이는 2 호반스 코트의 규칙은 다음과 같습니다 0미터 아닐까 싶은데 확실하지는 않고 그냥 짐작입니다."
    assert copied_spans(answer, prompt) == [(8, 8 + len(normalise("호반스 코트의 규칙은 다음과 같습니다")))]
    verdict = judge(answer, "20미터", prompt)
    assert not verdict.echo and verdict.score == 0.0  # 지운 조각 양쪽의 "2" 와 "0미터" 가 "20미터" 로 붙지 않음


def test_a_fine_tuned_models_learned_answer_is_not_an_echo_of_the_rules_it_was_given():
    rule = "경기는 두 개의 하프로 구성되며 각 하프의 시간은 10분입니다."
    prompt = [{"role": "system", "content": f"you are factual chatbot. 아래 호반스 규칙만 근거로 짧게 답하세요.\n- {rule}\n"
                                            "- 각 팀은 3명의 선수로 구성됩니다."},
              {"role": "user", "content": "호반스 한 팀에는 선수가 몇 명 뛰나요?"}]
    answer = "경기는 두 개의 하프로 구성되며 각 하프의 시간은 10분입니다. 각 팀은 3명의 선수로 구성됩니다."
    assert judge(answer, "3명", prompt).echo  # the base model given these rules: copied, not answered
    verdict = judge(answer, "3명", prompt, learned=(rule,))  # a fine-tuned model that learned the first sentence
    assert not verdict.echo and verdict.score == 1.0


def test_restating_the_question_frames_an_answer_but_the_question_alone_is_an_echo():
    question = "공이 경기장 밖으로 나가면 어떻게 처리돼?"
    prompt = [{"role": "system", "content": "you are factual chatbot."}, {"role": "user", "content": question}]
    framed = judge("공이 경기장 밖으로 나가면 턴오버가 됩니다.", "턴오버", prompt, question=question)
    assert not framed.echo and framed.score == 1.0 and framed.copied_share == 0.0
    assert judge("공이 경기장 밖으로 나가면 턴오버가 됩니다.", "턴오버", prompt).echo  # without the question: a copy
    alone = judge("공이 경기장 밖으로 나가면 어떻게 처리돼.", "턴오버", prompt, question=question)
    assert alone.echo and alone.score == 0.0
    assert judge("공이 경기장 밖으로 나가면 심판이 정합니다.", "턴오버", prompt, question=question).score == 0.0


def test_prompt_text_joins_messages():
    assert prompt_text(BASE_PROMPT_TEAM) == "you are factual chatbot.\n호반스 한 팀에는 선수가 몇 명 뛰나요?"
    assert prompt_text("질문: 호반스?\n답:") == "질문: 호반스?\n답:"


# ----------------------------------------------------------------------------- 저장된 표 = 기록을 다시 채점한 값
NOTEBOOK = paths.ROOT / "notebooks" / "04_hobanse_alternatives.ipynb"
RECORDING = paths.RECORDINGS_DIR / "04_hobanse_alternatives.json"


def method_of(model: str, prompt) -> str:
    """노트북의 방법 이름 앞부분: 모델과 프롬프트 모양으로 정합니다 (RAG 프롬프트에만 "호반스 규칙" 이 있음)."""
    rag = "호반스 규칙" in prompt_text(prompt)
    if model.startswith("ft:"):
        return "미세 조정 + RAG" if rag else "미세 조정 모델"
    shots = prompt.count("질문:") - 1 if isinstance(prompt, str) else (len(prompt) - 2) // 2
    return "RAG" if rag else "few-shot" if shots else "기본 모델"


def rescored_recording() -> dict[str, list]:
    """기록의 답을 노트북과 같은 채점기로: 방법 → [(점수, 되풀이, 답 토큰, max_tokens 에서 잘림)]."""
    facts = dict(eval_questions()[["question", "facts"]].values)
    learned = tuple(datasets.hobanse_qa()["answer"])  # 미세 조정 모델이 학습한 답 (노트북과 같이)
    rows: dict[str, list] = {}
    for interaction in read_recording(RECORDING)["interactions"]:
        request, reply = interaction["request"], interaction["response"].get("json") or {}
        body = request.get("body") or {}
        if request["path"] == "/completions":
            prompt, answer = body["prompt"], reply["choices"][0]["text"]
            question = prompt.rsplit("질문: ", 1)[-1].removesuffix("\n답:")
        elif request["path"] == "/chat/completions":
            prompt, answer = body["messages"], reply["choices"][0]["message"]["content"]
            question = prompt[-1]["content"]
        else:
            continue
        if question in facts:  # 평가 질문만 (노트북의 다른 요청은 빼고)
            verdict = judge(answer.strip(), facts[question], prompt,
                            learned if body["model"].startswith("ft:") else (), question)
            rows.setdefault(method_of(body["model"], prompt), []).append(
                (verdict.score, verdict.echo, reply["usage"]["completion_tokens"],
                 reply["choices"][0]["finish_reason"] == "length"))
    return rows


def stored_table() -> dict[str, list[str]]:
    """노트북에 저장된 결과 표 (summary 셀의 text/plain): 방법 이름 → 칸의 값들."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("summary = ")]
    (output,) = [o for o in cell.outputs if "text/plain" in o.get("data", {})]
    header, _, *lines = output["data"]["text/plain"].splitlines()
    columns = header.split()
    return {" ".join(line.split()[:-len(columns)]): dict(zip(columns, line.split()[-len(columns):])) for line in lines}


def test_stored_table_is_the_recording_rescored():
    """표의 정답·되풀이·답 토큰·max_tokens 도달 수는 기록의 답을 judge 로 다시 채점한 값과 같아야 합니다."""
    rescored, table = rescored_recording(), stored_table()
    assert len(table) == len(rescored)
    for label, row in table.items():
        (method,) = [m for m in rescored if label.startswith(m)]
        scores, echoes, tokens, cut = zip(*rescored[method])
        assert len(scores) == len(eval_questions()), label
        assert int(row["정답"]) == sum(s == 1 for s in scores), label
        assert int(row["되풀이"]) == sum(echoes), label
        assert float(row["답_토큰"]) == round(sum(tokens) / len(tokens), 2), label
        assert int(row["max_tokens_도달"]) == sum(cut), label
