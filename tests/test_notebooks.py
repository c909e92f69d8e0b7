"""커밋된 노트북과 기록이 지켜야 할 약속을 검사합니다 (노트북을 실행하지 않음).

노트북의 실행은 pytest 가 notebooks/ 를 모을 때 노트북마다 한 번: papermill 이 parameters 를 주입하고, nbval 이
재생 모드로 실행해 저장된 출력과 셀마다 비교하고, 출력이 재생 모드와 기록의 출처를 말하는지 봅니다
(tests/notebook_replay.py).
"""
import json
import re
from pathlib import Path

import nbformat
import pytest

from tests.notebook_replay import ParametersError, inject_parameters
from tests.repo_files import repository_files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9]*.ipynb"))  # 연습 문제 풀이, 노트북마다 하나
SECRET_LIKE = re.compile(r"sk-[A-Za-z0-9_-]{20,}|[Bb]earer [A-Za-z0-9_-]{20,}|org-[A-Za-z0-9]{16,}|proj_[A-Za-z0-9]{16,}"
                         r"|user-[A-Za-z0-9]{16,}")


def test_the_course_has_its_numbered_notebooks():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == [f"{i:02d}" for i in range(10)]  # 00 … 09, 빠짐도 겹침도 없이


def tiny_notebook(parameters: str, stored: list[str]) -> nbformat.NotebookNode:
    """parameters 셀 하나와, 저장된 출력이 stored 인 셀 둘: print(GREETING), GREETING.upper()."""
    new = nbformat.v4
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    printed = new.new_output("stream", name="stdout", text=stored[0] + "\n")
    result = new.new_output("execute_result", {"text/plain": stored[1]}, execution_count=3)
    return new.new_notebook(metadata={"kernelspec": kernelspec}, cells=[
        new.new_code_cell(parameters, metadata={"tags": ["parameters"]}, execution_count=1),
        new.new_code_cell("print(GREETING)", execution_count=2, outputs=[printed]),
        new.new_code_cell("GREETING.upper()", execution_count=3, outputs=[result])])


def test_the_single_notebook_run_checks_injection_and_compares_every_cell(pytester):
    """notebook_replay 의 한 번 실행: papermill 주입 셀도 돌고, 같은 출력은 통과, 다른 출력은 셀 이름과 diff 로 실패."""
    nbformat.write(tiny_notebook('GREETING = "hello"  # 인사', ["hello", "'HELLO!'"]), pytester.path / "changed.ipynb")
    result = pytester.runpytest("-p", "tests.notebook_replay", "--nbval-current-env", "-v", "--color=no")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines_random([
        "*changed.ipynb::papermill parameters PASSED*", "*changed.ipynb::injected-parameters PASSED*",
        "*changed*ipynb::Cell 1 PASSED*", "FAILED changed.ipynb::Cell 2 - *",  # -v 에서 nbval 은 . 을 :: 로 씀
        "*Cell 2: Cell outputs differ*", "*- 'HELLO'", "*+ 'HELLO!'",  # nbval 의 diff (저장된 쪽이 +)
    ])


@pytest.mark.parametrize("parameters, reason", [
    ('GREETING = "hello', "파이썬으로 읽히지 않습니다: 1행"),
    ('GREETING = "hello".upper()', "GREETING: 값이 리터럴이 아닙니다"),
    ("GREETING, NAME = 'hello', 'x'", "1행: 한 줄에 `이름 = 값` 하나씩"),
    ("# 값 없음", "`이름 = 값` 이 하나도 없습니다"),
], ids=["syntax-error", "not-a-literal", "tuple", "empty"])
def test_a_broken_parameters_cell_is_reported(tmp_path, parameters, reason):
    path = tmp_path / "nb.ipynb"
    nbformat.write(tiny_notebook(parameters, ["hello", "'HELLO'"]), path)
    with pytest.raises(ParametersError, match=re.escape(reason)):
        inject_parameters(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].metadata.tags = []
    nbformat.write(nb, path)
    with pytest.raises(ParametersError, match="'parameters' 태그가 붙은 코드 셀이 없습니다"):
        inject_parameters(path)


def test_papermill_injects_the_notebooks_own_values_after_its_parameters_cell(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(tiny_notebook('GREETING = "hello"  # 인사\nCOUNT: int = 3\nNAMES = [  # 여러 줄\n    "a",\n]',
                                 ["hello", "'HELLO'"]), path)
    cells = inject_parameters(path).cells
    assert cells[1].metadata.tags == ["injected-parameters"]
    assert cells[1].source == "# Parameters\nGREETING = \"hello\"\nCOUNT = 3\nNAMES = [\"a\"]\n"
    assert [c.source for c in cells[:1] + cells[2:]] == [c.source for c in nbformat.read(path, as_version=4).cells]


def test_every_notebook_ends_with_exercises_that_have_a_solution_notebook():
    """연습 문제 셀(문제 두세 개)이 마지막 이전/다음 링크 셀 바로 앞에 있고, 같은 이름의 풀이 노트북이 있고 그것을 가리킴."""
    assert [p.name for p in SOLUTIONS] == [p.name for p in NOTEBOOKS]
    for notebook in NOTEBOOKS:
        cells = nbformat.read(notebook, as_version=4).cells
        exercises, links = cells[-2], cells[-1]
        assert exercises.cell_type == "markdown" and exercises.source.startswith("## 연습 문제"), notebook.name
        assert len(re.findall(r"^\d\. ", exercises.source, re.M)) in (2, 3), notebook.name
        assert f"(solutions/{notebook.name})" in exercises.source, notebook.name
        assert links.cell_type == "markdown" and re.match(r"(다음|이것으로)", links.source), notebook.name


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.stem)
def test_a_solution_records_under_its_own_name_and_finds_the_helpers(solution):
    """풀이의 기록은 data/recordings/solutions_<노트북>.json: 과정의 노트북 기록과 겹치지 않음."""
    code = "\n".join(c.source for c in nbformat.read(solution, as_version=4).cells if c.cell_type == "code")
    assert 'sys.path.insert(0, "../..")' in code  # notebooks/solutions/ 에서 저장소 최상위의 helpers/
    assert set(re.findall(r'course\.connect\(MODE, "([^"]+)"', code)) <= {f"solutions_{solution.stem}"}
    assert set(re.findall(r'load_sports\(DATASET, MODE, "([^"]+)"', code)) <= {f"solutions_{solution.stem}"}


@pytest.mark.parametrize("notebook", NOTEBOOKS + SOLUTIONS, ids=lambda p: p.parent.name + "/" + p.stem)
def test_committed_notebook_is_complete(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "parameters 셀이 없음"
    assert all(c.execution_count is not None for c in code if c.source.strip()), "실행하지 않은 셀이 있음"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], "저장된 오류 출력"
    counts = [c.execution_count for c in code if c.source.strip()]
    assert counts == sorted(counts), "위에서 아래로 한 번에 실행한 출력이어야 함"


# the recordings the repository holds (not the untracked backup a record run leaves)
RECORDINGS = sorted(p for p in (ROOT / "data" / "recordings").glob("*.json") if not p.name.endswith(".previous.json"))


def test_every_recording_says_where_it_came_from():
    assert RECORDINGS
    for path in RECORDINGS:
        header = json.loads(path.read_text(encoding="utf-8"))["header"]
        source = header["source"]  # 실제 OpenAI, OpenAI 호환 서버, 또는 이 과정의 로컬 오픈 웨이트 모델
        assert source == "openai" or source.startswith(("openai-compatible ", "local open-weight ")), (path, source)
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


def test_rerecord_selects_course_notebooks_then_solutions_or_a_part_of_them():
    from tests.rerecord import selected

    def names(prefixes):
        return [p.relative_to(ROOT / "notebooks").as_posix() for p in selected(prefixes)]

    solutions = [f"solutions/{p.name}" for p in SOLUTIONS]
    assert names([]) == [p.name for p in NOTEBOOKS] + solutions
    assert names(["03"]) == ["03_hobanse_finetune.ipynb"]  # 03 의 풀이는 고르지 않음
    assert names(["solutions"]) == solutions
    assert names(["solutions/03"]) == ["solutions/03_hobanse_finetune.ipynb"]


def test_rerecord_refuses_a_given_data_folder_that_is_not_empty(tmp_path, monkeypatch):
    from tests import rerecord

    monkeypatch.setattr(rerecord.local, "ensure_server", lambda: pytest.fail("기록용 서버를 띄움"))
    (tmp_path / "learner-data").mkdir()
    (tmp_path / "learner-data" / "store.sqlite").write_text("내 작업")
    monkeypatch.setenv("COURSE_LOCAL_DATA_DIR", str(tmp_path / "learner-data"))
    with pytest.raises(SystemExit, match="비어 있지 않습니다"):
        rerecord.start_local_server(tmp_path / "scratch")
    assert (tmp_path / "learner-data" / "store.sqlite").read_text() == "내 작업"
