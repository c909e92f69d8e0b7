"""The prose of a notebook quotes only figures its stored outputs contain.

The answers, losses and accuracies come from a recording; when the recording is re-made they change. A
measured-looking figure in a markdown cell (a decimal such as 0.85, a percentage, a score such as 12/24)
must therefore appear in the outputs of the same notebook, or the prose must not quote it. Version names
(GPT-3.5, gpt-4.1-mini), dates and prices are not measurements and are left out by the pattern, and a
sentence that names its source (the slides, the blog or cookbook) quotes that source, not this course's run.
"""
from __future__ import annotations

import re

import nbformat
import pytest

from tests.test_notebooks import NOTEBOOKS, SOLUTIONS

# a decimal, a percentage or a fraction standing alone (not part of a name such as gpt-4.1 or a price such as $0.03)
FIGURE = re.compile(r"(?<![\w.\-/$~])(\d+\.\d+|\d+(?:\.\d+)?\s?%|\d+/\d+)(?![\w\-/]|\.\d)")
CODE_SPAN = re.compile(r"`[^`]*`|\[[^\]]*\]\([^)]*\)")  # inline code and link targets are not prose claims
QUOTED_SOURCE = re.compile(r"슬라이드|블로그|쿡북|cookbook")
SENTENCE_END = re.compile(r"(?<=[.!?다])\s+|\n")


def figures_in_prose(nb) -> set[str]:
    found = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for sentence in SENTENCE_END.split(CODE_SPAN.sub(" ", cell.source)):
                if not QUOTED_SOURCE.search(sentence):
                    found.update(m.group(1).replace(" ", "") for m in FIGURE.finditer(sentence))
    return found


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            for kind in ("text/plain", "text/html", "text/markdown"):
                value = output.get("data", {}).get(kind, "")
                parts.append("".join(value) if isinstance(value, list) else value)
    return "\n".join(parts).replace("&nbsp;", " ")


def appears(figure: str, text: str) -> bool:
    if figure.endswith("%"):  # 85% in prose may be printed as 0.85 or 85.0%
        number = float(figure[:-1])
        return figure in text or f"{number / 100:.2f}".rstrip("0") in text or f"{number:.1f}%" in text
    if "/" in figure:
        right, total = figure.split("/")
        return figure in text or re.search(rf"\b{right}\s*/\s*{total}\b", text) is not None
    return re.search(rf"(?<![\d.]){re.escape(figure)}", text) is not None


@pytest.mark.parametrize("notebook", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.parent.name + "/" + p.stem)
def test_prose_quotes_only_figures_the_outputs_show(notebook):
    nb = nbformat.read(notebook, as_version=4)
    text = outputs_text(nb)
    missing = sorted(f for f in figures_in_prose(nb) if not appears(f, text))
    assert not missing, f"{notebook.name}: 본문이 인용한 수치가 저장된 출력에 없음: {missing}"


def test_the_check_catches_a_figure_the_outputs_do_not_show():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("미세 조정 모델은 정답률 0.92, 12/24 를 맞혔고 GPT-3.5 와 gpt-4.1-mini 보다 나았다.\n"
                                      "쿡북의 정확도는 99.6% 였습니다."),
        nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("stream", text="정답 12/24\n")]),
    ])
    assert figures_in_prose(nb) == {"0.92", "12/24"}
    assert [f for f in sorted(figures_in_prose(nb)) if not appears(f, outputs_text(nb))] == ["0.92"]
