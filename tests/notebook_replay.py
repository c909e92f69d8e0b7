"""노트북마다 커널 하나로 한 번만 실행하면서 papermill 과 nbval 이 보던 것을 모두 봅니다 (pytest 플러그인).

pytest 가 notebooks/ 의 .ipynb 를 모을 때 (루트 conftest.py 가 이 모듈을 플러그인으로 씁니다):
1. papermill 이 노트북 자신의 parameters 값을 주입한 사본(메모리 안)을 만듭니다 — `papermill -p` 와 같은 길.
   parameters 셀이 없거나, 파싱되지 않거나, papermill 이 못 보는 값이 있으면 `::papermill parameters` 가 실패합니다.
2. 그 사본의 코드 셀마다 nbval 의 항목(IPyNbCell)이 하나씩: nbval 이 직접 커널에서 실행하고, 저장된 출력과
   nbval 의 규칙(tests/nbval_sanitize.cfg, 이미지와 metadata 는 비교하지 않음)으로 비교해 셀 단위로 diff 를 보여 줍니다.
   셀 이름은 커밋된 노트북의 코드 셀 번호 그대로(`::Cell 3`), 주입된 셀은 `::injected-parameters`.
3. `::replay mode and source`: API 를 부르는 노트북의 새 출력이 재생 모드와 기록의 출처를 말하는지.
다음 노트북의 커널은 앞 노트북이 도는 동안 미리 띄워 둡니다 (커널 시작 시간만 겹침, 실행은 언제나 하나씩).
"""
from __future__ import annotations

import ast
import json
import os
from collections import defaultdict

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbval.kernel import CURRENT_ENV_KERNEL_NAME, NbvalKernelspecManager, RunningKernel
from nbval.plugin import IPyNbCell, IPyNbFile

SPARE_KERNEL = pytest.StashKey[dict]()
COMPARE_OUTPUTS = pytest.StashKey[bool]()


class ParametersError(Exception):
    """papermill 이 이 노트북에 값을 주입할 수 없는 이유."""


def inject_parameters(path) -> nbformat.NotebookNode:
    """papermill 로 노트북 자신의 parameters 값을 다시 주입한 노트북 (papermill 의 prepare_only 실행)."""
    import papermill  # 노트북을 모을 때만 (다른 테스트만 돌릴 때 불러오지 않음)

    nb = nbformat.read(path, as_version=4)
    cell = next((c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ParametersError("'parameters' 태그가 붙은 코드 셀이 없습니다 (papermill 은 주입 셀을 맨 위에 넣게 됨)")
    try:
        statements = ast.parse(cell.source).body
    except SyntaxError as e:
        raise ParametersError(f"parameters 셀이 파이썬으로 읽히지 않습니다: {e.lineno}행: {e.msg}\n{cell.source}") from None
    values = {}
    for statement in statements:
        if not isinstance(statement, (ast.Assign, ast.AnnAssign)):
            continue
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            raise ParametersError(f"{statement.lineno}행: 한 줄에 `이름 = 값` 하나씩이어야 papermill 이 읽습니다")
        try:
            values[targets[0].id] = ast.literal_eval(statement.value)
        except ValueError:
            raise ParametersError(f"{targets[0].id}: 값이 리터럴이 아닙니다 ({ast.unparse(statement.value)}); "
                                  "papermill -p 로 바꿀 값은 문자열, 숫자, None, 리스트, 사전 같은 리터럴이어야 합니다") from None
    if not values:
        raise ParametersError("parameters 셀에 `이름 = 값` 이 하나도 없습니다")
    seen = papermill.inspect_notebook(str(path))
    if unseen := [name for name in values if name not in seen]:
        raise ParametersError(f"papermill 이 parameters 셀에서 {unseen} 를 찾지 못합니다 (papermill -p 로 바꿀 수 없음)")
    return papermill.execute_notebook(str(path), None, parameters=values, prepare_only=True, progress_bar=False)


class ReplayNotebook(IPyNbFile):
    """nbval 의 노트북 수집기에 papermill 주입, 재생 모드 확인, 미리 띄운 커널을 더한 것."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.compare_outputs = self.config.stash.get(COMPARE_OUTPUTS, self.compare_outputs)

    def collect(self):
        committed_cells = list(super().collect())  # nbval 이 커밋된 노트북의 코드 셀마다 만드는 항목 (옵션, 번호)
        committed_nb = self.nb
        try:
            self.nb, self.parameters_error = inject_parameters(self.path), None
        except Exception as e:  # 수집 오류로 세션 전체를 멈추지 않고, 아래 항목 하나의 실패로 보고
            self.nb, self.parameters_error = committed_nb, e
        yield PapermillParameters.from_parent(self, name="papermill parameters")
        remaining = iter(committed_cells)
        self.cell_items = []
        for cell in self.nb.cells:
            if cell.cell_type != "code":
                continue
            if "injected-parameters" in cell.metadata.get("tags", []):
                number = self.cell_items[-1].cell_num if self.cell_items else 0
                item = IPyNbCell.from_parent(self, name="injected-parameters", cell_num=number, cell=cell,
                                             options=defaultdict(bool, check=self.compare_outputs))
            else:
                item = next(remaining)
                assert item.cell.source == cell.source, f"papermill 이 셀 {item.cell_num} 을 바꿈"
            self.cell_items.append(item)
            yield item
        yield ReplayModeStated.from_parent(self, name="replay mode and source")

    def kernel_name(self) -> str:
        """nbval 의 IPyNbFile.setup 과 같은 규칙."""
        option = self.config.option
        if option.nbval_current_env:
            return CURRENT_ENV_KERNEL_NAME
        return option.nbval_kernel_name or self.nb.metadata.get("kernelspec", {}).get("name", "python")

    def setup(self):
        """IPyNbFile.setup 과 같되, 앞 노트북이 도는 동안 띄워 둔 커널이 있으면 그것에 연결합니다."""
        environment = tuple(sorted((k, v) for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"))  # 커널이 물려받음
        key = (self.kernel_name(), str(self.path.parent), environment)
        timeout = self.config.option.nbval_kernel_startup_timeout
        spare = self.config.stash.get(SPARE_KERNEL, {}).pop("kernel", None)
        if spare is not None and spare.key != key:
            spare.stop()
            spare = None
        self.kernel = (spare or LaunchedKernel(key, timeout)).connect()
        self.setup_sanitize_files()
        if getattr(self.config.option, "cov_source", None):
            from nbval.cover import setup_coverage
            setup_coverage(self.config, self.kernel, getattr(self, "fspath", None))
        if self.another_notebook_follows():
            self.config.stash.setdefault(SPARE_KERNEL, {})["kernel"] = LaunchedKernel(key, timeout)

    def another_notebook_follows(self) -> bool:
        items = self.session.items
        mine = [i for i, item in enumerate(items) if item.parent is self]
        return bool(mine) and any(isinstance(item.parent, ReplayNotebook) and item.parent is not self
                                  for item in items[mine[-1] + 1:])


class LaunchedKernel(RunningKernel):
    """nbval 의 RunningKernel 을 둘로 나눈 것: 프로세스는 지금 띄우고, 연결(준비 확인)은 노트북이 시작할 때."""

    def __init__(self, key, startup_timeout):
        self.key, self.startup_timeout = key, startup_timeout
        kernel_name, cwd, _ = key
        self.km = KernelManager(kernel_name=kernel_name, kernel_spec_manager=NbvalKernelspecManager())
        self.km.start_kernel(stderr=open(os.devnull, "w"), cwd=cwd)  # nbval.kernel.start_new_kernel 과 같은 인자
        self.kc = None

    def connect(self) -> LaunchedKernel:
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=self.startup_timeout)
        except RuntimeError:
            self.stop()
            raise
        self._ensure_iopub_up()
        return self

    def stop(self):
        if self.kc is not None:
            self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        del self.km


class PapermillParameters(pytest.Item):
    """papermill 이 노트북 자신의 parameters 값을 주입할 수 있는지 (주입한 노트북을 아래 셀들이 실행)."""

    def runtest(self):
        if self.parent.parameters_error is not None:
            raise self.parent.parameters_error

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, ParametersError):
            return f"papermill 이 parameters 를 주입할 수 없습니다: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


class ReplayModeStated(pytest.Item):
    """API 를 부르는 노트북은 새 출력에서 재생 모드와 기록의 출처를 말해야 합니다."""

    def runtest(self):
        cells = [item for item in self.parent.cell_items if not item.options["skip"]]  # NBVAL_SKIP 셀은 빼고
        if not any("course.connect(" in item.cell.source for item in cells):
            return
        if any(item.test_outputs is None for item in cells):
            pytest.skip("실행되지 않은 셀이 있음 (-k 등으로 골라 실행)")
        fresh = json.dumps([item.test_outputs for item in cells], ensure_ascii=False)
        missing = [phrase for phrase in ("재생(replay) 모드", "출처:") if phrase not in fresh]
        assert not missing, f"새 출력에 {missing} 가 없습니다: 어느 모드, 어느 기록인지 말해야 합니다"

    def reportinfo(self):
        return self.path, None, self.name


def pytest_configure(config):
    # nbval 의 --nbval/--nbval-lax 가 주어져도 노트북을 두 번 모으지 않도록: 이 플러그인이 nbval 의 항목을 씁니다
    config.stash[COMPARE_OUTPUTS] = not config.option.nbval_lax
    config.option.nbval = config.option.nbval_lax = False


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".ipynb":
        return ReplayNotebook.from_parent(parent, path=file_path)


def pytest_unconfigure(config):
    spare = config.stash.get(SPARE_KERNEL, {}).pop("kernel", None)
    if spare is not None:  # 다음 노트북이 실행되지 않았을 때 (-x 로 멈춤, Ctrl-C)
        spare.stop()
