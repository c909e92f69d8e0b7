"""One running server: the base model and its engine, the store, the job scheduler, and the checks they share."""
from __future__ import annotations

import ipaddress
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from helpers import chat_data

from .base_model import (context_length, load_model_and_tokenizer, pick_device, pick_dtype, prepare_model,
                         public_model_id)
from .errors import ApiError
from .inference import Engine
from .jobs import Scheduler
from .keys import KeyRing, Principal
from .rate_limit import DEFAULT_RATE_LIMIT_RPM
from .store import Store

CACHE_DIR = Path(platformdirs.user_cache_dir("finetune-course-server"))
LOCK_BYTE = 1 << 20  # where lock_data_dir locks on Windows
MAX_PROBLEMS_SHOWN = 5  # a file with thousands of bad lines still gets a short, readable error
# With --keys, how many jobs one key may have waiting (validating_files or queued): one student who submits ten jobs
# must not fill the queue. OpenAI, too, limits an organisation's active or queued fine-tuning jobs per model.
MAX_WAITING_JOBS = 3


@dataclass
class Settings:
    data_dir: Path
    model: str
    device: str = "auto"
    dtype: str = "auto"  # the base model's, for serving and training: "auto" is bfloat16 where computed natively
    host: str = "127.0.0.1"
    port: int = 8765
    api_key: str | None = None
    keys: KeyRing | None = None  # --keys: one key per student and the instructor (instead of api_key)
    max_waiting_jobs: int = MAX_WAITING_JOBS  # per key, with keys
    max_upload_bytes: int = 50_000_000
    default_max_tokens: int = 256  # when a request gives none; the slides' Playground "maximum length"
    max_batch: int = 16
    rate_limit_rpm: float | None = DEFAULT_RATE_LIMIT_RPM  # generation requests per caller and minute; None: no limit
    model_cache_dir: Path = CACHE_DIR / "models"  # the converted base model, shared by every data directory
    workers: int = 1  # training processes at once; the command line's default follows the machine (default_workers)


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class DataDirInUse(Exception):
    pass


def lock_data_dir(data_dir: Path):
    """Hold the data directory for this process until the returned file is closed (or the process dies, even killed):
    a second server would mark the first one's training job failed (recover) and both would write the same store.

    Not the filelock package: it truncates the lock file on every attempt, erasing the pid the refusal names."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "server.lock", "a+b")  # append: opening must not erase the holder's pid
    try:
        if os.name == "nt":
            import msvcrt
            handle.seek(LOCK_BYTE)  # a byte past the pid: Windows locks are mandatory, the pid must stay readable
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read(20).decode("ascii", "replace").strip() or "?"
        handle.close()
        raise DataDirInUse(f"데이터 폴더 {data_dir} 는 다른 서버(프로세스 {holder})가 쓰고 있습니다. 그 서버를 그대로 "
                           "쓰거나 끄세요. 또는 --data-dir 로 다른 폴더를 주세요 (data directory in use by process "
                           f"{holder}).") from None
    handle.truncate(0)
    handle.write(str(os.getpid()).encode("ascii"))
    handle.flush()
    return handle


class LocalServer:
    def __init__(self, settings: Settings, progress=print):
        self.settings = settings
        self.data_dir_lock = lock_data_dir(Path(settings.data_dir))  # before the store is touched
        try:
            self._start(progress)
        except BaseException:
            self.data_dir_lock.close()  # e.g. an incompatible store: the next attempt must not find the folder held
            raise

    def _start(self, progress) -> None:
        settings = self.settings
        self.store = Store(settings.data_dir)
        self.device = pick_device(settings.device)
        self.model_source = prepare_model(settings.model, settings.model_cache_dir, progress)
        self.base_model_id = public_model_id(settings.model)
        started = time.monotonic()
        self.dtype = pick_dtype(self.device, settings.dtype)
        model, self.tokenizer = load_model_and_tokenizer(self.model_source, self.device, self.dtype)
        self.load_seconds = time.monotonic() - started
        self.context_length = context_length(model)
        self.engine = Engine(model, self.tokenizer, self.device, max_batch=settings.max_batch)
        self.fingerprint = f"fp_local_{self.base_model_id}"
        self.started_at = int(time.time())
        self.scheduler = Scheduler(self.store, self.base_model_id, str(self.model_source), self.device, self.dtype,
                                   workers=settings.workers)
        self.scheduler.recover()
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.stop()
        self.engine.close()
        self.data_dir_lock.close()

    # ------------------------------------------------------------------ checks the routes share
    def check_training_file(self, content: bytes, filename: str) -> None:
        """Refuse a fine-tuning file before it is stored, naming the first problem lines (400)."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "upload.jsonl"
            path.write_bytes(content)
            try:
                examples = chat_data.read_jsonl(path)
            except UnicodeDecodeError:
                raise ApiError(400, f"'{filename}' 은(는) UTF-8 텍스트가 아닙니다. 편집기에서 'UTF-8' 로 다시 저장해 "
                                    "올리세요 (Invalid file format: the file is not UTF-8).",
                               "invalid_file_format", "file") from None
            except chat_data.JsonlError as err:
                where = f" {err.line}번째 줄" if err.line else ""
                raise ApiError(400, f"'{filename}'{where}: {err.problem} (Invalid file format.)",
                               "invalid_file_format", "file") from None
        problems = [e.message for e in chat_data.find_format_errors(examples) if e.kind != "too_few_examples"]
        for line, example in enumerate(examples, start=1):
            if not problems and self.count_tokens(example["messages"]) > self.context_length:
                problems.append(f"{line}번째 줄: 예제가 모델의 컨텍스트({self.context_length} 토큰)보다 깁니다 — "
                                "글을 줄이거나 나누세요 (example exceeds the model's context length).")
        if problems:
            shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
            more = f"\n  … 그 밖에 {len(problems) - MAX_PROBLEMS_SHOWN}개" if len(problems) > MAX_PROBLEMS_SHOWN else ""
            raise ApiError(400, f"'{filename}' 에 형식 문제가 {len(problems)}개 있습니다 (Invalid file format):\n"
                                f"{shown}{more}", "invalid_file_format", "file")

    def count_tokens(self, messages: list[dict]) -> int:
        text = self.tokenizer.apply_chat_template(_plain(messages), tokenize=False)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render_chat(self, messages: list[dict]) -> list[int]:
        """Chat messages → prompt token ids in the model's turn format, ready for the model's answer."""
        text = self.tokenizer.apply_chat_template(_plain(messages), tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def render_text(self, prompt: str) -> list[int]:
        """Plain text → token ids after <bos>, as the model saw text in pre-training (no turn format)."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return [self.tokenizer.bos_token_id, *ids] if self.tokenizer.bos_token_id is not None else ids

    def adapter_for(self, model_id: str, principal: Principal) -> str | None:
        """None for the base model, the adapter folder for a fine-tuned model or checkpoint the principal may see;
        404 otherwise."""
        if model_id == self.base_model_id:
            return None
        model = self.store.model(model_id)
        if not principal.sees(model):
            raise self.model_not_found(model_id)
        if not (Path(model["adapter_path"]) / "adapter_config.json").is_file():
            raise self.model_not_found(model_id, f"모델 '{model_id}' 의 어댑터 폴더({model['adapter_path']})가 "
                                                 "없습니다: 데이터 폴더에서 지워졌습니다. client.models.delete 로 이 "
                                                 "모델을 지우고 다시 미세 조정하세요")
        return model["adapter_path"]

    def model_not_found(self, model_id: str, why: str | None = None) -> ApiError:
        why = why or (f"모델 '{model_id}' 이(가) 없습니다. 지워졌거나 이름이 틀렸습니다. client.models.list() 로 있는 "
                      "모델을 확인하세요")
        return ApiError(404, f"{why} (The model `{model_id}` does not exist or you do not have access to it).",
                        "model_not_found", "model")


def _plain(messages: list[dict]) -> list[dict]:
    """OpenAI messages → the {role, content} turns a chat template takes; system/developer text goes first."""
    system, turns = [], []
    for number, message in enumerate(messages, start=1):
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # content parts: only text parts mean something to a text model
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if role not in ("system", "developer", "user", "assistant") or not isinstance(content, str):
            raise ApiError(400, f"{number}번째 메시지: role 은 system, developer, user, assistant 중 하나이고 content 는 "
                                f"글이어야 합니다 (Invalid message at messages[{number - 1}]).", "invalid_value",
                           f"messages[{number - 1}]")
        if role in ("system", "developer"):
            system.append(content)
        else:
            turns.append({"role": role, "content": content, **({"weight": message["weight"]}
                                                               if "weight" in message else {})})
    if not turns:
        raise ApiError(400, "user 메시지가 하나는 있어야 합니다 (messages must contain a user message).",
                       "invalid_value", "messages")
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + turns
