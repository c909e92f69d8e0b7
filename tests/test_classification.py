"""helpers/classification.py: 옛 prepare_data 단계, logprob → 확률 → 지표, 데이터 고르기, 재생 모드의 기록 밖 요청."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, precision_score, recall_score,
                             roc_auc_score)

from helpers import chat_data, classification, course, datasets, paths
from helpers.classification import (SEPARATOR, add_legacy_format, classification_report_table, drop_long_examples,
                                    label_of_token, label_probabilities, post_title, split_train_valid,
                                    strip_whitespace, to_chat_examples)

LOGPROBS_RECORDING = "08_newsgroups_logprobs"


def posts(n_per_label=10):
    """손으로 만든 작은 표: 라벨마다 n개, 앞뒤에 공백과 줄바꿈."""
    rows = [(f"  \nPost {i} about the {label} game.\n\n", f" {label}\n")
            for label in ("baseball", "hockey") for i in range(n_per_label)]
    return pd.DataFrame(rows, columns=["prompt", "completion"])


# ----------------------------------------------------------------------------- prepare 단계


def test_strip_removes_surrounding_whitespace_only():
    stripped = strip_whitespace(posts())
    assert stripped["prompt"].iloc[0] == "Post 0 about the baseball game."
    assert set(stripped["completion"]) == {"baseball", "hockey"}


def test_legacy_format_adds_separator_and_leading_space():
    legacy = add_legacy_format(strip_whitespace(posts()))
    assert SEPARATOR == "\n\n###\n\n"
    assert all(p.endswith("game.\n\n###\n\n") for p in legacy["prompt"])
    assert set(legacy["completion"]) == {" baseball", " hockey"}


def test_drop_long_examples_reports_what_and_how_many():
    df = strip_whitespace(posts())
    long_text = "word " * 300  # cl100k 에서 단어 하나가 한 토큰: 약 300 토큰
    df.loc[3, "prompt"] = long_text
    df.loc[15, "prompt"] = long_text + long_text
    n_long = len(chat_data.get_encoding().encode(long_text))
    kept, dropped = drop_long_examples(df, max_tokens=n_long - 1)
    assert len(dropped) == 2 and list(dropped.index) == [3, 15]
    assert list(dropped["tokens"]) == [n_long, len(chat_data.get_encoding().encode(long_text + long_text))]
    assert len(kept) == len(df) - 2 and 3 not in kept.index
    kept, dropped = drop_long_examples(df, max_tokens=10_000)  # 한도가 넉넉하면 아무것도 빼지 않음
    assert len(dropped) == 0 and len(kept) == len(df)


def test_split_sizes_are_stratified_and_reproducible():
    df = strip_whitespace(posts(50))
    train, valid = split_train_valid(df, valid_size=0.2, random_state=42)
    assert (len(train), len(valid)) == (80, 20)
    assert valid["completion"].value_counts().to_dict() == {"baseball": 10, "hockey": 10}
    assert not set(train.index) & set(valid.index)
    again_train, again_valid = split_train_valid(df, valid_size=0.2, random_state=42)
    assert list(again_valid.index) == list(valid.index) and list(again_train.index) == list(train.index)
    _, other_valid = split_train_valid(df, valid_size=0.2, random_state=7)
    assert set(other_valid.index) != set(valid.index)


def test_split_is_the_same_rows_in_legacy_and_plain_format():
    df = strip_whitespace(posts(50))
    _, plain_valid = split_train_valid(df)
    _, legacy_valid = split_train_valid(add_legacy_format(df))
    assert list(plain_valid.index) == list(legacy_valid.index)


@pytest.mark.parametrize("text, title", [
    ("From: a@b.example (A)\nSubject: Kessler to the DL?\nLines: 4\n\nHeard on the radio", "Kessler to the DL?"),
    ("\n  First line of a post without headers  \nsecond line", "First line of a post without headers"),
    ("Subject: " + "x" * 80, "x" * 59 + "…"),
    ("", ""),
])
def test_post_title_is_the_subject_or_the_first_line_cut_to_the_limit(text, title):
    assert post_title(text) == title


def test_chat_examples_are_system_user_assistant_and_pass_the_format_check():
    df = strip_whitespace(posts())
    examples = to_chat_examples(df["prompt"], df["completion"], "Classify.")
    assert examples[0] == {"messages": [{"role": "system", "content": "Classify."},
                                        {"role": "user", "content": "Post 0 about the baseball game."},
                                        {"role": "assistant", "content": "baseball"}]}
    assert chat_data.find_format_errors(examples) == []


def test_write_chat_files_is_byte_for_byte_reproducible(tmp_path):
    train, valid = split_train_valid(strip_whitespace(posts(50)))
    first = classification.write_chat_files(train, valid, directory=tmp_path / "a")
    second = classification.write_chat_files(train, valid, directory=tmp_path / "b")
    assert [p.name for p in first] == ["sport2_chat_train.jsonl", "sport2_chat_valid.jsonl"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert len(chat_data.check_chat_file(first[1])) == 20


# ----------------------------------------------------------------------------- logprob → 확률 → 지표


@pytest.mark.parametrize("token, label", [(" baseball", "baseball"), ("baseball", "baseball"), ("h", "hockey"),
                                          (" Hockey", "hockey"), ("base", "baseball"), (" ", None), ("The", None),
                                          ("baseballs", None)])
def test_a_token_counts_for_the_label_it_begins(token, label):
    assert label_of_token(token) == label


def test_label_probabilities_normalise_and_report_the_other_mass():
    # 블로그의 숫자: {" baseball": -7.6311407, " hockey": -0.0006307676}
    probs, other = label_probabilities({" baseball": -7.6311407, " hockey": -0.0006307676})
    p_b, p_h = math.exp(-7.6311407), math.exp(-0.0006307676)
    assert probs["baseball"] == pytest.approx(p_b / (p_b + p_h)) and probs["hockey"] == pytest.approx(p_h / (p_b + p_h))
    assert other == pytest.approx(1 - p_b - p_h)


def test_prefix_tokens_and_several_tokens_for_one_label_add_up():
    top = [{"token": "h", "logprob": math.log(0.3)}, {"token": " hockey", "logprob": math.log(0.2)},
           {"token": " baseball", "logprob": math.log(0.25)}, {"token": "The", "logprob": math.log(0.15)}]
    probs, other = label_probabilities(top)
    assert probs == pytest.approx({"baseball": 0.25 / 0.75, "hockey": 0.5 / 0.75})
    assert other == pytest.approx(0.25)  # "The" 의 0.15 와 top 에 보이지 않는 0.10


def test_sdk_objects_work_and_no_label_token_gives_nan():
    class TopLogprob:  # SDK 의 ChatCompletionTokenLogprob.top_logprobs 항목처럼 .token, .logprob
        def __init__(self, token, logprob):
            self.token, self.logprob = token, logprob

    probs, _ = label_probabilities([TopLogprob("baseball", -0.1), TopLogprob("hockey", -2.4)])
    assert probs["baseball"] > 0.9
    probs, other = label_probabilities([TopLogprob("The", -0.1)])
    assert all(math.isnan(p) for p in probs.values()) and other == 1.0  # 라벨이 아닌 쪽이 전부


def test_metrics_from_logprobs_match_scikit_learn_on_a_hand_made_case():
    y_true = ["baseball", "hockey", "baseball", "hockey", "baseball", "hockey", "baseball", "hockey"]
    top = [  # 모델이 돌려줬다고 치는 top_logprobs (두 번째: "h" 는 hockey 의 첫 토큰, 네 번째: 라벨 아닌 토큰)
        {" baseball": -0.05, " hockey": -3.0},
        {"h": -0.2, " baseball": -1.8},
        {" hockey": -0.7, " baseball": -0.8},  # 틀린 답 (hockey 쪽이 조금 더 큼)
        {" hockey": -0.01, "\n": -5.0},
        {"baseball": -0.3, " baseball": -2.0, " hockey": -4.0},  # 한 라벨에 토큰 둘
        {" baseball": -0.6, " hockey": -0.9},  # 틀린 답
        {" baseball": -0.1, "The": -2.5},
        {" hockey": -0.05, " baseball": -3.2},
    ]
    p = [label_probabilities(t)[0]["baseball"] for t in top]
    table = classification_report_table(y_true, p, positive="baseball", name="hand-made")
    y_pred = ["baseball" if x >= 0.5 else "hockey" for x in p]
    positive = [y == "baseball" for y in y_true]
    expected = {"accuracy": accuracy_score(y_true, y_pred),
                "precision": precision_score(y_true, y_pred, pos_label="baseball"),
                "recall": recall_score(y_true, y_pred, pos_label="baseball"),
                "f1": f1_score(y_true, y_pred, pos_label="baseball"),
                "auroc": roc_auc_score(positive, p), "auprc": average_precision_score(positive, p)}
    assert table.name == "hand-made" and table.to_dict() == pytest.approx(expected)
    assert table["accuracy"] == pytest.approx(6 / 8)  # 두 개가 틀림
    assert table["precision"] == pytest.approx(3 / 4) and table["recall"] == pytest.approx(3 / 4)
    assert set(classification.METRIC_NAMES) == set(table.index)


def test_threshold_moves_the_label_metrics_but_not_the_ranking_metrics():
    y_true = ["baseball", "hockey", "baseball", "hockey"]
    p = np.array([0.9, 0.4, 0.6, 0.1])
    low = classification_report_table(y_true, p, threshold=0.5)
    high = classification_report_table(y_true, p, threshold=0.8)
    assert low["accuracy"] == 1.0 and high["accuracy"] == 0.75
    assert low["auroc"] == high["auroc"] == 1.0


# ----------------------------------------------------------------------------- 어느 데이터를 쓸까


@pytest.fixture
def recordings(tmp_path, monkeypatch):
    """가짜 기록 폴더: 머리말만 있는 기록을 써 넣는 함수를 돌려줍니다."""
    monkeypatch.setattr(paths, "RECORDINGS_DIR", tmp_path)

    def write(name, dataset):
        header = {"source": "local open-weight gemma-3-270m (LoRA, CPU)", "recorded_on": "2026-11-21", "sdk": "openai 3",
                  "dataset": dataset}
        (tmp_path / f"{name}.json").write_text(json.dumps({"header": header, "interactions": []}), encoding="utf-8")
    return write


def test_dataset_label_round_trips_to_its_source():
    for source in datasets.NEWSGROUPS_SOURCES:
        label = classification.dataset_label(source)
        assert label.startswith(source + " — ") and classification.source_of(label) == source
    assert classification.source_of("") is None and classification.source_of("호반스 질문/답변") is None


def test_replay_uses_the_source_the_recording_was_made_on(recordings, monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "replay")
    recordings("nb", classification.dataset_label("20newsgroups"))
    source, reason = classification.choose_source("auto", "auto", "nb")
    assert source == "20newsgroups" and "재생 모드" in reason
    source, reason = classification.choose_source("sample", "auto", "nb")  # 다른 데이터를 달라고 해도
    assert source == "20newsgroups" and 'DATASET = "sample" 는 무시' in reason


def test_replay_of_a_sample_recording_loads_the_sample(recordings, monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "replay")
    recordings("nb", classification.dataset_label("sample"))
    bunch, used, reason = classification.load_sports("20newsgroups", "auto", "nb")
    assert used == "sample" and len(bunch.data) == len(datasets.newsgroups_sample().data) and "무시" in reason


def test_outside_replay_the_parameter_decides(recordings, monkeypatch):
    recordings("nb", classification.dataset_label("20newsgroups"))
    monkeypatch.setenv("COURSE_MODE", "live")
    assert classification.choose_source("sample", "auto", "nb")[0] == "sample"
    monkeypatch.setenv("COURSE_MODE", "replay")
    assert classification.choose_source("sample", "auto", None)[0] == "sample"  # API 없는 노트북(05, 06)


def test_auto_without_cached_real_data_explains_the_sample(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "load_newsgroups", lambda source: (datasets.newsgroups_sample(), "sample"))
    bunch, used, reason = classification.load_sports("auto")
    assert used == "sample" and "내려받아져 있지 않아서" in reason


def test_prepare_split_on_the_sample_is_what_the_recordings_were_made_on():
    train, valid, dropped = classification.prepare_split(datasets.newsgroups_sample())
    assert (len(train), len(valid), len(dropped)) == (80, 20, 0)
    assert valid["completion"].value_counts().to_dict() == {"baseball": 10, "hockey": 10}


# ----------------------------------------------------------------------------- 재생 모드: 기록에 없는 글


def logprobs_request(client, model, text):
    """08 노트북의 ask() 와 같은 요청."""
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": classification.SYSTEM_MESSAGE}, {"role": "user", "content": text}],
        max_tokens=1, temperature=0, logprobs=True, top_logprobs=2,
    )


@pytest.fixture
def replayed_08(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "replay")
    if not (paths.RECORDINGS_DIR / f"{LOGPROBS_RECORDING}.json").is_file():
        pytest.fail("data/recordings/08_newsgroups_logprobs.json 이 없습니다 (python tests/rerecord.py 08)")
    client = course.connect("replay", LOGPROBS_RECORDING)
    bunch, _, _ = classification.load_sports("auto", "replay", LOGPROBS_RECORDING)
    _, valid, _ = classification.prepare_split(bunch)
    return client, course.fine_tuned_model(client, "baseball-hockey"), valid


def test_a_recorded_post_replays_with_its_recorded_logprobs(replayed_08):
    client, model, valid = replayed_08
    choice = logprobs_request(client, model, valid["prompt"].iloc[0]).choices[0]
    probabilities, other = label_probabilities(choice.logprobs.content[0].top_logprobs)
    assert label_of_token(choice.message.content) in classification.LABELS
    assert sum(probabilities.values()) == pytest.approx(1.0) and 0 <= other < 1


@pytest.mark.parametrize("text", [
    "Great save by the goalie in overtime, the Leafs win the series!",  # 기록에 없는 트윗
    "The Twins signed a new closer before spring training.",
])
def test_a_post_not_in_the_recording_is_a_replay_miss_not_an_answer(replayed_08, text):
    client, model, _ = replayed_08
    with pytest.raises(course.ReplayMissError, match="기록에 없는 요청"):
        logprobs_request(client, model, text)


def test_a_recorded_post_with_other_parameters_is_a_replay_miss_too(replayed_08):
    client, model, valid = replayed_08
    with pytest.raises(course.ReplayMissError, match="top_logprobs"):
        client.chat.completions.create(
            model=model, max_tokens=1, temperature=0, logprobs=True, top_logprobs=5,
            messages=[{"role": "system", "content": classification.SYSTEM_MESSAGE},
                      {"role": "user", "content": valid["prompt"].iloc[0]}])
