"""데이터 크기 실험(노트북 09)의 데이터 고르기: 글을 토큰 예산으로 자르고, 학습 세트를 겹치게(nested) 키웁니다.

- `truncate_tokens`: 글의 앞부분을 토큰 max_tokens 개까지만 (CPU 학습 시간을 줄이려고)
- `nested_balanced_subsets`: 학습 후보에서 두 라벨을 같은 수로 고른 학습 세트들. 작은 세트는 언제나 큰 세트의
  일부라, 크기가 바뀔 때 달라지는 것은 "글이 더 많다" 뿐입니다 (다른 글을 뽑은 운이 섞이지 않음).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import chat_data


def truncate_tokens(text: str, max_tokens: int) -> str:
    """글의 앞 max_tokens 토큰(chat_data 와 같은 오프라인 cl100k_base 인코더로 셈)만 남깁니다."""
    encoding = chat_data.get_encoding()
    tokens = encoding.encode(text, disallowed_special=())
    return text if len(tokens) <= max_tokens else encoding.decode(tokens[:max_tokens])


def nested_balanced_subsets(pool: pd.DataFrame, sizes, seed: int, label_column: str = "completion") -> dict:
    """{크기: pool 의 행들} — 라벨마다 크기 ÷ 라벨 수 개씩, 작은 세트가 큰 세트에 들어가도록 고릅니다.

    라벨마다 seed 로 한 번 섞은 순서의 앞에서부터 가져가므로, seed 가 같으면 언제나 같은 세트입니다.
    크기가 라벨 수로 나누어떨어지지 않거나 한 라벨의 글이 모자라면 ValueError.
    """
    labels = sorted(pool[label_column].unique())
    rng = np.random.RandomState(seed)
    order = {label: rng.permutation(pool.index[pool[label_column] == label].to_numpy()) for label in labels}
    subsets = {}
    for size in sorted(sizes):
        per_label, remainder = divmod(size, len(labels))
        if remainder:
            raise ValueError(f"학습 세트 크기 {size} 는 라벨 수 {len(labels)} 로 나누어떨어져야 합니다 (라벨마다 같은 수).")
        short = [label for label in labels if len(order[label]) < per_label]
        if short:
            raise ValueError(f"학습 세트 {size}개에는 라벨마다 {per_label}개가 필요한데 {short} 의 글이 모자랍니다.")
        chosen = np.concatenate([order[label][:per_label] for label in labels])
        subsets[size] = pool.loc[sorted(chosen)]
    return subsets
