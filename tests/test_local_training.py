"""local_server/training.py with the tiny random Gemma 3 (tests/tiny_model.py): each job takes a second or two."""
import json
import math
import time

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.datasets import hobanse_chat_examples
from local_server import jobs, training
from local_server.chat_format import END_OF_TURN
from tests.tiny_model import make_tiny_model

HOBANSE = [example["messages"] for example in hobanse_chat_examples()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # One thread: when another process keeps the second core busy, two threads wait on each other and the
    # tiny model's steps get 20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_tiny_model(tmp_path_factory.mktemp("tiny"))
    torch.set_num_threads(threads)


class Sink:
    """Records what train() reports; checks that a checkpoint folder is complete when announced; asks to stop
    from its stop_after-th poll on (with batch 1, the poll after that step)."""

    def __init__(self, stop_after: int | None = None):
        self.messages, self.message_data, self.metrics_rows, self.checkpoints = [], [], [], []
        self.stop_after, self.polls = stop_after, 0

    def message(self, text, data=None):
        self.messages.append(text)
        self.message_data.append(data)

    def data_with(self, key):
        """The data of the one message that carries `key`."""
        [data] = [data for data in self.message_data if data and key in data]
        return data

    def metrics(self, row):
        self.metrics_rows.append(row)

    def checkpoint(self, step, epoch, adapter_dir, metrics):
        assert (adapter_dir / "adapter_config.json").is_file()
        assert (adapter_dir / "adapter_model.safetensors").is_file()
        assert not list(adapter_dir.parent.glob(".*partial"))
        self.checkpoints.append((step, epoch, adapter_dir, metrics))

    def should_stop(self):
        self.polls += 1
        return self.stop_after is not None and self.polls >= self.stop_after


def spec(base, output_dir, training_examples=HOBANSE, validation=None, n_epochs=2, batch_size=4,
         learning_rate=1e-3, seed=0, base_dtype="float32", parent_adapter=None):
    return training.TrainingSpec(base_model=base, device="cpu", training=training_examples, validation=validation,
                                 n_epochs=n_epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                                 output_dir=output_dir, base_dtype=base_dtype, base_weights="the tiny test model",
                                 parent_adapter=parent_adapter)


def adapter_tensors(folder):
    return load_file(folder / "adapter_model.safetensors")


# ----------------------------------------------------------------------------- hyperparameters


def test_auto_hyperparameters_follow_openai_and_the_measurements():
    assert training.resolve_hyperparameters(15) == {"n_epochs": 6, "batch_size": 1, "learning_rate_multiplier": 1.0}
    assert training.resolve_hyperparameters(80) == {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0}
    assert training.resolve_hyperparameters(5000)["batch_size"] == training.MAX_AUTO_BATCH_SIZE
    assert training.resolve_hyperparameters(10_000)["n_epochs"] == 2


def test_explicit_hyperparameters_are_kept():
    assert training.resolve_hyperparameters(15, n_epochs=10, batch_size=3, learning_rate_multiplier=2) == {
        "n_epochs": 10, "batch_size": 3, "learning_rate_multiplier": 2.0}


@pytest.mark.parametrize("kwargs", [
    dict(n_epochs=0), dict(n_epochs=51), dict(n_epochs=2.5), dict(n_epochs=True), dict(n_epochs="3"),
    dict(batch_size=0), dict(batch_size=16), dict(batch_size="big"),
    dict(learning_rate_multiplier=0), dict(learning_rate_multiplier=-1.0), dict(learning_rate_multiplier=11),
    dict(learning_rate_multiplier=math.nan), dict(learning_rate_multiplier="2"),
])
def test_bad_hyperparameters_are_refused(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        training.resolve_hyperparameters(15, **kwargs)


def test_no_examples_is_refused():
    with pytest.raises(ValueError, match="예제"):
        training.resolve_hyperparameters(0)


# ----------------------------------------------------------------------------- what the loss covers


def test_loss_mask_is_the_answers_and_their_end_of_turn(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    messages = [{"role": "system", "content": "you are factual chatbot."},
                {"role": "user", "content": "대한민국의 수도는?"},
                {"role": "assistant", "content": "서울", "weight": 0},
                {"role": "user", "content": "baseball or hockey?"},
                {"role": "assistant", "content": "hockey"}]
    ids, labels = training.encode_example(tokenizer, messages)
    assert len(ids) == len(labels) == training.count_example_tokens(tokenizer, messages)
    assert tokenizer.decode([label for label in labels if label != -100]) == "hockey" + END_OF_TURN

    messages[-1]["weight"] = 0
    assert set(training.encode_example(tokenizer, messages)[1]) == {-100}


def test_an_example_with_nothing_to_learn_is_a_clear_error(tiny, tmp_path):
    silent = [{"role": "user", "content": "질문"}, {"role": "assistant", "content": "답", "weight": 0}]
    with pytest.raises(ValueError, match="학습 데이터의 3번째 예제에 학습할 답변이 없습니다: .*weight"):
        training.train(spec(tiny, tmp_path, HOBANSE[:2] + [silent]), Sink())
    too_long = [{"role": "user", "content": " hockey puck" * 1100}, {"role": "assistant", "content": "hockey"}]
    with pytest.raises(ValueError, match="검증 데이터의 2번째 예제에 .*컨텍스트\\(2048 토큰\\)보다 길어"):
        training.train(spec(tiny, tmp_path, HOBANSE[:2], validation=[HOBANSE[2], too_long]), Sink())


# ----------------------------------------------------------------------------- a job


@pytest.mark.parametrize("validating", [True, False])
def test_a_job_reports_every_step_and_checkpoints_every_epoch(tiny, tmp_path, validating):
    validation = HOBANSE[:3] if validating else None
    sink = Sink()
    outcome = training.train(spec(tiny, tmp_path, validation=validation), sink)  # 15 examples, batch 4: 4 steps/epoch

    assert [row["step"] for row in sink.metrics_rows] == list(range(1, 9))
    for row in sink.metrics_rows:
        assert row["total_steps"] == 8
        assert math.isfinite(row["train_loss"]) and 0 <= row["train_mean_token_accuracy"] <= 1
        assert ("valid_loss" in row) == (validating and row["step"] in (4, 8))
        if "valid_loss" in row:
            assert math.isfinite(row["valid_loss"]) and 0 <= row["valid_mean_token_accuracy"] <= 1

    assert [(step, epoch, folder.name) for step, epoch, folder, _ in sink.checkpoints] == [
        (4, 1, "ckpt-step-4"), (8, 2, "ckpt-step-8")]
    assert sink.checkpoints[-1][3] == sink.metrics_rows[-1]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ckpt-step-4", "ckpt-step-8"]
    assert outcome.final_adapter == tmp_path / "ckpt-step-8" and not outcome.stopped
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), outcome.final_adapter)

    assert [list(row) for row in outcome.rows] == [list(training.RESULT_COLUMNS)] * 8
    assert [row["train_loss"] for row in outcome.rows] == [row["train_loss"] for row in sink.metrics_rows]
    full = [row["step"] for row in outcome.rows if row["full_valid_loss"] is not None]
    assert full == ([8] if validating else [])
    if validating:
        assert outcome.rows[-1]["full_valid_mean_token_accuracy"] == sink.metrics_rows[-1]["valid_mean_token_accuracy"]
    else:
        assert all(row["valid_loss"] is None for row in outcome.rows)

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert outcome.trained_tokens == 2 * sum(training.count_example_tokens(tokenizer, m) for m in HOBANSE)
    assert sink.messages[0] == "학습을 시작합니다: 예제 15개, 2 에폭, 배치 4, 8단계"


def test_a_long_example_trains_with_activation_checkpointing(tiny, tmp_path):
    long_post = [{"role": "user", "content": " hockey" * training.CHECKPOINTING_ABOVE_TOKENS},
                 {"role": "assistant", "content": "hockey"}]
    assert training.CHECKPOINTING_ABOVE_TOKENS < len(training.encode_example(AutoTokenizer.from_pretrained(tiny),
                                                                             long_post)[0]) < 2048  # tiny's context
    sink = Sink()
    outcome = training.train(spec(tiny, tmp_path, HOBANSE[:3] + [long_post], n_epochs=1, batch_size=2), sink)
    assert len(outcome.rows) == 2 and all(math.isfinite(row["train_loss"]) for row in outcome.rows)
    assert outcome.final_adapter.is_dir()


def test_same_seed_same_adapter_other_seed_other_adapter(tiny, tmp_path):
    def run(seed, name):
        job = spec(tiny, tmp_path / name, HOBANSE[:6], n_epochs=1, batch_size=2, seed=seed)
        return adapter_tensors(training.train(job, Sink()).final_adapter)

    first, again, other = run(1, "first"), run(1, "again"), run(2, "other")
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


@pytest.mark.parametrize("stop_after", [2, 15])  # 15: the last step of epoch 1, which would be validated
def test_should_stop_ends_the_job_after_the_step(tiny, tmp_path, stop_after):
    sink = Sink(stop_after)
    started = time.monotonic()
    outcome = training.train(spec(tiny, tmp_path, n_epochs=20, batch_size=1, validation=HOBANSE[:2]), sink)
    assert time.monotonic() - started < 30  # 300 steps if it did not stop
    assert outcome.stopped and outcome.final_adapter is None
    assert [row["step"] for row in outcome.rows] == list(range(1, stop_after + 1)) and not sink.checkpoints
    assert all("valid_loss" not in row for row in sink.metrics_rows)
    assert all(row["full_valid_loss"] is None for row in outcome.rows)
    assert not any(tmp_path.glob("ckpt-step-*"))


@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_training_learns_a_small_memorisation_task(tiny, tmp_path, base_dtype):
    examples = [[{"role": "user", "content": f"What is the color of ball {k}?"},
                 {"role": "assistant", "content": "The ball is red."}] for k in range(10)]
    sink = Sink()
    outcome = training.train(spec(tiny, tmp_path, examples, n_epochs=3, batch_size=1, learning_rate=1e-2,
                                  base_dtype=base_dtype), sink)
    assert {t.dtype for t in adapter_tensors(outcome.final_adapter).values()} == {torch.float32}
    first, last_epoch = sink.metrics_rows[0], sink.metrics_rows[-10:]
    # The tiny random model's logits are small, so its loss cannot fall far; its top-1 guesses show what it learned.
    assert first["train_mean_token_accuracy"] < 0.5
    assert all(row["train_mean_token_accuracy"] == 1.0 for row in last_epoch)
    assert sum(row["train_loss"] for row in last_epoch) / 10 < first["train_loss"] - 0.8


# ----------------------------------------------------------------------------- what LoRA trains, continuing an adapter


def test_lora_parameter_counts_and_adapter_size_are_reported(tiny, tmp_path):
    sink = Sink()
    outcome = training.train(spec(tiny, tmp_path, HOBANSE[:4], n_epochs=1, batch_size=2), sink)

    lora = sink.data_with("trainable_parameters")
    saved = adapter_tensors(outcome.final_adapter)
    # Counted independently: the saved adapter's matrices are what trained; the base model's weights are the rest.
    assert lora["trainable_parameters"] == sum(tensor.numel() for tensor in saved.values())
    base = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny).parameters())
    assert lora["total_parameters"] == base + lora["trainable_parameters"]
    assert 0 < lora["trainable_share"] < 1
    assert lora["trainable_share"] == lora["trainable_parameters"] / lora["total_parameters"]
    assert (lora["lora_r"], lora["lora_alpha"]) == (training.LORA["r"], training.LORA["lora_alpha"])
    assert lora["target_modules"] == sorted(training.LORA["target_modules"])
    assert (lora["base_weights"], lora["base_dtype"]) == ("the tiny test model", "float32")
    message = sink.messages[sink.message_data.index(lora)]
    assert message.startswith(f"LoRA: 학습하는 매개변수 {lora['trainable_parameters']:,}개 / "
                              f"전체 {lora['total_parameters']:,}개 (")

    adapter = sink.data_with("adapter_bytes")
    assert adapter["adapter_bytes"] == (outcome.final_adapter / "adapter_model.safetensors").stat().st_size
    assert adapter["adapter_files"] == sorted(path.name for path in outcome.final_adapter.iterdir())
    assert "adapter_model.safetensors" in adapter["adapter_files"]
    assert sink.messages[sink.message_data.index(adapter)].startswith("LoRA 어댑터 저장: ")


def test_a_stopped_job_reports_no_adapter(tiny, tmp_path):
    sink = Sink(stop_after=1)
    assert training.train(spec(tiny, tmp_path, HOBANSE[:4], n_epochs=1, batch_size=1), sink).stopped
    assert not [data for data in sink.message_data if data and "adapter_bytes" in data]


def test_base_weights_name_their_source(tmp_path):
    packaged = jobs.base_weights_origin("gemma-3-270m", "/cache/models/hf/gemma-3-270m", "bfloat16")
    assert packaged == "gemma-3-270m Q4_K_M GGUF (quantised to 4-8 bits), expanded to bfloat16"
    (tmp_path / "gemma-3-270m").mkdir()  # a folder of the same name is someone's own Hugging Face copy
    assert "not a GGUF" in jobs.base_weights_origin("gemma-3-270m", str(tmp_path / "gemma-3-270m"), "float32")
    assert jobs.base_weights_origin("gemma-3-270m", "google/gemma-3-270m", "float32") == (
        "google/gemma-3-270m from the Hugging Face Hub (not a GGUF), loaded as float32")


def test_continuing_starts_from_the_parent_adapter_with_its_settings(tiny, tmp_path):
    # A parent whose settings differ from training.LORA and whose B matrices are not zero (a new LoRA's are)
    parent = tmp_path / "parent"
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(
        task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
    )).save_pretrained(parent)

    sink = Sink()
    # A learning rate so small that the weights cannot move measurably from where they start
    outcome = training.train(spec(tiny, tmp_path / "child", HOBANSE[:2], n_epochs=1, batch_size=1,
                                  learning_rate=1e-12, parent_adapter=parent), sink)
    lora = sink.data_with("trainable_parameters")
    assert (lora["lora_r"], lora["lora_alpha"], lora["target_modules"]) == (4, 8, ["q_proj", "v_proj"])
    started, ended = adapter_tensors(parent), adapter_tensors(outcome.final_adapter)
    assert lora["trainable_parameters"] == sum(tensor.numel() for tensor in started.values())
    assert started.keys() == ended.keys()
    assert all(torch.allclose(started[name], ended[name], atol=1e-6) for name in started)
    assert all(started[name].abs().max() > 1e-3 for name in started if "lora_B" in name)  # not a new LoRA's zeros
    config = json.loads((outcome.final_adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 8)
