"""Continuously batched chat generation and scoring over the base model and LoRA adapters.

Every request has its own rows in one running batch that decodes one token per step for all rows at once.
Between steps, waiting requests join: their prompts are run through the model (grouped by length to limit
padding, with a KV cache), and their rows are added to the running batch, whose cache and mask are
left-padded so that every row's last token stays in the last column. A row that is finished leaves the
batch, and a request's answer is given as soon as its own rows are finished. Only the last position's
logits are computed: the output layer (262,144 rows for Gemma 3) dominates the cost, so scoring a prompt
(max_tokens=1 with logprobs) costs one prompt forward. Rows may use different LoRA adapters in the same
batch (peft's mixed-batch inference).

Only the engine thread touches the model; other threads hand work over with `Engine.submit`.
"""
from __future__ import annotations

import concurrent.futures
import queue
import random
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from hashlib import sha1
from pathlib import Path

import torch
from peft import PeftModel
from transformers import DynamicCache
from transformers.cache_utils import DynamicSlidingWindowLayer
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
MAX_GATHER_SECONDS = 0.2  # the longest an idle engine waits for more requests (see Engine._take)
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
    job: _Job | None = None         # the submitted request this row answers
    tokens: list[int] = field(default_factory=list)   # generated, without the end-of-turn/eos token
    logprobs: list[dict] = field(default_factory=list)
    completion_tokens: int = 0
    text: str | None = None         # set when a stop string cut it
    finish_reason: str | None = None


@dataclass(eq=False)  # compared and hashed by identity: a set of jobs is a set of distinct submissions
class _Job:
    """A submitted request, the future its answer goes to, and its rows once it has joined the batch."""
    request: GenerationRequest
    future: concurrent.futures.Future
    rows: list[_Row] = field(default_factory=list)


@dataclass
class _Unload:
    """Housekeeping for the engine thread: unload the adapter at folder `key`, once no running row uses it."""
    key: str
    future: concurrent.futures.Future


class _Batch:
    """Rows decoding together, each at its own position. Their KV cache and attention mask are left-padded so
    that every row's last token is in the last column: rows of different lengths then take one step together."""

    def __init__(self, cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor, rows: list[_Row],
                 adapters: list[str | None]):
        self.cache, self.mask = cache, mask
        self.positions = positions  # (rows, 1): the position of each row's last token
        self.rows, self.adapters = rows, adapters
        self.tokens: list[int] = []  # each row's next input: the token it was given last

    def join(self, other: _Batch) -> None:
        """Take the rows of `other` in: both caches and masks are left-padded to the wider of the two."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            # A sliding-window layer holds only its last columns: both are padded to what the wider one holds there.
            columns = max(mine.keys.shape[-2], theirs.keys.shape[-2])
            mine.keys = torch.cat([_pad_left(mine.keys, columns, -2), _pad_left(theirs.keys, columns, -2)])
            mine.values = torch.cat([_pad_left(mine.values, columns, -2), _pad_left(theirs.values, columns, -2)])
            if isinstance(mine, DynamicSlidingWindowLayer):
                mine.cumulative_length = width  # the columns seen so far, from which its part of the mask is found
        self.mask = torch.cat([_pad_left(self.mask, width, -1), _pad_left(other.mask, width, -1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.rows, self.adapters, self.tokens = (self.rows + other.rows, self.adapters + other.adapters,
                                                 self.tokens + other.tokens)

    def keep(self, alive: list[int]) -> None:
        """Only the rows at `alive` stay. The columns none of them attends to (padding for a row that left) are
        dropped, so that a batch that keeps running does not keep growing."""
        index = torch.tensor(alive, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        self.rows, self.adapters, self.tokens = ([seq[i] for i in alive] for seq in (self.rows, self.adapters,
                                                                                     self.tokens))
        unused = int(self.mask.any(0).int().argmax())  # leading columns that are padding in every row
        if unused:
            self.mask = self.mask[:, unused:]
            width = self.mask.shape[1]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., -width:, :], layer.values[..., -width:, :]
                if isinstance(layer, DynamicSlidingWindowLayer):
                    layer.cumulative_length = width


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
        return self._submit([request])[0]

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Queue requests as one arrival (their prompts are run together) and wait for their results."""
        return [future.result() for future in self._submit(requests)]

    def forget_adapter(self, adapter_path: str) -> None:
        """Unload an adapter (e.g. its model was deleted); waits until the engine thread has done it, which is as soon
        as no running row uses it."""
        future = concurrent.futures.Future()
        self._put(_Unload(_adapter_key(adapter_path), future))
        future.result()

    def close(self) -> None:
        """Finish the queued and running work, then stop the engine thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        if self._head_hook is not None:
            self._head_hook.remove()

    def _submit(self, requests: list[GenerationRequest]) -> list[concurrent.futures.Future]:
        for request in requests:
            self._validate(request)
        jobs = [_Job(request, concurrent.futures.Future()) for request in requests]
        self._put(jobs)
        return [job.future for job in jobs]

    # --- engine thread ----------------------------------------------------------------------------

    def _put(self, item) -> None:
        if self._closed:
            raise RuntimeError("inference engine is closed")
        self._queue.put(item)

    def _serve(self) -> None:
        """Between decoding steps: take what was handed over, unload adapters no row uses any more, let waiting
        requests join the batch, then take one step."""
        waiting: deque[_Job] = deque()
        unloads: list[_Unload] = []
        batch: _Batch | None = None
        closing = False
        while True:
            closing = self._take(waiting, unloads, block=batch is None and not waiting and not closing) or closing
            in_use = set(batch.adapters) if batch is not None else set()
            for unload in [unload for unload in unloads if unload.key not in in_use]:
                unloads.remove(unload)
                _settle(unload.future, lambda key=unload.key: self._unload_adapter(key))
            if closing and batch is None and not waiting:
                return
            batch = self._admit(waiting, batch)
            if batch is not None:
                batch = self._step(batch)

    def _take(self, waiting: deque, unloads: list, block: bool) -> bool:
        """Move the handed-over work into `waiting` and `unloads`; True once close() has been called.

        A busy engine takes only what is there. An idle one (block) waits for work, then gathers while requests
        keep coming (each arrival waits batch_window for the next, up to MAX_GATHER_SECONDS): 20 requests sent
        together reach the engine over a few tens of ms, and their prompts are then run through the model together.
        """
        deadline = first_arrival = None  # while blocking: None until the first request arrives
        while True:
            try:
                if not block:
                    item = self._queue.get_nowait()
                else:
                    item = self._queue.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if item is None:
                return True
            if isinstance(item, _Unload):
                if item.future.set_running_or_notify_cancel():
                    unloads.append(item)
                if block and deadline is None:
                    return False  # done at once, not after a gathering
                continue
            waiting.extend(job for job in item if job.future.set_running_or_notify_cancel())
            if block:
                now = time.monotonic()
                first_arrival = first_arrival or now
                deadline = min(now + self.batch_window, first_arrival + MAX_GATHER_SECONDS)

    def _admit(self, waiting: deque, batch: _Batch | None) -> _Batch | None:
        """Run the prompts of the waiting requests that fit beside the batch's rows, and add their rows to it.

        In arrival order, up to max_batch rows in all; a request answered by its first token (max_tokens=1, as
        scoring asks) never takes a place in the batch, so it does not wait for one.
        """
        free = self.max_batch - (len(batch.rows) if batch is not None else 0)
        jobs, later, blocked = [], [], False
        for job in waiting:
            places = job.request.n if self._answer_limit(job.request) > 1 else 0
            if places and (blocked or places > free):
                blocked = True  # later requests do not overtake it
                later.append(job)
                continue
            free -= places
            jobs.append(job)
        waiting.clear()
        waiting.extend(later)
        prompts: dict[tuple, list[_Row]] = {}  # (adapter, prompt) -> its rows: identical prompts are run once
        for job in self._with_adapters(jobs, in_use=set(batch.adapters) if batch is not None else set()):
            seeds = random.Random(job.request.seed)  # None: seeded from the OS
            job.rows = [_Row(job.request, torch.Generator().manual_seed(seeds.getrandbits(63)), job)
                        for _ in range(job.request.n)]
            adapter = _adapter_key(job.request.adapter) if job.request.adapter else None
            prompts.setdefault((adapter, tuple(job.request.prompt_ids)), []).extend(job.rows)
        for group in self._group(list(prompts.items())):
            try:
                joining, logits = self._prefill(group)
                joining.tokens = self._pick(joining.rows, logits)
            except Exception as error:  # noqa: BLE001 - handed to the callers of this group
                _fail({row.job for _, rows in group for row in rows}, error)
                continue
            joining = self._leave(joining)
            if joining is None:
                continue
            if batch is None:
                batch = joining
                continue
            try:
                batch.join(joining)
            except Exception as error:  # noqa: BLE001 - a half-joined cache serves no one: its callers hear why
                _fail({row.job for row in batch.rows + joining.rows}, error)
                batch = None
        return batch

    def _with_adapters(self, jobs: list[_Job], in_use: set[str]) -> list[_Job]:
        """Load the jobs' adapters (keeping those of the running rows); a job whose adapter cannot be loaded fails
        alone. Returns the jobs that can run."""
        needed = {_adapter_key(job.request.adapter) for job in jobs if job.request.adapter}
        failed = {}
        for key in needed:
            try:
                self._load_adapter(key, keep=needed | in_use)
            except Exception as error:  # noqa: BLE001 - handed to that request's caller
                failed[key] = error
        ready = []
        for job in jobs:
            key = _adapter_key(job.request.adapter) if job.request.adapter else None
            if key in failed:
                job.future.set_exception(failed[key])
            else:
                ready.append(job)
        return ready

    @torch.inference_mode()
    def _step(self, batch: _Batch) -> _Batch | None:
        """One decoding step for every row of the batch; None when no row is left."""
        try:
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.rows), 1)], dim=1)
            batch.positions = batch.positions + 1
            logits = self._forward(torch.tensor(batch.tokens, device=self.device)[:, None], batch.mask,
                                   batch.positions, batch.cache, batch.adapters)
            batch.tokens = self._pick(batch.rows, logits)
            return self._leave(batch)
        except Exception as error:  # noqa: BLE001 - every caller with a row in the batch hears about it
            _fail({row.job for row in batch.rows}, error)
            return None

    def _leave(self, batch: _Batch) -> _Batch | None:
        """Finished rows leave the batch, and a request whose rows are all finished gets its answer now."""
        alive = [i for i, row in enumerate(batch.rows) if row.finish_reason is None]
        for job in {row.job for row in batch.rows if row.finish_reason is not None}:
            if all(row.finish_reason is not None for row in job.rows):
                job.future.set_result(GenerationResult([self._choice(row) for row in job.rows],
                                                       len(job.request.prompt_ids)))
        if not alive:
            return None
        if len(alive) < len(batch.rows):
            batch.keep(alive)
        return batch

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

    def _group(self, prompts):
        """Split prompts into batches of similar length, at the least estimated cost.

        Sorted by length, the prompts are cut into consecutive batches (at most max_batch rows and
        PREFILL_TOKENS padded tokens each) so that padded prompt tokens plus FORWARD_COST_TOKENS per
        forward pass is smallest: short posts are then not padded to a long one's length. (However they
        are grouped, their answers are then decoded in the one running batch.)
        """
        prompts.sort(key=lambda item: len(item[0][1]))
        best = [(0.0, 0)] + [(float("inf"), 0)] * len(prompts)  # best[j]: (cost of the first j prompts, cut before)
        for end in range(1, len(prompts) + 1):
            width, rows = len(prompts[end - 1][0][1]), 0
            for start in range(end - 1, -1, -1):
                rows += len(prompts[start][1])
                if start < end - 1 and (rows > self.max_batch or (end - start) * width > PREFILL_TOKENS):
                    break
                cost = best[start][0] + (end - start) * width + FORWARD_COST_TOKENS
                if cost < best[end][0]:
                    best[end] = (cost, start)
        groups, end = [], len(prompts)
        while end:
            start = best[end][1]
            groups.append(prompts[start:end])
            end = start
        return groups[::-1]

    @torch.inference_mode()
    def _prefill(self, group) -> tuple[_Batch, torch.Tensor]:
        """Run a group's prompts (left-padded into one batch) through the model: their rows' batch, and the logits
        of each row's first token."""
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
        return _Batch(cache, mask, positions[index, -1:], rows, adapters), logits

    @torch.inference_mode()
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
            elif row.completion_tokens >= self._answer_limit(request):
                row.finish_reason = "length"
        return tokens

    def _answer_limit(self, request: GenerationRequest) -> int:
        """The most tokens an answer can have: max_tokens, or what is left of the context after the prompt."""
        return min(request.max_tokens, self.context_length - len(request.prompt_ids))

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


def _pad_left(tensor: torch.Tensor, columns: int, dim: int) -> torch.Tensor:
    """`tensor` widened to `columns` along `dim` with zeros (masked-out columns) before its own."""
    missing = columns - tensor.shape[dim]
    if not missing:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim)


def _fail(jobs, error: Exception) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)


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
