"""모든 노트북을 papermill 로 재생 모드에서 처음부터 끝까지 실행하고, 노트북이 지켜야 할 약속을 검사합니다.

저장된 출력이 지금 실행과 같은지는 nbval 이 따로 봅니다 (pytest 가 notebooks/ 를 모을 때).
"""
import json
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from tests.repo_files import repository_files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SECRET_LIKE = re.compile(r"sk-[A-Za-z0-9_-]{20,}|[Bb]earer [A-Za-z0-9_-]{20,}|org-[A-Za-z0-9]{16,}|proj_[A-Za-z0-9]{16,}"
                         r"|user-[A-Za-z0-9]{16,}")


def test_the_course_has_its_numbered_notebooks():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{i:02d}" for i in range(9)]  # 00 … 08, 빠짐도 겹침도 없이


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_replay_mode(notebook, tmp_path):
    output = tmp_path / notebook.name
    papermill.execute_notebook(str(notebook), str(output), cwd=str(notebook.parent), kernel_name="python3",
                               progress_bar=False)  # 셀 하나라도 오류면 PapermillExecutionError
    text = output.read_text(encoding="utf-8")
    calls_api = "course.connect(" in text
    if calls_api:
        assert "재생(replay) 모드" in text and "출처:" in text  # 어느 모드, 어느 기록인지 말함


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_complete(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "parameters 셀이 없음"
    assert all(c.execution_count is not None for c in code if c.source.strip()), "실행하지 않은 셀이 있음"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], "저장된 오류 출력"
    counts = [c.execution_count for c in code if c.source.strip()]
    assert counts == sorted(counts), "위에서 아래로 한 번에 실행한 출력이어야 함"


def test_every_recording_says_where_it_came_from():
    recordings = sorted((ROOT / "data" / "recordings").glob("*.json"))
    assert recordings
    for path in recordings:
        header = json.loads(path.read_text(encoding="utf-8"))["header"]
        assert header["source"] == "offline stand-in" or header["source"] == "openai" \
            or header["source"].startswith("openai-compatible "), path
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", header["recorded_on"]) and header["sdk"].startswith("openai ")


def secret_like_strings(root: Path) -> list[str]:
    hits = []
    for path in repository_files(root):  # git 체크아웃이 아니어도 (ZIP 으로 받은 폴더)
        text = path.read_text(encoding="utf-8", errors="ignore")
        hits += [f"{path.relative_to(root)}: {m.group(0)[:12]}…" for m in SECRET_LIKE.finditer(text)]
    return hits


def test_no_secret_like_string_in_any_tracked_file():
    hits = secret_like_strings(ROOT)
    assert not hits, hits
