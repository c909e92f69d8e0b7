"""노트북 09 의 데이터 고르기 (helpers/data_size.py): 토큰 예산으로 자르기, 겹치고 균형 잡힌 학습 세트."""
import pandas as pd
import pytest

from helpers import chat_data, classification, data_size, datasets


def pool(n_per_label: int = 30) -> pd.DataFrame:
    labels = ["baseball", "hockey"] * n_per_label
    return pd.DataFrame({"prompt": [f"post {i}" for i in range(len(labels))], "completion": labels},
                        index=range(100, 100 + len(labels)))  # 0부터가 아닌 행 번호: 번호를 그대로 지키는지


def test_subsets_are_balanced_nested_and_repeatable():
    subsets = data_size.nested_balanced_subsets(pool(), [40, 10, 20], seed=0)
    assert list(subsets) == [10, 20, 40]
    for n, df in subsets.items():
        assert len(df) == n
        assert df["completion"].value_counts().to_dict() == {"baseball": n // 2, "hockey": n // 2}
    assert set(subsets[10].index) < set(subsets[20].index) < set(subsets[40].index)
    again = data_size.nested_balanced_subsets(pool(), [10, 20, 40], seed=0)
    assert all(again[n].equals(subsets[n]) for n in subsets)
    other = data_size.nested_balanced_subsets(pool(), [10, 20, 40], seed=1)
    assert set(other[10].index) != set(subsets[10].index)


def test_subsets_come_only_from_the_pool_so_the_notebooks_validation_set_stays_unseen():
    bunch, _ = datasets.load_newsgroups("sample")
    train, valid, _ = classification.prepare_split(bunch)
    subsets = data_size.nested_balanced_subsets(train, [10, 20, 40, 80], seed=0)
    assert len(subsets[80]) == len(train)
    assert not set(subsets[80].index) & set(valid.index)


@pytest.mark.parametrize("sizes, message", [([15], "나누어떨어져야"), ([10, 62], "모자랍니다")])
def test_impossible_sizes_are_refused(sizes, message):
    with pytest.raises(ValueError, match=message):
        data_size.nested_balanced_subsets(pool(), sizes, seed=0)


def test_truncate_keeps_the_first_tokens_and_leaves_short_texts_alone():
    encoding = chat_data.get_encoding()
    text = "The Bruins scored twice in the third period to beat Montreal. " * 10
    short = data_size.truncate_tokens(text, 16)
    assert text.startswith(short)
    assert len(encoding.encode(short)) == 16
    assert data_size.truncate_tokens("Go Sox", 16) == "Go Sox"
