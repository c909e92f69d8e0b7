"""수업용 설치 (issue 17.3): CPU torch 를 고르는 requirements-cpu.txt 와 오프라인 wheelhouse 도구."""
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.make_wheelhouse import pip_download_command

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def test_the_cpu_requirements_are_the_tested_pins_plus_only_the_cpu_torch_index():
    assert requirement_lines(ROOT / "requirements-cpu.txt") == [
        "--extra-index-url https://download.pytorch.org/whl/cpu", "-r requirements.txt"]


def test_requirements_txt_names_no_other_index():
    """An index or find-links line in requirements.txt is looked up by every install, the CI's too: an unreachable
    download.pytorch.org made the CI's install hang for over 25 minutes."""
    lines = requirement_lines(ROOT / "requirements.txt")
    assert not [line for line in lines if line.startswith("-")]
    assert Requirement(next(line for line in lines if line.startswith("torch"))).specifier == "==2.13.0"


def fake_wheel(folder: Path, name: str, requires: list[str]) -> None:
    """A tiny pure-Python wheel with these Requires-Dist lines (enough for pip to resolve and download it)."""
    dist_info = f"{name}-1.0.dist-info"
    files = {f"{dist_info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: 1.0\n{}".format(
                 name, "".join(f"Requires-Dist: {line}\n" for line in requires)),
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist_info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist_info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@pytest.mark.parametrize("platform, wanted", [("win", {"course_dep", "colorama"}), ("linux", {"course_dep", "cuda_only"})])
def test_the_wheelhouse_follows_the_markers_of_the_students_platform(tmp_path, platform, wanted):
    """pip on Linux evaluates markers for Linux even with --platform win_amd64: it would leave out tqdm's
    `colorama; platform_system == "Windows"` and look for torch's Linux-only nvidia-* packages for Windows."""
    index, out = tmp_path / "index", tmp_path / "wheelhouse"
    index.mkdir()
    fake_wheel(index, "course_dep", ['colorama; platform_system == "Windows"', 'cuda_only; platform_system == "Linux"'])
    fake_wheel(index, "colorama", [])
    fake_wheel(index, "cuda_only", [])
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("course_dep\n", encoding="utf-8")
    command = pip_download_command(platform, "3.11", requirements, out, ["--no-index", "--find-links", str(index)])
    subprocess.run(command, check=True, capture_output=True, timeout=120,
                   env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""})
    assert {wheel.name.split("-")[0] for wheel in out.glob("*.whl")} == wanted
