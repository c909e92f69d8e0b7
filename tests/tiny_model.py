"""A tiny randomly initialised Gemma 3 model and tokenizer for fast tests (seconds, nothing downloaded).

Same architecture as the course's Gemma 3 270M (Gemma3ForCausalLM, Gemma turn tokens), but a few
hundred thousand parameters and a byte-level BPE tokenizer trained here on the course's own data.
The folder it writes loads with AutoModelForCausalLM / AutoTokenizer like any local model path.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def _course_texts() -> list[str]:
    texts = [(ROOT / "data" / "hobanse" / name).read_text(encoding="utf-8") for name in ("rules.md", "qa.csv",
                                                                                          "eval_questions.csv")]
    for line in (ROOT / "data" / "newsgroups" / "sample.jsonl").read_text(encoding="utf-8").splitlines()[:30]:
        texts.append(json.loads(line).get("text", ""))
    return texts + ["you are factual chatbot. baseball hockey user model 대한민국의 수도는 서울"]


def make_tiny_model(folder, vocab_size: int = 800, seed: int = 0) -> Path:
    """Write a tiny Gemma 3 causal LM and its tokenizer to `folder`; return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_course_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=2048, sliding_window=64,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    return folder
