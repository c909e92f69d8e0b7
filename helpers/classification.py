"""야구/하키 분류 실습(노트북 05~08)이 함께 쓰는 함수들.

- 데이터 고르기: 재생 모드에서는 기록을 만들 때 쓴 데이터를, 아니면 DATASET 매개변수대로 (이유와 함께)
- 옛 `openai tools fine_tunes.prepare_data` 가 하던 일을 한 단계씩: 공백 정리, 너무 긴 예제 빼기,
  구분자와 앞 공백(옛 prompt/completion 형식), 재현 가능한 학습/검증 분할
- 오늘의 채팅 형식으로 바꾸기: [system, user=글, assistant=라벨]. 글을 한 줄로 보이기(post_title)
- logprob → 확률, 그리고 옛 API가 `classification/*` 열로 보여 주던 지표를 scikit-learn 으로 계산

노트북 06이 단계마다 보여 주는 함수와, 07·08이 06을 돌리지 않고도 똑같은 파일을 다시 만드는 함수
(`prepare_split`, `write_chat_files`)가 같은 코드를 쓰므로 세 노트북의 데이터가 어긋나지 않습니다.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, precision_score, recall_score,
                             roc_auc_score)
from sklearn.model_selection import train_test_split

from helpers import chat_data, course, datasets, paths

SEPARATOR = "\n\n###\n\n"  # 옛 형식: 프롬프트가 끝났다는 표시 (prepare_data 가 권하던 구분자)
LABELS = ("baseball", "hockey")
POSITIVE = "baseball"  # 옛 명령의 --classification_positive_class " baseball"
SYSTEM_MESSAGE = "Classify the Usenet post as baseball or hockey. Answer with one word."
HEAD = 300  # 블로그처럼 앞의 300개만 (None 이면 전부). 샘플 데이터는 300개보다 적어 그대로입니다
MAX_PROMPT_TOKENS = 2048  # 옛 도구가 분류 예제에 둔 한도 (2048 토큰)
VALID_SIZE = 0.2  # 검증 세트 비율 (옛 도구도 20%)
RANDOM_STATE = 42  # 같은 값이면 언제나 같은 분할


# ----------------------------------------------------------------------------- 어느 데이터를 쓸까


def dataset_label(source: str) -> str:
    """출처 이름과 설명 한 줄. 기록 머리말에도 이대로 남깁니다: "sample — …" 처럼 출처 이름으로 시작해야
    source_of 가 다시 읽을 수 있습니다."""
    return f"{source} — {datasets.NEWSGROUPS_SOURCES[source]}"


def source_of(label: str | None) -> str | None:
    """dataset_label 이 만든 문자열에서 출처 이름("20newsgroups", "sample")을 꺼냅니다. 모르면 None."""
    name = (label or "").split(" — ")[0].strip()
    return name if name in datasets.NEWSGROUPS_SOURCES else None


def choose_source(requested: str = "auto", mode: str = "auto", recording: str | None = None) -> tuple[str, str]:
    """(load_newsgroups 에 넘길 출처, 그 이유) 를 정합니다.

    재생 모드에서는 기록할 때와 **같은 데이터**여야 업로드와 요청이 기록과 맞습니다. 그래서 기록 머리말의
    dataset 에 적힌 출처를 쓰고, DATASET 매개변수와 다르면 그렇다고 알려 줍니다.
    recording=None 이면(05, 06처럼 API를 부르지 않는 노트북) 모드와 상관없이 DATASET 대로입니다.
    """
    if recording and course.resolve_mode(mode) == "replay":
        recorded = source_of(course.recording_header(recording).get("dataset"))
        if recorded:
            reason = f"재생 모드이고, 기록 data/recordings/{recording}.json 이 이 데이터로 만들어졌기 때문입니다"
            if requested not in ("auto", recorded):
                reason += f' (DATASET = "{requested}" 는 무시: 다른 데이터로는 요청이 기록과 맞지 않습니다)'
            return recorded, reason
    if requested == "auto":
        return "auto", ""  # 실제로 무엇을 썼는지는 읽은 뒤에 압니다 (load_sports)
    return requested, f'DATASET = "{requested}" 로 정했기 때문입니다'


def load_sports(requested: str = "auto", mode: str = "auto", recording: str | None = None):
    """데이터를 읽고 (bunch, 쓴 출처, 이유) 를 돌려줍니다. 노트북은 이유를 그대로 출력합니다."""
    source, reason = choose_source(requested, mode, recording)
    bunch, used = datasets.load_newsgroups(source)
    if source == "auto":
        reason = ("DATASET = \"auto\" 이고 scikit-learn 캐시에 실제 20newsgroups 데이터가 있기 때문입니다"
                  if used == "20newsgroups" else
                  "DATASET = \"auto\" 인데 이 컴퓨터에 실제 20newsgroups 데이터가 내려받아져 있지 않아서, "
                  "인터넷 없이도 돌도록 저장소에 들어 있는 샘플을 씁니다")
    return bunch, used, reason


# ----------------------------------------------------------------------------- 옛 prepare_data 의 단계들


def to_dataframe(bunch) -> pd.DataFrame:
    """쿡북처럼 prompt(글) / completion(라벨) 표로. 라벨은 'rec.sport.baseball' 의 마지막 조각 'baseball'."""
    labels = [bunch.target_names[t].split(".")[-1] for t in bunch.target]
    return pd.DataFrame({"prompt": list(bunch.data), "completion": labels})


def strip_whitespace(df: pd.DataFrame) -> pd.DataFrame:
    """prompt 와 completion 앞뒤의 공백과 줄바꿈을 지웁니다 (쿡북의 text.strip())."""
    return df.assign(prompt=df["prompt"].str.strip(), completion=df["completion"].str.strip())


def prompt_tokens(prompts) -> list[int]:
    """글마다 토큰 수 (추정치: chat_data 와 같은 오프라인 cl100k_base 인코더)."""
    encoding = chat_data.get_encoding()
    return [len(encoding.encode(text, disallowed_special=())) for text in prompts]


def drop_long_examples(df: pd.DataFrame, max_tokens: int = MAX_PROMPT_TOKENS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """prompt 가 max_tokens 토큰보다 긴 예제를 뺍니다. (남은 표, 뺀 표) — 뺀 표에는 tokens 열이 있습니다.

    옛 도구는 글자 수(prompt+completion 이 10,000자 넘음)로 2048 토큰을 어림했지만, 여기서는 토큰을 직접 셉니다.
    뺀 개수는 len(뺀 표) 입니다.
    """
    tokens = pd.Series(prompt_tokens(df["prompt"]), index=df.index)
    too_long = tokens > max_tokens
    return df[~too_long], df[too_long].assign(tokens=tokens[too_long])


def add_legacy_format(df: pd.DataFrame, separator: str = SEPARATOR) -> pd.DataFrame:
    """옛 prompt/completion 형식: prompt 끝에 구분자, completion 앞에 공백 한 칸.

    구분자는 "글이 여기서 끝나고 답이 시작된다" 는 표시였고, 앞 공백은 옛 토크나이저가 " baseball" 을 한 토큰으로
    다루게 했습니다. 오늘의 채팅 형식에서는 역할(role)이 그 구분을 대신하므로 둘 다 필요 없습니다.
    """
    return df.assign(prompt=df["prompt"] + separator, completion=" " + df["completion"])


def split_train_valid(df: pd.DataFrame, valid_size: float = VALID_SIZE,
                      random_state: int = RANDOM_STATE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """라벨 비율을 유지하며(stratify) 학습/검증으로 나눕니다. random_state 가 같으면 언제나 같은 분할입니다.

    행 번호(index)는 그대로 두므로, 같은 행을 다른 형식으로 바꾼 표에서도 df.loc[train.index] 로 찾을 수 있습니다.
    """
    labels = df["completion"].str.strip()  # " baseball" 과 "baseball" 을 같은 라벨로 (형식과 상관없이 같은 분할)
    return train_test_split(df, test_size=valid_size, random_state=random_state, stratify=labels)


def prepare_split(bunch, head: int | None = HEAD, max_tokens: int = MAX_PROMPT_TOKENS,
                  valid_size: float = VALID_SIZE, random_state: int = RANDOM_STATE):
    """노트북 06의 단계를 한 번에: 표 → (앞의 head 개) → 공백 정리 → 긴 예제 빼기 → 분할.

    (train, valid, dropped) 를 돌려줍니다. prompt 는 구분자 없는 글, completion 은 앞 공백 없는 라벨입니다.
    07, 08 노트북은 06을 돌리지 않고도 이 함수로 06과 똑같은 분할을 다시 만듭니다.
    """
    df = to_dataframe(bunch)
    if head is not None:
        df = df.head(head)
    kept, dropped = drop_long_examples(strip_whitespace(df), max_tokens)
    train, valid = split_train_valid(kept, valid_size, random_state)
    return train, valid, dropped


def post_title(text: str, limit: int = 60) -> str:
    """글을 한 줄로 알아보게: Usenet 머리글의 Subject (없으면 첫 줄), limit 글자 넘으면 … 로 자름."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    subject = next((line[len("Subject:"):].strip() for line in lines if line.lower().startswith("subject:")), None)
    title = subject if subject is not None else (lines[0] if lines else "")
    return title if len(title) <= limit else title[:limit - 1] + "…"


# ----------------------------------------------------------------------------- 오늘의 채팅 형식


def to_chat_examples(prompts, labels, system_message: str = SYSTEM_MESSAGE) -> list[dict]:
    """글과 라벨을 채팅 미세 조정 예제로: {"messages": [system, user=글, assistant=라벨]}."""
    return [{"messages": [{"role": "system", "content": system_message},
                          {"role": "user", "content": prompt},
                          {"role": "assistant", "content": label}]}
            for prompt, label in zip(prompts, labels)]


def write_chat_files(train: pd.DataFrame, valid: pd.DataFrame, system_message: str = SYSTEM_MESSAGE,
                     directory: str | Path | None = None, stem: str = "sport2") -> tuple[Path, Path]:
    """학습/검증 채팅 JSONL 을 <directory>/<stem>_chat_train.jsonl, _chat_valid.jsonl 로 씁니다 (기본: output/).

    같은 분할이면 바이트까지 같은 파일이 나옵니다 (재생 모드는 업로드한 파일의 sha256 으로 기록과 맞춰 봅니다).
    """
    directory = paths.OUTPUT_DIR if directory is None else Path(directory)
    written = []
    for part, df in (("train", train), ("valid", valid)):
        examples = to_chat_examples(df["prompt"], df["completion"], system_message)
        written.append(chat_data.write_jsonl(examples, directory / f"{stem}_chat_{part}.jsonl"))
    return written[0], written[1]


# ----------------------------------------------------------------------------- logprob → 확률 → 지표


def _pairs(top_logprobs):
    """{토큰: logprob} dict, SDK 의 TopLogprob 목록, {"token", "logprob"} dict 목록을 모두 (토큰, logprob) 로."""
    if isinstance(top_logprobs, dict):
        return list(top_logprobs.items())
    return [(item["token"], item["logprob"]) if isinstance(item, dict) else (item.token, item.logprob)
            for item in top_logprobs]


def label_of_token(token: str, labels=LABELS) -> str | None:
    """토큰이 어느 라벨의 시작인지: 공백을 뗀 토큰이 라벨의 (비어 있지 않은) 앞부분이면 그 라벨.

    " baseball", "baseball", "hockey" 의 첫 토큰 "h" 모두 됩니다 (대소문자 무시). 어느 라벨에도 맞지 않거나
    두 라벨에 다 맞으면(애매함) None.
    """
    piece = token.strip().lower()
    matches = [label for label in labels if piece and label.lower().startswith(piece)]
    return matches[0] if len(matches) == 1 else None


def label_probabilities(top_logprobs, labels=LABELS) -> tuple[dict[str, float], float]:
    """top_logprobs 를 라벨별 확률로: (라벨별 확률, 라벨이 아닌 쪽의 확률) 을 돌려줍니다.

    1. 토큰마다 어느 라벨의 시작인지 정하고 (label_of_token), 같은 라벨의 토큰은 exp(logprob) 를 더합니다.
    2. 라벨들의 합이 1이 되도록 나눕니다 (정규화).

    정규화는 라벨이 아닌 토큰(예: "The", "\\n")에 간 확률을 버리는 일입니다. 그래서 버린 양을 두 번째 값
    (1 - 라벨 확률의 합)으로 함께 돌려줍니다: 0에 가까우면 모델이 거의 언제나 라벨로 답한다는 뜻이고, 크면
    정규화한 확률을 덜 믿어야 합니다. top_logprobs 에 보이지 않는 라벨의 확률은 0으로 셉니다.
    라벨 토큰이 하나도 없으면 라벨별 확률은 nan 입니다.
    """
    mass = dict.fromkeys(labels, 0.0)
    for token, logprob in _pairs(top_logprobs):
        label = label_of_token(token, labels)
        if label is not None:
            mass[label] += math.exp(logprob)
    total = sum(mass.values())
    other = max(0.0, 1.0 - total)
    if total == 0:
        return dict.fromkeys(labels, math.nan), other
    return {label: m / total for label, m in mass.items()}, other


METRIC_NAMES = {  # 여기 이름 → 옛 fine_tunes API 의 결과 CSV 열 이름
    "accuracy": "classification/accuracy",
    "precision": "classification/precision",
    "recall": "classification/recall",
    "f1": "classification/f1.0",
    "auroc": "classification/auroc",
    "auprc": "classification/auprc",
}


def classification_report_table(y_true, p_positive, positive: str = POSITIVE, threshold: float = 0.5,
                                name: str | None = None) -> pd.Series:
    """옛 API가 검증 세트로 계산해 주던 classification/* 지표를 scikit-learn 으로 계산합니다.

    y_true: 정답 라벨 ("baseball"/"hockey"), p_positive: positive 일 확률.
    확률이 threshold 이상이면 positive 로 예측합니다. accuracy, precision, recall, f1 은 그 예측으로,
    auroc 와 auprc 는 확률 그대로(문턱값 없이) 계산합니다. 노트북에서 여러 모델을 나란히 놓기 좋게
    이름(name)이 붙은 pd.Series 로 돌려줍니다.
    """
    y_true = [str(y).strip() for y in y_true]
    negative = next((y for y in sorted(set(y_true)) if y != positive), "not " + positive)
    y_pred = [positive if p >= threshold else negative for p in p_positive]
    is_positive = [y == positive for y in y_true]
    values = {
        "accuracy": accuracy_score(y_true, y_pred),
        "precision": precision_score(y_true, y_pred, pos_label=positive, zero_division=0),
        "recall": recall_score(y_true, y_pred, pos_label=positive, zero_division=0),
        "f1": f1_score(y_true, y_pred, pos_label=positive, zero_division=0),
        "auroc": roc_auc_score(is_positive, p_positive),
        "auprc": average_precision_score(is_positive, p_positive),
    }
    return pd.Series({k: float(v) for k, v in values.items()}, name=name)
