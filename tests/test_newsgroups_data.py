"""data/newsgroups/sample.jsonl 과 helpers/datasets.py 의 야구/하키 데이터 함수들."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from helpers import datasets
from helpers.chat_data import get_encoding
from helpers.course import CourseError
from helpers.datasets import NEWSGROUPS_CATEGORIES, load_newsgroups, newsgroups_sample

SAMPLE = datasets.NEWSGROUPS_DIR / "sample.jsonl"
HEADERS = ("From", "Subject", "Organization", "Lines")
SECRET = re.compile(r"sk-[A-Za-z0-9_-]{20,}|org-[A-Za-z0-9]{16,}|proj_[A-Za-z0-9]|user-[A-Za-z0-9]{16,}")


def records():
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


def split_post(text):
    """(머리말 dict, 본문). 머리말과 본문은 첫 빈 줄로 나뉩니다."""
    head, body = text.split("\n\n", 1)
    headers = dict(line.split(": ", 1) for line in head.split("\n"))
    return headers, body


# ----------------------------------------------------------------------------- 파일 자체


def test_sample_file_is_utf8_jsonl_with_unix_newlines():
    raw = SAMPLE.read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    for line in raw.decode("utf-8").splitlines():
        assert set(json.loads(line)) == {"category", "text"}


def test_sample_is_large_enough_and_balanced():
    counts = Counter(r["category"] for r in records())
    assert set(counts) == set(NEWSGROUPS_CATEGORIES)
    assert sum(counts.values()) >= 80
    assert counts["rec.sport.baseball"] == counts["rec.sport.hockey"]


def test_description_matches_the_file():
    counts = Counter(r["category"] for r in records())
    n = sum(counts.values())
    assert f"{n}개 (야구 {counts['rec.sport.baseball']}, 하키 {counts['rec.sport.hockey']})" \
        in datasets.NEWSGROUPS_SOURCES["sample"]
    assert "실제 Usenet 글이 아닙니다" in datasets.NEWSGROUPS_SOURCES["sample"]


def test_every_post_has_headers_and_a_correct_lines_count():
    for r in records():
        headers, body = split_post(r["text"])
        assert all(name in headers for name in HEADERS), r["text"][:80]
        assert int(headers["Lines"]) == len(body.split("\n")), headers["Subject"]
        assert body.strip(), headers["Subject"]


def test_posts_look_like_usenet():
    texts = [r["text"] for r in records()]
    bodies = [split_post(t)[1] for t in texts]
    replies = [b for b in bodies if " writes:\n" in b and re.search(r"^>", b, re.M)]
    signed = [b for b in bodies if "\n-- \n" in b]
    assert len(replies) >= 20 and len(signed) >= 8
    assert sum(split_post(t)[0]["Subject"].startswith("Re: ") for t in texts) >= 20
    assert len(set(split_post(t)[0]["From"] for t in texts)) >= 20  # 여러 사람이 쓴 글
    line_counts = [len(b.split("\n")) for b in bodies]
    assert min(line_counts) <= 4 and max(line_counts) >= 35


def test_some_posts_are_long_enough_to_drop():
    encoding = get_encoding()
    tokens = sorted(len(encoding.encode(r["text"])) for r in records())
    assert tokens[-2] >= 600  # 적어도 두 글은 600 토큰 이상 (너무 긴 예제 빼기 단계에서 빠질 글)
    assert tokens[len(tokens) // 2] < 300  # 대부분은 짧음


def test_no_text_looks_like_a_secret():
    assert not SECRET.search(SAMPLE.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- 읽는 함수


def test_sample_has_the_shape_of_fetch_20newsgroups():
    bunch = newsgroups_sample()
    assert {"data", "target", "target_names", "DESCR", "filenames"} <= set(bunch)
    assert bunch.target_names == NEWSGROUPS_CATEGORIES
    assert isinstance(bunch.data, list) and all(isinstance(text, str) for text in bunch.data)
    assert isinstance(bunch.target, np.ndarray) and bunch.target.dtype.kind == "i"
    assert len(bunch.data) == len(bunch.target) == len(bunch.filenames) == len(records())
    for text, target in zip(bunch.data, bunch.target):  # 라벨이 글과 같이 섞였는지
        assert {"category": bunch.target_names[target], "text": text} in records()


def test_sample_order_is_deterministic_and_shuffled():
    first, second = newsgroups_sample(), newsgroups_sample()
    assert first.data == second.data and list(first.target) == list(second.target)
    assert first.data != [r["text"] for r in records()]  # 파일 순서 그대로가 아님
    changes = np.count_nonzero(np.diff(first.target))  # 종류별로 몰려 있으면 1
    assert changes >= len(first.target) // 4
    assert 0.3 < first.target[: len(first.target) // 2].mean() < 0.7  # 앞 절반에도 두 종류가 섞여 있음


def test_sample_source():
    bunch, used = load_newsgroups("sample")
    assert used == "sample" and bunch.data == newsgroups_sample().data


def test_auto_falls_back_to_the_sample_without_cache_and_without_network(tmp_path, monkeypatch):
    import sklearn.datasets._twenty_newsgroups as twenty

    def no_network(*args, **kwargs):
        raise AssertionError("auto 는 내려받으려 하면 안 됩니다")

    monkeypatch.setattr(twenty, "_download_20newsgroups", no_network)
    bunch, used = load_newsgroups("auto", data_home=tmp_path)
    assert used == "sample" and bunch.data == newsgroups_sample().data
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))  # data_home 없이도 같은 결과
    assert load_newsgroups()[1] == "sample"


def test_auto_uses_the_real_data_when_it_is_cached(monkeypatch):
    calls = []

    def cached(**kwargs):
        calls.append(kwargs)
        return newsgroups_sample()  # 캐시에 있다고 치고 아무 bunch 나

    monkeypatch.setattr(datasets, "fetch_20newsgroups", cached)
    assert load_newsgroups("auto")[1] == "20newsgroups"
    assert calls[0]["download_if_missing"] is False
    assert calls[0]["categories"] == NEWSGROUPS_CATEGORIES and calls[0]["subset"] == "train"
    assert calls[0]["shuffle"] is True and calls[0]["random_state"] == 42


def test_real_source_without_network_gives_a_korean_course_error(monkeypatch):
    def offline(**kwargs):
        assert kwargs.get("download_if_missing", True) is True  # "20newsgroups" 는 내려받기를 시도함
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "fetch_20newsgroups", offline)
    with pytest.raises(CourseError) as info:
        load_newsgroups("20newsgroups")
    message = str(info.value)
    assert "내려받지" in message and '"sample"' in message and '"auto"' in message
    assert "name resolution" in message  # 무엇이 일어났는지도
    assert isinstance(info.value.__cause__, OSError)


def test_unknown_source_is_a_course_error():
    with pytest.raises(CourseError, match='"auto", "20newsgroups", "sample"'):
        load_newsgroups("kaggle")


# ----------------------------------------------------------------------------- 너무 쉬운 과제가 아닌지


def test_bag_of_words_baseline_is_good_but_not_perfect():
    """TF-IDF + 로지스틱 회귀가 20% 검증 세트에서 0.7 초과, 1.0 미만: 분류기가 할 일이 실제로 있습니다."""
    bunch = newsgroups_sample()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=0.2, stratify=bunch.target, random_state=42)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(x_train, y_train)
    accuracy = model.score(x_test, y_test)
    assert 0.7 < accuracy < 1.0, accuracy
