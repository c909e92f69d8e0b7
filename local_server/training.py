"""LoRA supervised fine-tuning of a causal LM on OpenAI chat examples, for the local server's worker.

TRL's SFTTrainer does the training, with one change (a subclass): the LM head projects only the positions that
predict an answer token. TRL's fused head narrows to them on CUDA only; on CPU it scores the 262,144-word
vocabulary at every position (36 s and 6.3 GB for one 1,091-token newsgroups post, 13 s and 4.2 GB without
it; activation checkpointing for long examples brings that to 2.4 GB). The examples are tokenized here with
the turn format's `{% generation %}` markers (chat_format.py), so the loss covers exactly what the model says
(each answer and its `<end_of_turn>`) and a learner's mistake becomes a Korean ValueError, not a silent drop.
A callback turns the Trainer's events into the worker's sink: a metrics row per optimizer step, the validation
at the end of each epoch, an adapter checkpoint per epoch, and the cancel check. The sink also gets what LoRA trains
(parameter counts, r, alpha, target modules, where the base weights come from) and the saved adapter's size.
A job may start from an earlier job's adapter (continued fine-tuning): that adapter, with its own LoRA settings,
is what trains further.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import SFTConfig, SFTTrainer

from helpers.chat_data import default_epochs
from local_server.base_model import DTYPES
from local_server.chat_format import use_turn_format

BASE_LEARNING_RATE = 2e-4  # x learning_rate_multiplier; on 호반스, 4e-4 and 1e-3 learned fewer answers
LORA = dict(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"], lora_dropout=0.0)  # 3.8M trainable on Gemma 3 270M
EXAMPLES_PER_AUTO_BATCH = 20  # "auto" batch: 15 examples -> 1, 80 -> 4 (batch 1 was unstable on 80 posts)
MAX_AUTO_BATCH_SIZE = 16
MAX_EPOCHS = 50  # OpenAI's limits for n_epochs and batch_size
MAX_BATCH_SIZE = 256
MAX_LEARNING_RATE_MULTIPLIER = 10.0
# Without activation checkpointing, peak RSS grows ~2.5 MB a token of the longest example (4.2 GB at 1,091 tokens
# on Gemma 3 270M); with it ~0.7 MB a token (2.4 GB at 1,091), for 15-45% more time a step.
CHECKPOINTING_ABOVE_TOKENS = 512
RESULT_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                  "full_valid_loss", "full_valid_mean_token_accuracy")


def resolve_hyperparameters(n_examples: int, n_epochs="auto", batch_size="auto",
                            learning_rate_multiplier="auto") -> dict:
    """Replace "auto" like OpenAI does and check the values; a bad value raises ValueError (Korean)."""
    if n_examples < 1:
        raise ValueError("학습 예제가 없습니다 — 하이퍼파라미터를 정하려면 예제가 1개 이상 있어야 합니다.")
    if n_epochs == "auto":
        n_epochs = default_epochs(n_examples)
    else:
        _check_whole("n_epochs", n_epochs, MAX_EPOCHS)
    if batch_size == "auto":
        batch_size = min(MAX_AUTO_BATCH_SIZE, max(1, n_examples // EXAMPLES_PER_AUTO_BATCH))
    else:
        _check_whole("batch_size", batch_size, min(MAX_BATCH_SIZE, n_examples),
                     f" (학습 예제가 {n_examples}개라 배치가 그보다 클 수 없습니다)" if n_examples < MAX_BATCH_SIZE else "")
    if learning_rate_multiplier == "auto":
        learning_rate_multiplier = 1.0
    elif (isinstance(learning_rate_multiplier, bool) or not isinstance(learning_rate_multiplier, (int, float))
          or not 0 < learning_rate_multiplier <= MAX_LEARNING_RATE_MULTIPLIER):
        raise ValueError(f"learning_rate_multiplier 값 {learning_rate_multiplier!r}은(는) 쓸 수 없습니다 — "
                         f"0보다 크고 {MAX_LEARNING_RATE_MULTIPLIER:g} 이하인 수나 \"auto\"를 주세요.")
    return {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": float(learning_rate_multiplier)}


def _check_whole(name, value, high, why=""):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise ValueError(f"{name} 값 {value!r}은(는) 쓸 수 없습니다 — 1~{high} 사이의 정수나 \"auto\"를 주세요{why}.")


@dataclass
class TrainingSpec:
    base_model: str | Path  # folder (or HF id) for AutoModelForCausalLM / AutoTokenizer
    device: str  # "cpu", "cuda", "mps"
    training: list[list[dict]]  # OpenAI chat message lists; an assistant message may carry "weight": 0
    validation: list[list[dict]] | None
    n_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    output_dir: Path  # checkpoints: output_dir / f"ckpt-step-{step}" (peft adapter folders)
    base_weights: str  # where the base weights come from, in a few words for the learner (jobs.py)
    # The frozen base model's dtype (the server's serving dtype): bfloat16 makes a CPU step ~40% faster where the
    # hardware computes it natively. The LoRA weights and the optimizer stay float32 either way (peft upcasts them).
    base_dtype: str = "float32"
    # An earlier job's adapter folder to continue training (its r, alpha and target modules); None: a new LoRA.
    parent_adapter: Path | None = None


class TrainingSink(Protocol):
    def message(self, text: str, data: dict | None = None) -> None: ...

    def metrics(self, row: dict) -> None: ...

    def checkpoint(self, step: int, epoch: int, adapter_dir: Path, metrics: dict) -> None: ...

    def should_stop(self) -> bool: ...


@dataclass
class TrainingOutcome:
    rows: list[dict]  # result CSV rows, keys RESULT_COLUMNS (None where not measured)
    trained_tokens: int  # tokens of the training examples x epochs, like OpenAI bills
    final_adapter: Path | None  # the last epoch's checkpoint folder (None if stopped)
    stopped: bool  # should_stop() ended the job early


def encode_example(tokenizer, messages) -> tuple[list[int], list[int]]:
    """Token ids of one chat example and its labels: the token id where the model speaks (each answer with weight
    other than 0, and its `<end_of_turn>`), -100 everywhere else."""
    encoded = use_turn_format(tokenizer).apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(encoded["input_ids"])
    return ids, [token if spoken else -100 for token, spoken in zip(ids, encoded["assistant_masks"])]


def count_example_tokens(tokenizer, messages) -> int:
    """Tokens of one example in the model's turn format (the server refuses examples longer than the context)."""
    return len(encode_example(tokenizer, messages)[0])


def _dataset(tokenizer, examples, max_length: int, part: str) -> Dataset:
    """Tokenized examples cut to the model's context; an example left with nothing to learn is an error."""
    columns = {"input_ids": [], "labels": []}
    for number, messages in enumerate(examples, start=1):
        ids, labels = encode_example(tokenizer, messages)
        if all(label == -100 for label in labels[:max_length]):
            why = (f"예제가 모델의 컨텍스트({max_length} 토큰)보다 길어({len(ids)} 토큰) 답변이 잘려 나갔습니다 — "
                   "예제를 줄이세요." if len(ids) > max_length and any(label != -100 for label in labels) else
                   "assistant 답변이 없거나 모두 \"weight\": 0 입니다 — weight 가 1인 assistant 답변을 넣으세요.")
            raise ValueError(f"{part} 데이터의 {number}번째 예제에 학습할 답변이 없습니다: {why}")
        columns["input_ids"].append(ids[:max_length])
        columns["labels"].append(labels[:max_length])
    return Dataset.from_dict(columns)


def _config(spec: TrainingSpec, validating: bool, checkpointing: bool) -> SFTConfig:
    on_cpu = spec.device == "cpu"
    return SFTConfig(
        output_dir=str(spec.output_dir),
        num_train_epochs=spec.n_epochs,
        # A batch is accumulated one example at a time: batch 4 at once peaked at 7.8 GB on newsgroups posts.
        per_device_train_batch_size=1,
        gradient_accumulation_steps=spec.batch_size,
        per_device_eval_batch_size=1,  # so valid_* are means over the validation examples
        learning_rate=spec.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        weight_decay=0.0,
        seed=spec.seed,
        data_seed=spec.seed,
        # Deterministic kernels cost nothing on CPU; on CUDA the Trainer's full determinism also serialises launches.
        full_determinism=on_cpu,
        use_cpu=on_cpu,
        dataloader_pin_memory=not on_cpu,
        dataloader_num_workers=0,
        bf16=False,  # no autocast: it is slower on CPU than a bfloat16 base model (spec.base_dtype) or float32
        fp16=False,
        activation_checkpointing=checkpointing,
        max_length=None,  # _dataset already cut the examples to the model's context
        eval_strategy="epoch" if validating else "no",
        save_strategy="no",  # only the callback saves, and only the adapter
        logging_strategy="steps",
        logging_steps=1,
        report_to=[],
        disable_tqdm=True,
        push_to_hub=False,
    )


class _AnswerOnlyTrainer(SFTTrainer):
    """SFTTrainer whose loss projects only the hidden states that predict a learned token through the LM head."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # return_outputs is only asked for by compute_metrics, which this module does not use
        labels = inputs["labels"]
        predicts = torch.zeros_like(labels, dtype=torch.bool)  # position i predicts token i + 1
        predicts[:, :-1] = labels[:, 1:] != -100
        inputs = {key: value for key, value in inputs.items() if key != "labels"}
        logits = model(**inputs, logits_to_keep=predicts, use_cache=False).logits.flatten(end_dim=-2)
        targets = labels[:, 1:][predicts[:, :-1]]
        # Like SFTTrainer: the mean over the learned tokens of the whole (accumulated) batch
        loss = F.cross_entropy(logits.float(), targets, reduction="sum") / (
            len(targets) if num_items_in_batch is None else num_items_in_batch)
        accuracy = (logits.argmax(-1) == targets).float().mean().item()
        self._metrics["train" if model.training else "eval"]["mean_token_accuracy"].append(accuracy)
        return loss


class _Progress(TrainerCallback):
    """Forwards the Trainer's events to the sink and collects the result rows."""

    def __init__(self, sink: TrainingSink, output_dir: Path, steps_per_epoch: int, validating: bool):
        self.sink, self.output_dir = sink, Path(output_dir)
        self.steps_per_epoch, self.validating = steps_per_epoch, validating
        self.rows: list[dict] = []
        self.last_metrics: dict = {}
        self.final_adapter: Path | None = None
        self.stopped = False

    def on_substep_end(self, args, state, control, **kwargs):
        self._poll_stop(control)  # between the examples of a batch too, so a cancel waits for one example at most

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" not in logs:  # validation results come through on_evaluate, the final summary is not a step
            return
        metrics = {"step": state.global_step, "total_steps": state.max_steps, "train_loss": logs["loss"],
                   "train_mean_token_accuracy": logs["mean_token_accuracy"]}
        held = self.validating and state.global_step % self.steps_per_epoch == 0  # sent with the epoch's validation
        if held:
            self.last_metrics = metrics
        else:
            self._send(metrics)
        if self._poll_stop(control) and held:
            self._send(metrics)  # a cancelled job is not validated

    def _poll_stop(self, control) -> bool:
        if self.sink.should_stop():
            self.stopped = control.should_training_stop = True
        return self.stopped

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.stopped:
            control.should_evaluate = False  # a cancelled job gets neither validation nor checkpoint
        elif not self.validating:
            self._checkpoint(state, model)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self._send({**self.last_metrics, "valid_loss": metrics["eval_loss"],
                    "valid_mean_token_accuracy": metrics["eval_mean_token_accuracy"]})
        self._checkpoint(state, model)

    def _send(self, metrics: dict):
        self.sink.metrics(metrics)
        self.last_metrics = metrics
        self.rows.append({"step": metrics["step"], "train_loss": metrics["train_loss"],
                          "train_accuracy": metrics["train_mean_token_accuracy"],
                          "valid_loss": metrics.get("valid_loss"),
                          "valid_mean_token_accuracy": metrics.get("valid_mean_token_accuracy"),
                          "full_valid_loss": None, "full_valid_mean_token_accuracy": None})

    def _checkpoint(self, state, model):
        """Write the adapter under a temporary name and rename it, so a checkpoint folder is always complete."""
        step = state.global_step
        adapter_dir = self.output_dir / f"ckpt-step-{step}"
        partial = self.output_dir / f".ckpt-step-{step}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        partial.rename(adapter_dir)
        self.final_adapter = adapter_dir
        self.sink.checkpoint(step, round(state.epoch), adapter_dir, self.last_metrics)


def _report_lora(peft_model, spec: TrainingSpec, sink: TrainingSink) -> None:
    """What LoRA trains, counted on the model about to train: the adapter's matrices against every weight."""
    trainable, total = peft_model.get_nb_trainable_parameters()  # total counts the base and the adapter
    config = peft_model.peft_config[peft_model.active_adapter]
    targets = sorted(config.target_modules)
    sink.message(f"LoRA: 학습하는 매개변수 {trainable:,}개 / 전체 {total:,}개 ({trainable / total:.2%}), "
                 f"r={config.r}, alpha={config.lora_alpha}, 대상 모듈 {', '.join(targets)}; "
                 f"기본 가중치: {spec.base_weights}",
                 {"trainable_parameters": trainable, "total_parameters": total, "trainable_share": trainable / total,
                  "lora_r": config.r, "lora_alpha": config.lora_alpha, "target_modules": targets,
                  "base_weights": spec.base_weights, "base_dtype": spec.base_dtype})


def _report_adapter(adapter_dir: Path, sink: TrainingSink) -> None:
    """The saved adapter's size on disk: what a fine-tuned model adds to the base model."""
    weights = adapter_dir / "adapter_model.safetensors"
    size = weights.stat().st_size
    sink.message(f"LoRA 어댑터 저장: {size / 1e6:.1f} MB ({weights.name})",
                 {"adapter_bytes": size, "adapter_files": sorted(path.name for path in adapter_dir.iterdir())})


def train(spec: TrainingSpec, sink: TrainingSink) -> TrainingOutcome:
    """Fine-tune a LoRA adapter on spec.training; see the module docstring for what the sink receives."""
    started = time.monotonic()
    tokenizer = use_turn_format(AutoTokenizer.from_pretrained(spec.base_model))
    model = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=DTYPES[spec.base_dtype])
    if spec.parent_adapter is not None:
        # The parent's LoRA weights are the starting point and keep training (peft upcasts them to float32).
        model = PeftModel.from_pretrained(model, spec.parent_adapter, is_trainable=True)
    max_length = model.config.max_position_embeddings
    train_set = _dataset(tokenizer, spec.training, max_length, "학습")
    valid_set = _dataset(tokenizer, spec.validation, max_length, "검증") if spec.validation else None
    steps_per_epoch = math.ceil(len(train_set) / spec.batch_size)
    total_steps = steps_per_epoch * spec.n_epochs
    sink.message(f"학습을 시작합니다: 예제 {len(train_set)}개, {spec.n_epochs} 에폭, 배치 {spec.batch_size}, "
                 f"{total_steps}단계")

    lengths = [len(ids) for ids in train_set["input_ids"]]
    progress = _Progress(sink, spec.output_dir, steps_per_epoch, valid_set is not None)
    args = _config(spec, valid_set is not None, checkpointing=max(lengths) > CHECKPOINTING_ABOVE_TOKENS)
    trainer = _AnswerOnlyTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=valid_set,
                                 processing_class=tokenizer, callbacks=[progress],
                                 peft_config=None if spec.parent_adapter else LoraConfig(task_type="CAUSAL_LM", **LORA))
    trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout; the sink gets them instead
    _report_lora(trainer.model, spec, sink)
    trainer.train()
    if not progress.stopped:
        _report_adapter(progress.final_adapter, sink)

    rows = progress.rows
    if valid_set is not None and not progress.stopped:  # the last step's validation is the full-set one
        rows[-1]["full_valid_loss"] = rows[-1]["valid_loss"]
        rows[-1]["full_valid_mean_token_accuracy"] = rows[-1]["valid_mean_token_accuracy"]
    seconds = time.monotonic() - started
    sink.message(f"학습을 멈췄습니다: {len(rows)}/{total_steps}단계에서 취소 ({seconds:.0f}초)" if progress.stopped else
                 f"학습을 마쳤습니다: {total_steps}단계, {seconds:.0f}초")
    return TrainingOutcome(rows=rows, trained_tokens=sum(lengths) * spec.n_epochs,
                           final_adapter=None if progress.stopped else progress.final_adapter,
                           stopped=progress.stopped)
