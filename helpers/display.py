"""표를 읽기 좋게: 긴 한국어 답을 자르지 않고, 왼쪽 정렬로 줄 바꿈해 보여 줍니다 (JupyterLab 과 HTML 내보내기)."""
import pandas as pd

CELL_STYLE = "text-align: left; vertical-align: top; white-space: pre-wrap;"


class WrappedTable:
    """DataFrame 을 감싸 HTML 로 보일 때만 모양을 바꿉니다 (글자로 보일 때는 보통 DataFrame 그대로)."""

    def __init__(self, table: pd.DataFrame):
        self.table = table

    def _repr_html_(self) -> str:
        # 칸마다 style 속성으로: JupyterLab 은 신뢰하지 않은 노트북 출력의 <style> 블록(pandas Styler 가 쓰는 방식)을
        # 지우지만 style 속성의 정렬과 줄 바꿈은 남깁니다. to_html 은 display.max_colwidth 로 자르지 않습니다.
        html = self.table.to_html(border=0)
        return (html.replace('<tr style="text-align: right;">', "<tr>")
                    .replace("<td>", f'<td style="{CELL_STYLE}">')
                    .replace("<th>", f'<th style="{CELL_STYLE}">'))

    def __repr__(self) -> str:
        return repr(self.table)


def wrapped(table: pd.DataFrame) -> WrappedTable:
    """긴 글이 든 표를 끝까지 읽을 수 있게 보여 줍니다: `display.wrapped(df)` 를 셀의 마지막 줄에."""
    return WrappedTable(table)


def one_line(text: str, limit: int = 120) -> str:
    """긴 답을 한 줄로: 줄 바꿈은 ⏎ 로, limit 글자 넘는 부분은 … 로 (기본 모델이 끝없이 이어 쓴 글을 짧게 보기)."""
    flat = text.strip().replace("\n", " ⏎ ")
    return flat if len(flat) <= limit else flat[:limit] + f"… (모두 {len(text)}자)"
