"""모든 기록(data/recordings/*.json)과 노트북에 저장된 출력을 한 번에 다시 만듭니다.

    python tests/rerecord.py                 # 키 없음: 이 과정의 로컬 서버(오픈 웨이트 모델, LoRA, 이 컴퓨터)로 기록
    OPENAI_API_KEY=sk-... python tests/rerecord.py   # 키 있음: 실제 OpenAI API로 다시 기록 (강사용)
    python tests/rerecord.py 03              # 이름이 03 으로 시작하는 노트북만
    python tests/rerecord.py solutions       # 연습 문제 풀이(notebooks/solutions/)만, solutions/03 이면 03 의 풀이만
    python tests/rerecord.py --outputs-only 07   # 기록은 그대로 두고 저장된 출력만 다시 (출력 코드만 바꿨을 때)

1단계: 노트북마다 COURSE_MODE=record 로 실행해 기록을 새로 씁니다 (이 실행의 출력은 버림).
2단계: COURSE_MODE=replay 로 다시 실행해 그 출력을 노트북에 저장합니다 — 커밋되는 출력은 언제나 재생 출력이라
       nbval 이 키 없이 검사할 수 있습니다.

인자가 없으면 과정의 노트북 다음에 풀이 노트북까지 모두 다시 만듭니다 (풀이의 기록은 data/recordings/solutions_<노트북>.json).
키가 없으면 로컬 서버 하나를 새 데이터 폴더(output/rerecord/local_server)로 띄워 모든 노트북이 함께 씁니다: 03 이
남긴 모델을 04 가, 07 이 남긴 모델을 08 이 찾습니다. 2-코어 CPU 에서 전체는 30분 안팎입니다 (07 과 09 의 학습이 대부분).
키가 있으면 미세 조정 작업이 실제로 만들어지고 요금이 듭니다 (03: 약 $0.04, 02 노트북의 추정).

앞 노트북이 만든 미세 조정 모델을 쓰는 노트북(PREREQUISITES)만 골라 기록할 때는, 기록하기 직전에 같은 서버에서 앞
노트북을 live 모드로 한 번 돌려(기록하지 않음) 모델을 만들어 둡니다. 키가 있으면 이때 실제 작업이 하나 더 생기고
요금이 듭니다.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"  # 연습 문제 풀이: 필요한 모델은 스스로 학습하므로 PREREQUISITES 가 없음
sys.path.insert(0, str(ROOT))

from helpers import local, paths  # noqa: E402

# 과정의 노트북 번호 → 먼저 돌려 둘 노트북 번호 (그 노트북이 만든 미세 조정 모델을 씀)
PREREQUISITES = {"04": "03", "08": "07"}
LOCAL_POLL_SECONDS = 2  # 로컬 서버의 작업은 이 컴퓨터에서 돌므로 자주 물어도 됩니다


def run(notebook: Path, mode: str, output: Path, parameters: dict | None = None) -> None:
    """parameters 중 그 노트북의 parameters 셀에 있는 것만 넘깁니다."""
    os.environ["COURSE_MODE"] = mode
    declared = papermill.inspect_notebook(str(notebook))
    papermill.execute_notebook(str(notebook), str(output), cwd=str(notebook.parent), kernel_name="python3",
                               progress_bar=False,
                               parameters={k: v for k, v in (parameters or {}).items() if k in declared})


def strip_run_metadata(path: Path) -> None:
    """실행마다 달라지는 것(papermill 의 실행 시각/소요 시간, 출력 조각 경계)을 없애 diff 를 깨끗하게 합니다."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":  # 커널이 출력을 내보내는 시점에 따라 print 가 여러 조각으로 나뉘므로 합칩니다
            merged = []
            for output in cell.outputs:
                if merged and output.output_type == "stream" == merged[-1].output_type \
                        and output.name == merged[-1].name:
                    merged[-1].text += output.text
                else:
                    merged.append(output)
            cell.outputs = merged
    nbformat.write(nb, path)


def start_local_server(scratch: Path) -> None:
    """새 데이터 폴더로 로컬 서버를 띄우고 OPENAI_BASE_URL 을 그쪽으로 (이 프로세스가 끝나면 서버도 끝남).

    폴더는 COURSE_LOCAL_DATA_DIR (없거나 빈 폴더여야 함: 두 기록을 나란히 돌릴 때) 또는 scratch/local_server (비우고 씀).
    """
    given = os.environ.get("COURSE_LOCAL_DATA_DIR")
    data_dir = Path(given) if given else scratch / "local_server"
    if given and data_dir.is_dir() and any(data_dir.iterdir()):  # 학습자의 데이터 폴더를 지우지 않도록
        raise SystemExit(f"COURSE_LOCAL_DATA_DIR={given} 가 비어 있지 않습니다. 기록에는 빈 폴더나 없는 폴더를 주세요.")
    shutil.rmtree(data_dir, ignore_errors=True)  # 모델 목록과 파일 목록에 이번 기록의 것만 나오도록
    os.environ["COURSE_LOCAL_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("COURSE_LOCAL_PORT", "8790")  # 학습자가 띄워 둔 8765 의 서버와 섞이지 않도록
    server = local.ensure_server()
    if not server.started_here:
        raise SystemExit(f"포트 {local.port()} 에 이미 로컬 서버가 있습니다. 그 서버를 끄거나 COURSE_LOCAL_PORT 를 바꾸세요.")
    os.environ["OPENAI_BASE_URL"] = server.url
    os.environ["OPENAI_API_KEY"] = "local-server-needs-no-key"
    print("기록 출처:", local.source_label(server.model, server.device))


def save_replayed_outputs(notebooks: list[Path]) -> None:
    for notebook in notebooks:
        print("재생하며 출력 저장:", notebook.relative_to(NOTEBOOKS).as_posix(), flush=True)
        run(notebook, "replay", notebook)
        strip_run_metadata(notebook)


def selected(prefixes: list[str]) -> list[Path]:
    """과정의 노트북, 그다음 풀이 노트북 중 notebooks/ 기준 경로가 prefixes 중 하나로 시작하는 것 (없으면 모두)."""
    every = sorted(NOTEBOOKS.glob("[0-9]*.ipynb")) + sorted(SOLUTIONS.glob("[0-9]*.ipynb"))
    return [p for p in every if not prefixes or p.relative_to(NOTEBOOKS).as_posix().startswith(tuple(prefixes))]


def main(prefixes: list[str]) -> None:
    outputs_only = "--outputs-only" in prefixes
    prefixes = [p for p in prefixes if p != "--outputs-only"]
    notebooks = selected(prefixes)
    if outputs_only:
        save_replayed_outputs(notebooks)
        return
    scratch = paths.OUTPUT_DIR / "rerecord"  # 버리는 실행 출력도 실습 파일과 같은 한 곳(output/, 커밋하지 않음)에
    scratch.mkdir(parents=True, exist_ok=True)
    on_openai = bool(os.environ.get("OPENAI_API_KEY"))
    if on_openai:
        print("기록 출처: 실제 OpenAI API (또는 OPENAI_BASE_URL 의 서버)")
    else:
        start_local_server(scratch)
    polling = {} if on_openai else {"POLL_SECONDS": LOCAL_POLL_SECONDS}
    recorded = {notebook.name[:2] for notebook in notebooks if notebook.parent == NOTEBOOKS}
    for notebook in notebooks:
        print("기록:", notebook.relative_to(NOTEBOOKS).as_posix(), flush=True)
        prerequisite = PREREQUISITES.get(notebook.name[:2]) if notebook.parent == NOTEBOOKS else None
        if prerequisite and prerequisite not in recorded:  # 함께 기록하면 앞 노트북이 남긴 모델을 그대로 씀
            (first,) = NOTEBOOKS.glob(f"{prerequisite}_*.ipynb")
            print(f"  먼저 {first.name} 을 live 로 (기록 없이, 모델을 남겨 둠)")
            run(first, "live", scratch / f"prerequisite_{first.name}", {"CLEAN_UP": False, **polling})
        run(notebook, "record", scratch / notebook.relative_to(NOTEBOOKS).as_posix().replace("/", "_"), polling)  # 03, 07 은 기본값으로 모델을 남겨 둠
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        if not on_openai:
            os.environ.pop(name, None)
    save_replayed_outputs(notebooks)


if __name__ == "__main__":
    main(sys.argv[1:])
