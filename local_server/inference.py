"""Batched chat generation and scoring over the base model and LoRA adapters.

Requests that arrive together are computed together: the prompts are left-padded into one batch (grouped
by length to limit padding), run through the model once with a KV cache, and then decoded one token per
step for all rows at the same time. Only the last position's logits are computed: the output layer
(262,144 rows for Gemma 3) dominates the cost, so scoring a prompt (max_tokens=1 with logprobs) costs one
prompt forward. Rows may use different LoRA adapters in the same batch (peft's mixed-batch inference).

Only the engine thread touches the model; other threads hand work over with `Engine.submit`.
"""
from __future__ import annotations

import concurrent.futures
import queue
import random
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path

import torch
from peft import PeftModel
from transformers import DynamicCache
from transformers.convert_slow_tokenizer import bytes_to_unicode

from local_server.base_model import context_length
from local_server.chat_format import END_OF_TURN

MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS = 20
# Padded prompt tokens per forward: bounds activation and KV cache memory (a few hundred MB on Gemma 3
# 270M). Prompt forwards are compute-bound on a CPU, so bigger batches would not be faster there.
PREFILL_TOKENS = 4096
# A forward pass costs about as much as this many prompt tokens on top of its tokens (measured on a 2-core
# CPU: ~85 ms per pass, ~0.9 ms per prompt token in bfloat16); used to weigh padding against more passes.
FORWARD_COST_TOKENS = 96
MAX_GATHER_SECONDS = 0.2  # the longest a batch waits for more requests (see Engine._serve)
NUCLEUS_CANDIDATES = 1024
BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTE_LEVEL_DECODER = {char: byte for byte, char in bytes_to_unicode().items()}


@dataclass
class GenerationRequest:
    prompt_ids: list[int]           # any token ids: a rendered chat prompt, or raw text for scoring/completion
    adapter: str | None = None      # folder of a LoRA adapter (peft save_pretrained); None = base model
    max_tokens: int = 256
    temperature: float = 1.0        # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None         # same seed + same request -> same answer
    stop: list[str] = field(default_factory=list)   # up to 4 stop strings; the answer is cut before them
    n: int = 1
    top_logprobs: int | None = None  # None: no logprobs; 0..20: logprobs with that many alternatives per token


@dataclass
class Choice:
    text: str
    finish_reason: str              # "stop" (end_of_turn/eos/stop string) or "length"
    completion_tokens: int
    logprobs: list[dict] | None     # OpenAI's ChatCompletionTokenLogprob dicts


@dataclass
class GenerationResult:
    choices: list[Choice]
    prompt_tokens: int


@dataclass
class _Row:
    """One choice being generated: a row of the batch."""
    request: GenerationRequest
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)   # generated, without the end-of-turn/eos token
    logprobs: list[dict] = field(default_factory=list)
    completion_tokens: int = 0
    text: str | None = None         # set when a stop string cut it
    finish_reason: str | None = None


class Engine:
    def __init__(self, model, tokenizer, device, max_batch: int = 16, batch_window: float = 0.02,
                 max_adapters: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_batch = max_batch
        self.batch_window = batch_window
        self.max_adapters = max_adapters
        self.context_length = context_length(model)
        self.vocab_size = model.get_input_embeddings().num_embeddings
        self.end_ids = _end_token_ids(model, tokenizer)
        # With peft's frozen output layer, torch's matmul takes a batched path for the non-contiguous
        # (batch, 1, hidden) last-position slice and copies the 262,144-row weight for every row (~9 s per
        # batch of 8 in bfloat16): the output layer is given a contiguous copy of its small input instead.
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self._head_hook = head.register_forward_pre_hook(_contiguous_input) if head is not None else None
        self._peft: PeftModel | None = None       # wraps `model` while at least one adapter is loaded
        self._adapters: OrderedDict[str, str] = OrderedDict()  # adapter folder -> peft name, least recent first
        self._token_info: dict[int, tuple[str, list[int]]] = {}
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="inference-engine", daemon=True)
        self._thread.start()

    # --- public interface -------------------------------------------------------------------------

    def submit(self, request: GenerationRequest) -> concurrent.futures.Future:
        """Queue a request (any thread); the future gives its GenerationResult. Bad input raises ValueError here."""
        self._validate(request)
        future = concurrent.futures.Future()
        self._put((request, future))
        return future

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Compute requests as batches, synchronously. Runs on the engine thread (or a caller that owns the engine)."""
        for request in requests:
            self._validate(request)
        needed = {_adapter_key(r.adapter) for r in requests if r.adapter}
        for key in needed:
            self._load_adapter(key, keep=needed)
        return self._run(requests)

    def forget_adapter(self, adapter_path: str) -> None:
        """Unload an adapter (e.g. its model was deleted); waits until the engine thread has done it."""
        future = concurrent.futures.Future()
        self._put((lambda: self._unload_adapter(_adapter_key(adapter_path)), future))
        future.result()

    def close(self) -> None:
        """Finish the queued work, then stop the engine thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        if self._head_hook is not None:
            self._head_hook.remove()

    # --- engine thread ----------------------------------------------------------------------------

    def _put(self, item) -> None:
        if self._closed:
            raise RuntimeError("inference engine is closed")
        self._queue.put(item)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            # Gather while requests keep coming (each arrival waits batch_window for the next, up to
            # MAX_GATHER_SECONDS): 20 requests sent together reach the engine over a few tens of ms.
            jobs = []
            started = time.monotonic()
            deadline = started + self.batch_window
            while item is not None:
                work, future = item
                if future.set_running_or_notify_cancel():
                    if callable(work):  # adapter housekeeping runs between batches
                        _settle(future, work)
                    else:
                        jobs.append((work, future))
                        deadline = min(time.monotonic() + self.batch_window, started + MAX_GATHER_SECONDS)
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if item is None:  # close() arrived while gathering: finish this batch first
                self._queue.put(None)
            if jobs:
                self._serve_batch(jobs)

    def _serve_batch(self, jobs) -> None:
        """Run one gathered batch; a request whose adapter cannot be loaded fails alone."""
        needed = {_adapter_key(request.adapter) for request, _ in jobs if request.adapter}
        failed = {}
        for key in needed:
            try:
                self._load_adapter(key, keep=needed)
            except Exception as error:  # noqa: BLE001 - handed to that request's caller
                failed[key] = error
        ready = []
        for request, future in jobs:
            if request.adapter and _adapter_key(request.adapter) in failed:
                future.set_exception(failed[_adapter_key(request.adapter)])
            else:
                ready.append((request, future))
        if not ready:
            return
        try:
            results = self._run([request for request, _ in ready])
        except Exception as error:  # noqa: BLE001 - every caller of this batch hears about it
            for _, future in ready:
                future.set_exception(error)
            return
        for (_, future), result in zip(ready, results):
            future.set_result(result)

    # --- validation -------------------------------------------------------------------------------

    def _validate(self, request: GenerationRequest) -> None:
        ids = request.prompt_ids
        if not ids or not all(isinstance(i, int) and 0 <= i < self.vocab_size for i in ids):
            raise ValueError(f"prompt_ids는 0 이상 {self.vocab_size} 미만의 토큰 id 목록이어야 합니다")
        if len(ids) >= self.context_length:
            raise ValueError(f"프롬프트가 너무 깁니다: {len(ids)} 토큰 (이 모델의 한도 {self.context_length} 토큰)")
        if not (isinstance(request.max_tokens, int) and request.max_tokens >= 1):
            raise ValueError(f"max_tokens는 1 이상의 정수여야 합니다 (받은 값: {request.max_tokens!r})")
        if not 0 <= request.temperature <= 2:
            raise ValueError(f"temperature는 0~2 사이여야 합니다 (받은 값: {request.temperature!r})")
        if not 0 <= request.top_p <= 1:
            raise ValueError(f"top_p는 0 이상 1 이하여야 합니다 (받은 값: {request.top_p!r})")
        if not (isinstance(request.n, int) and 1 <= request.n <= self.max_batch):
            raise ValueError(f"n은 1~{self.max_batch} 사이의 정수여야 합니다 (받은 값: {request.n!r})")
        if len(request.stop) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in request.stop):
            raise ValueError(f"stop은 비어 있지 않은 문자열 {MAX_STOP_STRINGS}개까지입니다 (받은 값: {request.stop!r})")
        k = request.top_logprobs
        if k is not None and not (isinstance(k, int) and 0 <= k <= MAX_TOP_LOGPROBS):
            raise ValueError(f"top_logprobs는 0~{MAX_TOP_LOGPROBS} 사이의 정수여야 합니다 (받은 값: {k!r})")
        if request.adapter and not (Path(request.adapter) / "adapter_config.json").is_file():
            raise ValueError(f"LoRA 어댑터 폴더를 찾을 수 없습니다 (adapter_config.json 없음): {request.adapter}")

    # --- adapters ---------------------------------------------------------------------------------

    def _load_adapter(self, key: str, keep: set[str]) -> None:
        """Make the adapter at folder `key` available, unloading the least recently used beyond max_adapters."""
        if key in self._adapters:
            self._adapters.move_to_end(key)
            return
        name = _peft_name(key)
        # Adapters take the model's dtype: peft would keep float32 LoRA weights beside a bfloat16 model and
        # convert every layer's input for them (about a fifth of a prompt forward on a CPU).
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self.model, key, adapter_name=name, is_trainable=False,
                                                   autocast_adapter_dtype=False)
        else:
            self._peft.load_adapter(key, adapter_name=name, is_trainable=False, autocast_adapter_dtype=False)
        self._peft.eval()
        self._adapters[key] = name
        for old in [k for k in self._adapters if k not in keep][:max(0, len(self._adapters) - self.max_adapters)]:
            self._unload_adapter(old)

    def _unload_adapter(self, key: str) -> None:
        name = self._adapters.pop(key, None)
        if name is None:
            return
        if self._adapters:
            self._peft.delete_adapter(name)
        else:  # peft cannot hold zero adapters: give back the plain model
            self.model = self._peft.unload()
            self._peft = None

    # --- batched decoding -------------------------------------------------------------------------

    @torch.inference_mode()
    def _run(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        rows_per_request = []
        prompts: dict[tuple, list[_Row]] = {}  # (adapter, prompt) -> its rows: identical prompts are run once
        for request in requests:
            seeds = random.Random(request.seed)  # None: seeded from the OS
            rows = [_Row(request, torch.Generator().manual_seed(seeds.getrandbits(63))) for _ in range(request.n)]
            rows_per_request.append(rows)
            adapter = _adapter_key(request.adapter) if request.adapter else None
            prompts.setdefault((adapter, tuple(request.prompt_ids)), []).extend(rows)
        for group in self._group(list(prompts.items())):
            self._decode(group)
        return [GenerationResult([self._choice(row) for row in rows], len(request.prompt_ids))
                for request, rows in zip(requests, rows_per_request)]

    def _group(self, prompts):
        """Split prompts into batches of similar length, at the least estimated cost.

        Sorted by length, the prompts are cut into consecutive batches (at most max_batch rows and
        PREFILL_TOKENS padded tokens each) so that padded prompt tokens plus FORWARD_COST_TOKENS per
        forward pass (the prompt's and each possible decoding step's) is smallest: short posts are then not
        padded to a long one's length, and answers are not split into batches that decode one after another.
        """
        prompts.sort(key=lambda item: len(item[0][1]))
        best = [(0.0, 0)] + [(float("inf"), 0)] * len(prompts)  # best[j]: (cost of the first j prompts, cut before)
        for end in range(1, len(prompts) + 1):
            width, rows, steps = len(prompts[end - 1][0][1]), 0, 0
            for start in range(end - 1, -1, -1):
                (_, prompt), prompt_rows = prompts[start]
                rows += len(prompt_rows)
                steps = max(steps, min(prompt_rows[0].request.max_tokens, self.context_length - len(prompt)) - 1)
                if start < end - 1 and (rows > self.max_batch or (end - start) * width > PREFILL_TOKENS):
                    break
                cost = best[start][0] + (end - start) * width + FORWARD_COST_TOKENS * (1 + steps)
                if cost < best[end][0]:
                    best[end] = (cost, start)
        groups, end = [], len(prompts)
        while end:
            start = best[end][1]
            groups.append(prompts[start:end])
            end = start
        return groups[::-1]

    def _decode(self, group) -> None:
        # A hand-written loop, as generate() cannot mix per-row temperature/top_p/seed/stop/logprobs in a batch.
        width = max(len(prompt) for (_, prompt), _ in group)
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for (_, p), _ in group], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for (_, p), _ in group], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        prompt_adapters = [adapter for (adapter, _), _ in group]
        step = max(1, PREFILL_TOKENS // len(group))  # only a prompt longer than PREFILL_TOKENS is split
        for start in range(0, width, step):
            end = min(start + step, width)
            logits = self._forward(input_ids[:, start:end], mask[:, :end], positions[:, start:end], cache,
                                   prompt_adapters)

        # One batch row per choice: a prompt with n choices is computed once, then its state is repeated.
        rows = [row for _, prompt_rows in group for row in prompt_rows]
        index = torch.tensor([i for i, (_, prompt_rows) in enumerate(group) for _ in prompt_rows], device=self.device)
        adapters = [adapter for (adapter, _), prompt_rows in group for _ in prompt_rows]
        if len(rows) > len(group):
            cache.batch_select_indices(index)
            logits, mask = logits[index], mask[index]
        positions = positions[index, -1:]
        while True:
            tokens = self._pick(rows, logits)
            alive = [i for i, row in enumerate(rows) if row.finish_reason is None]
            if not alive:
                return
            if len(alive) < len(rows):  # finished rows leave the batch
                keep = torch.tensor(alive, device=self.device)
                cache.batch_select_indices(keep)
                mask, positions = mask[keep], positions[keep]
                rows, tokens, adapters = ([seq[i] for i in alive] for seq in (rows, tokens, adapters))
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            positions = positions + 1
            logits = self._forward(torch.tensor(tokens, device=self.device)[:, None], mask, positions, cache, adapters)

    def _forward(self, input_ids, mask, positions, cache, adapters: list[str | None]) -> torch.Tensor:
        """Logits of the last position of each row, as float32 on the CPU (where sampling happens)."""
        kwargs = {}
        model = self.model
        if self._peft is not None:
            model = self._peft
            kwargs["adapter_names"] = [self._adapters[a] if a else BASE for a in adapters]
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[:, -1].float().cpu()

    def _pick(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Choose each row's next token, record it, and decide whether the row is finished."""
        greedy = logits.argmax(-1).tolist()
        logprobs = torch.log_softmax(logits, -1) if any(r.request.top_logprobs is not None for r in rows) else None
        tokens = []
        for i, row in enumerate(rows):
            request = row.request
            token = greedy[i] if request.temperature == 0 else _sample(logits[i], request, row.generator)
            tokens.append(token)
            row.completion_tokens += 1
            if token in self.end_ids:  # end of the answer: neither text nor logprobs
                row.finish_reason = "stop"
                continue
            row.tokens.append(token)
            if request.top_logprobs is not None:
                row.logprobs.append(self._logprob_entry(token, logprobs[i], request.top_logprobs))
            if request.stop and self._cut_at_stop(row):
                row.finish_reason = "stop"
            elif row.completion_tokens >= min(request.max_tokens, self.context_length - len(request.prompt_ids)):
                row.finish_reason = "length"
        return tokens

    def _cut_at_stop(self, row: _Row) -> bool:
        text = self._decode_text(row.tokens)
        cuts = [i for i in (text.find(s) for s in row.request.stop) if i >= 0]
        if not cuts:
            return False
        row.text = text[:min(cuts)]
        # keep the logprobs of the tokens that start before the cut
        row.logprobs = [entry for k, entry in enumerate(row.logprobs)
                        if len(self._decode_text(row.tokens[:k])) < len(row.text)]
        return True

    def _choice(self, row: _Row) -> Choice:
        text = row.text if row.text is not None else self._decode_text(row.tokens)
        logprobs = row.logprobs if row.request.top_logprobs is not None else None
        return Choice(text, row.finish_reason, row.completion_tokens, logprobs)

    def _decode_text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _logprob_entry(self, token: int, logprobs: torch.Tensor, top: int) -> dict:
        text, raw = self._token(token)
        alternatives = []
        if top:
            values, ids = logprobs.topk(top)  # sorted, most likely first
            for value, alternative in zip(values.tolist(), ids.tolist()):
                alt_text, alt_raw = self._token(alternative)
                alternatives.append({"token": alt_text, "logprob": value, "bytes": alt_raw})
        return {"token": text, "logprob": float(logprobs[token]), "bytes": raw, "top_logprobs": alternatives}

    def _token(self, token: int) -> tuple[str, list[int]]:
        """A single token's text (as decoded alone) and its own bytes (a byte fallback token is one raw byte)."""
        if token not in self._token_info:
            text = self._decode_text([token])
            piece = self.tokenizer.convert_ids_to_tokens(token)
            if match := _BYTE_FALLBACK.fullmatch(piece):
                raw = [int(match[1], 16)]
            elif _byte_level(self.tokenizer) and all(char in _BYTE_LEVEL_DECODER for char in piece):
                raw = [_BYTE_LEVEL_DECODER[char] for char in piece]
            else:
                raw = list(text.encode("utf-8"))
            self._token_info[token] = (text, raw)
        return self._token_info[token]


def _sample(logits: torch.Tensor, request: GenerationRequest, generator: torch.Generator) -> int:
    """Draw from softmax(logits / T), limited to the top_p nucleus, with the row's own generator."""
    probs = torch.softmax(logits / request.temperature, -1)
    ids = None
    if request.top_p < 1:
        # The nucleus nearly always lies within the most likely 1,024 tokens: a full sort of 262,144
        # probabilities per token is far slower, so it is only the fallback.
        probs, ids = probs.topk(min(NUCLEUS_CANDIDATES, len(probs)))
        if probs.sum() < request.top_p:
            probs, ids = torch.softmax(logits / request.temperature, -1).sort(descending=True)
        keep = (probs.cumsum(0) - probs) < request.top_p
        keep[0] = True  # the most likely token is always in the nucleus (top_p=0 leaves only it, as OpenAI does)
        probs, ids = probs[keep], ids[keep]
    # inverse-CDF draw with one random number (torch.multinomial over 262,144 entries is far slower)
    cumulative = probs.cumsum(0)
    draw = torch.rand((), generator=generator) * cumulative[-1]
    index = min(int(torch.searchsorted(cumulative, draw, right=True)), len(cumulative) - 1)
    return int(ids[index]) if ids is not None else index


def _contiguous_input(_module, args):
    return (args[0].contiguous(), *args[1:])


def _settle(future: concurrent.futures.Future, work) -> None:
    try:
        future.set_result(work())
    except Exception as error:  # noqa: BLE001 - handed to the caller
        future.set_exception(error)


def _end_token_ids(model, tokenizer) -> set[int]:
    """Tokens that end an answer: <end_of_turn> (if the vocabulary has it) and every eos id."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if end_of_turn != tokenizer.unk_token_id:
        ids.add(end_of_turn)
    return {i for i in ids if isinstance(i, int)}


def _byte_level(tokenizer) -> bool:
    """GPT-2 style byte-level BPE: every character of a token stands for one byte."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.decoder)


def _adapter_key(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _peft_name(key: str) -> str:
    """A peft adapter name for a folder: letters, digits and _ only (peft names cannot contain dots)."""
    readable = re.sub(r"[^A-Za-z0-9_]", "_", Path(key).name)[:40]
    return f"a_{readable}_{sha1(key.encode()).hexdigest()[:8]}"
