"""재생 모드에서 셀을 다시 실행하기 (이슈 18의 2): 같은 셀은 처음 실행 때와 같은 응답을 다시 받고, 한 번의 실행
안에서 기록보다 많이 물으면 여전히 그렇다고 말합니다."""
import copy
from pathlib import Path

import httpx2
import nbformat
import openai
import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient

from helpers.recordings import RecordingTransport

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ASK = ('client.chat.completions.create(model="m", messages=[{"role": "user", "content": "질문"}])'
       ".choices[0].message.content")


def record_three_answers(path):
    """같은 질문에 세 번 다른 답을 준 기록."""
    answers = iter(["답 1", "답 2", "답 3"])

    def api(request):
        return httpx2.Response(200, json={"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                                          "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                              "role": "assistant", "content": next(answers)}}]})

    transport = RecordingTransport(httpx2.MockTransport(api), path, "https://api.openai.com/v1", "", "nb")
    client = openai.OpenAI(api_key="sk-test", http_client=openai.DefaultHttpxClient(transport=transport))
    for _ in range(3):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "질문"}])


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


def test_a_rerun_cell_gets_its_recorded_answers_again_in_one_kernel(clean_env, shell):
    record_three_answers(clean_env / "recordings" / "nb.json")
    shell.run_cell('from helpers import course\nclient = course.connect("replay", "nb")', cell_id="connect")
    shell.run_cell(f"answers = [{ASK} for _ in range(2)]", cell_id="ask-twice")
    assert shell.user_ns["answers"] == ["답 1", "답 2"]
    shell.run_cell(f"answers = [{ASK} for _ in range(2)]", cell_id="ask-twice")  # 같은 셀을 다시
    assert shell.user_ns["answers"] == ["답 1", "답 2"]  # 예전: ReplayMissError (그 응답을 모두 썼습니다)
    shell.run_cell(f"later = {ASK}", cell_id="ask-once")
    assert shell.user_ns["later"] == "답 3"

    result = shell.run_cell(f"more = [{ASK} for _ in range(2)]", cell_id="ask-past-the-recording")
    message = str(result.error_in_exec)
    assert "기록에 3번" in message and "4번째" in message and "course.connect 셀부터 다시 실행" in message

    shell.run_cell('client = course.connect("replay", "nb")', cell_id="connect")  # 처음부터 다시
    shell.run_cell(f"answers = [{ASK} for _ in range(3)]", cell_id="ask-all")
    assert shell.user_ns["answers"] == ["답 1", "답 2", "답 3"]


def outputs(cell):
    return [{k: v for k, v in output.items() if k != "execution_count"} for output in cell.outputs]


def test_a_notebooks_api_cell_run_twice_in_one_kernel_shows_the_same_output():
    nb = nbformat.read(NOTEBOOKS / "00_setup.ipynb", as_version=4)
    api_cell = next(i for i, cell in enumerate(nb.cells)
                    if cell.cell_type == "code" and "client.models.list()" in cell.source)
    runner = NotebookClient(nb, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with runner.setup_kernel():
        for index in range(api_cell + 1):
            runner.execute_cell(nb.cells[index], index)
        first = copy.deepcopy(outputs(nb.cells[api_cell]))
        runner.execute_cell(nb.cells[api_cell], api_cell)
    assert first and outputs(nb.cells[api_cell]) == first
    assert all(output["output_type"] != "error" for output in first)
