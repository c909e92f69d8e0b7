"""모든 기록(data/recordings/*.json)과 노트북에 저장된 출력을 한 번에 다시 만듭니다.

    python tests/rerecord.py                 # 키 없음: 로컬 오프라인 대역(stand-in)으로 기록
    OPENAI_API_KEY=sk-... python tests/rerecord.py   # 키 있음: 실제 OpenAI API로 다시 기록 (강사용)
    python tests/rerecord.py 03              # 이름이 03 으로 시작하는 노트북만

1단계: 노트북마다 COURSE_MODE=record 로 실행해 기록을 새로 씁니다 (이 실행의 출력은 버림).
2단계: COURSE_MODE=replay 로 다시 실행해 그 출력을 노트북에 저장합니다 — 커밋되는 출력은 언제나 재생 출력이라
       nbval 이 키 없이 검사할 수 있습니다.
키가 있으면 미세 조정 작업이 실제로 만들어지고 요금이 듭니다 (03: 약 $0.04, 02 노트북의 추정).

앞 노트북이 만든 미세 조정 모델을 쓰는 노트북(PREREQUISITES)은, 기록하기 직전에 같은 서버에서 앞 노트북을
live 모드로 한 번 돌려(CLEAN_UP = False, 기록하지 않음) 모델을 만들어 둡니다. 키가 있으면 이때 실제 작업이
하나 더 생기고 요금이 들며, 남은 모델은 강사가 지워야 합니다.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))

from helpers import paths  # noqa: E402
from tests import standin  # noqa: E402

# 노트북 번호 → 먼저 돌려 둘 노트북 번호 (그 노트북이 만든 미세 조정 모델을 씀)
PREREQUISITES = {"04": "03", "08": "07"}


def run(notebook: Path, mode: str, output: Path, parameters: dict | None = None) -> None:
    """parameters 중 그 노트북의 parameters 셀에 있는 것만 넘깁니다."""
    os.environ["COURSE_MODE"] = mode
    declared = papermill.inspect_notebook(str(notebook))
    papermill.execute_notebook(str(notebook), str(output), cwd=str(NOTEBOOKS), kernel_name="python3",
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


def main(prefixes: list[str]) -> None:
    notebooks = sorted(p for p in NOTEBOOKS.glob("[0-9]*.ipynb") if not prefixes or p.name.startswith(tuple(prefixes)))
    live = bool(os.environ.get("OPENAI_API_KEY"))
    print("기록 출처:", "실제 OpenAI API (또는 OPENAI_BASE_URL 의 서버)" if live else "오프라인 대역 (tests/standin.py)")
    no_waiting = {} if live else {"POLL_SECONDS": 0}  # 대역의 작업은 묻는 대로 진행하므로 기다릴 필요가 없음
    scratch = paths.OUTPUT_DIR / "rerecord"  # 버리는 실행 출력도 실습 파일과 같은 한 곳(output/, 커밋하지 않음)에
    scratch.mkdir(parents=True, exist_ok=True)
    for notebook in notebooks:
        print("기록:", notebook.name)
        with contextlib.ExitStack() as stack:
            if not live:  # 노트북마다 새 대역: 어느 노트북만 다시 기록해도 같은 id와 시각이 나옴
                os.environ["OPENAI_BASE_URL"] = stack.enter_context(standin.serve())
                os.environ["OPENAI_API_KEY"] = "offline-stand-in-needs-no-key"
            prerequisite = PREREQUISITES.get(notebook.name[:2])
            if prerequisite:
                (first,) = NOTEBOOKS.glob(f"{prerequisite}_*.ipynb")
                print(f"  먼저 {first.name} 을 live 로 (기록 없이, CLEAN_UP = False)")
                run(first, "live", scratch / f"prerequisite_{first.name}", {"CLEAN_UP": False, **no_waiting})
            run(notebook, "record", scratch / notebook.name, no_waiting)
    if not live:
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            os.environ.pop(name, None)
    for notebook in notebooks:
        print("재생하며 출력 저장:", notebook.name)
        run(notebook, "replay", notebook)
        strip_run_metadata(notebook)


if __name__ == "__main__":
    main(sys.argv[1:])
