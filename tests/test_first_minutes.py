"""새 학습자의 처음 10분 (이슈 10의 18~23): 짧은 오류, 저장소 최상위에서 열리는 JupyterLab, ZIP 으로 받은 폴더,
터미널까지 가는 설명, 한 곳에 모이는 실습 파일, 끝까지 읽히는 표."""
import re
import shlex
import shutil

import nbclient
import nbformat
import papermill
import pytest
from jupyter_server.serverapp import ServerApp

from helpers import paths
from tests.repo_files import repository_files
from tests.test_notebooks import ROOT, secret_like_strings

NOTEBOOKS = ROOT / "notebooks"


def notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in (f"import sys\nsys.path.insert(0, {str(ROOT)!r})", *sources)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


# ----------------------------------------------------------------------------- 18. 과정의 오류도 한 줄로


def test_validation_and_connect_errors_show_one_korean_line_not_a_traceback(tmp_path, monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "COURSE_MODE"):
        monkeypatch.delenv(name, raising=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "질문"}]}\n', encoding="utf-8")
    nb = notebook("from helpers import chat_data, course",
                  f"chat_data.check_chat_file({str(bad)!r})",
                  'course.connect("live", "nb")')
    nbclient.NotebookClient(nb, allow_errors=True, timeout=60, resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell, words in ((nb.cells[2], "형식 문제"), (nb.cells[3], "API 키가 없습니다")):
        (error,) = [o for o in cell.outputs if o.output_type == "error"]
        assert len(error.traceback) == 1 and words in error.traceback[0]  # 예전: 5~9개 프레임
        assert "Traceback" not in error.traceback[0] and words in error.evalue


# ----------------------------------------------------------------------------- 19. JupyterLab 은 저장소 최상위에서


def readme_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return [line for line in re.findall(r"jupyter lab[^`;\n]*", readme)]


def test_the_readme_opens_jupyterlab_at_the_repository_root_with_the_first_notebook(monkeypatch):
    monkeypatch.chdir(ROOT)
    commands = readme_commands()
    assert len(commands) >= 2  # 리눅스/맥과 Windows
    for command in commands:
        app = ServerApp()
        app.parse_command_line(shlex.split(command)[2:])
        assert app.root_dir == str(ROOT), command  # 예전: notebooks/ 가 최상위라 ../README.md 는 404
        assert app._resolve_file_to_run_and_root_dir() == "notebooks/00_setup.ipynb"


def test_every_relative_link_in_the_notebooks_stays_inside_the_repository():
    for path in [*NOTEBOOKS.glob("[0-9]*.ipynb"), *NOTEBOOKS.glob("solutions/[0-9]*.ipynb")]:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "markdown":
                continue
            for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", cell.source):
                linked = (path.parent / target).resolve()
                assert linked.exists() and linked.is_relative_to(ROOT), (path.name, target)


# ----------------------------------------------------------------------------- 20. ZIP 으로 받은 폴더


def test_the_secret_scan_works_without_git(tmp_path):
    copy = tmp_path / "course-main"  # GitHub 의 'Download ZIP' 처럼 .git 이 없는 폴더
    for name in (".gitignore", "README.md", "helpers/course.py", "data/recordings/00_setup.json"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, copy / name)
    (copy / ".env").write_text("OPENAI_API_KEY=sk-" + "learnersOwnRealKey1234567890\n", encoding="utf-8")
    (copy / "output").mkdir()
    (copy / "output" / "note.txt").write_text("org-" + "abcdefghijklmnopqrstu", encoding="utf-8")
    listed = {p.relative_to(copy).as_posix() for p in repository_files(copy)}
    assert listed == {".gitignore", "README.md", "helpers/course.py", "data/recordings/00_setup.json"}
    assert secret_like_strings(copy) == []  # 학습자의 .env 와 실습 파일은 (git 처럼) 보지 않음
    (copy / "helpers" / "leak.py").write_text("KEY = 'sk-" + "committedByMistake1234567890'", encoding="utf-8")
    assert secret_like_strings(copy) == ["helpers/leak.py: sk-committed…"]


# ----------------------------------------------------------------------------- 21. 터미널에서 돌려도 설명이 보임


def test_a_papermill_run_from_a_terminal_shows_the_korean_reason_and_names_course_mode(tmp_path, monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSE_MODE", "live")
    nbformat.write(notebook("from helpers import course", 'client = course.connect("replay", "00_setup")'),
                   tmp_path / "nb.ipynb")
    with pytest.raises(papermill.PapermillExecutionError) as caught:
        papermill.execute_notebook(str(tmp_path / "nb.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(tmp_path),
                                   kernel_name="python3", progress_bar=False)
    terminal = str(caught.value)
    assert "API 키가 없습니다" in terminal and "COURSE_MODE=replay" in terminal
    assert 'MODE = "replay" 로 바꾸' not in terminal  # 예전: COURSE_MODE 가 이기는데 MODE 를 바꾸라고 함


# ----------------------------------------------------------------------------- 22. 실습 파일은 한 곳에


@pytest.mark.parametrize("name", ["02_hobanse_dataset.ipynb", "06_newsgroups_prepare.ipynb"])
def test_running_a_notebook_from_another_folder_writes_nothing_there(tmp_path, monkeypatch, name):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # 저장소 최상위에서 papermill 을 돌린 것과 같게: helpers 를 찾음
    papermill.execute_notebook(str(NOTEBOOKS / name), str(tmp_path / "out.ipynb"), cwd=str(elsewhere),
                               kernel_name="python3", progress_bar=False)
    assert list(elsewhere.iterdir()) == []  # 예전: elsewhere/output/… 이 생김
    assert (paths.OUTPUT_DIR / "hobanse_train.jsonl").is_file() or name != "02_hobanse_dataset.ipynb"
    assert "output/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


# ----------------------------------------------------------------------------- 23. 끝까지 읽히는 표


def stored_outputs(name):
    return [o for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.parametrize("name, column", [("03_hobanse_finetune.ipynb", "미세 조정 모델"),
                                          ("04_hobanse_alternatives.ipynb", "answer")])
def test_answer_tables_are_left_aligned_wrapped_and_whole(name, column):
    tables = [o.data["text/html"] for o in stored_outputs(name)
              if "text/html" in o.get("data", {}) and f">{column}</th>" in o.data["text/html"]]
    assert tables, f"{name}: 답 표가 없음"
    for html in tables:
        cells = re.findall(r"<td([^>]*)>(.*?)</td>", html, flags=re.S)
        assert cells and all("text-align: left" in attrs and "white-space: pre-wrap" in attrs for attrs, _ in cells)
        assert not any(text.endswith(("...", "…")) for _, text in cells)  # 예전: 50~90자에서 잘림
        assert 'text-align: right' not in html


def test_the_progress_bar_leaves_no_stray_frames_in_the_stored_notebook():
    streams = [o.text for o in stored_outputs("08_newsgroups_logprobs.ipynb") if o.output_type == "stream"]
    assert not any("\r" in text or " 0%|" in text for text in streams)

