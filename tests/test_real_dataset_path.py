"""실제 20newsgroups 가 캐시에 있을 때 05, 06 노트북(데이터 단계)이 1197개 글로 도는지.

이 컴퓨터에는 인터넷이 없어 진짜 데이터를 받을 수 없으므로, scikit-learn 이 내려받은 뒤 남기는 캐시 파일
(20news-bydate_py3.pkz: zlib 로 압축한 pickle)과 같은 모양의 파일을 만들어 둡니다. 글 내용은 저장소 샘플을
이어 붙인 가짜이고, 개수만 실제와 같습니다 (야구 597, 하키 600, 그리고 걸러져야 할 다른 그룹).
"""
import codecs
import pickle
from pathlib import Path

import numpy as np
import papermill
import pytest
from sklearn.utils import Bunch

from helpers import datasets

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL_GROUPS = ["rec.autos", "rec.sport.baseball", "rec.sport.hockey"]  # 사전순, scikit-learn 처럼
COUNTS = {"rec.autos": 5, "rec.sport.baseball": 597, "rec.sport.hockey": 600}


def write_fake_cache(data_home: Path) -> None:
    sample = datasets.newsgroups_sample()
    by_group = {name: [text for text, t in zip(sample.data, sample.target) if sample.target_names[t] == name]
                for name in datasets.NEWSGROUPS_CATEGORIES}
    by_group["rec.autos"] = ["From: driver@example.org\nSubject: oil change\nLines: 1\n\nEvery 5000 miles?\n"]
    data, target, filenames = [], [], []
    for label, name in enumerate(ALL_GROUPS):
        for i in range(COUNTS[name]):
            posts = by_group[name]
            data.append(posts[i % len(posts)] + f"\n(fake cache copy {i})\n")
            target.append(label)
            filenames.append(f"20news-bydate-train/{name}/{i}")
    train = Bunch(data=data, target=np.array(target), target_names=ALL_GROUPS, filenames=np.array(filenames))
    cache = {"train": train, "test": train}
    data_home.mkdir(parents=True, exist_ok=True)
    (data_home / "20news-bydate_py3.pkz").write_bytes(codecs.encode(pickle.dumps(cache), "zlib_codec"))


def test_auto_uses_the_cached_real_data(tmp_path):
    write_fake_cache(tmp_path)
    bunch, source = datasets.load_newsgroups("auto", data_home=str(tmp_path))
    assert source == "20newsgroups" and len(bunch.data) == 1197
    assert np.bincount(bunch.target).tolist() == [597, 600]


@pytest.mark.parametrize("name", ["05_newsgroups_dataset", "06_newsgroups_prepare"])
def test_data_notebooks_run_on_1197_cached_posts(name, tmp_path, monkeypatch):
    write_fake_cache(tmp_path / "sklearn")
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "sklearn"))  # 커널이 물려받는 환경
    output = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(output), cwd=str(NOTEBOOKS),
                               kernel_name="python3", progress_bar=False)
    text = output.read_text(encoding="utf-8")
    assert "1197" in text or "1,197" in text
    assert "실제 20newsgroups" in text or "20newsgroups" in text
