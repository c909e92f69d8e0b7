"""The LoRA adapters the local server writes load unchanged in vLLM's multi-LoRA serving (issue 16.6).

vLLM cannot be installed here (no GPU), so `vllm_problems` restates the rules of vLLM's LoRA loader, each with the
file and function it comes from, as read in vLLM 0.34.0 (the PyPI wheel; its vllm/_version.py names commit
62d4bc3c7). The adapters of a job the server trained (tiny Gemma 3, real HTTP, the training worker), every checkpoint
folder included, and of its model trained further (continued fine-tuning, the same training code in this process) must
break none of them; each rule is shown to catch a broken adapter.

What this cannot check without vLLM and a GPU: that vLLM actually loads and applies the adapter (its CUDA kernels, the
packing of q/k/v and gate/up into one LoRA each, dtype casts), that its answers match this server's, and the commands of
the README's recipe. Rules of a later vLLM may differ; the README names the version this was checked against.
"""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from helpers import chat_data, datasets
from local_server import training
from local_server.server import Settings
from tests.running_server import RunningServer, upload, wait_for

# vllm/config/lora.py, LoRAConfig.max_lora_rank: the default of `--max-lora-rank`; the values it may be given are
# MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] (same file).
DEFAULT_MAX_LORA_RANK = 16
# vllm/model_executor/models/gemma3.py, Gemma3ForCausalLM.packed_modules_mapping: vLLM runs q/k/v as one qkv_proj and
# gate/up as one gate_up_proj. Its LoRA layers are the model's LinearBase modules (vllm/lora/utils.py,
# get_supported_lora_modules: qkv_proj, o_proj, gate_up_proj, down_proj), and vllm/lora/worker_manager.py,
# WorkerLoRAManager._load_adapter, expands the packed ones into the names an adapter may use:
GEMMA3_LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# vllm/lora/peft_helper.py, PEFTHelper._init_is_supported: string inits that leave the base weights as they are.
PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")


def gemma3_lora_layers(base_config) -> dict[str, tuple[int, int]]:
    """vLLM's name of every layer of Gemma3ForCausalLM that takes a LoRA -> (in, out) features, from the HF config.

    vllm/model_executor/models/gemma3.py: Gemma3Model.layers[i].self_attn.{qkv_proj,o_proj} and .mlp.{gate_up_proj,
    down_proj}, under the prefix "model" (Gemma3ForCausalLM.__init__); the adapter names the unpacked parts."""
    config = base_config.get_text_config()
    hidden, head_dim, ffn = config.hidden_size, config.head_dim, config.intermediate_size
    queries, keys = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    features = {"self_attn.q_proj": (hidden, queries), "self_attn.k_proj": (hidden, keys),
                "self_attn.v_proj": (hidden, keys), "self_attn.o_proj": (queries, hidden),
                "mlp.gate_proj": (hidden, ffn), "mlp.up_proj": (hidden, ffn), "mlp.down_proj": (ffn, hidden)}
    return {f"model.layers.{layer}.{name}": shape for layer in range(config.num_hidden_layers)
            for name, shape in features.items()}


def vllm_problems(adapter_dir, base_config, max_lora_rank: int = DEFAULT_MAX_LORA_RANK) -> list[str]:
    """Every way the adapter in `adapter_dir` breaks vLLM's LoRA loading rules for a Gemma 3 base model (none: [])."""
    # vllm/lora/peft_helper.py, PEFTHelper.from_local_dir: the settings come from adapter_config.json;
    # vllm/lora/lora_model.py, LoRAModel.from_local_checkpoint: the weights from adapter_model.safetensors (.bin/.pt
    # are the fallbacks; without any: "doesn't contain tensors").
    config_file, weights_file = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    missing = [path.name for path in (config_file, weights_file) if not path.is_file()]
    if missing:
        return [f"missing {', '.join(missing)} (peft_helper.from_local_dir, lora_model.from_local_checkpoint)"]
    config = json.loads(config_file.read_text(encoding="utf-8"))
    problems = []

    # PEFTHelper.from_dict: r, lora_alpha and target_modules are required; __post_init__: r (and every rank_pattern
    # value) a positive integer. validate_legal: no rank above LoRAConfig.max_lora_rank.
    problems += [f"adapter_config.json lacks {name} (PEFTHelper.from_dict)"
                 for name in ("r", "lora_alpha", "target_modules") if name not in config]
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    if not all(isinstance(rank, int) and 0 < rank <= max_lora_rank for rank in ranks):
        problems.append(f"ranks {ranks} are not all whole numbers in 1..max_lora_rank {max_lora_rank} "
                        "(PEFTHelper.__post_init__, validate_legal)")
    # PEFTHelper._validate_features: modules_to_save only ["classifier", "score"] of a classification model (a causal
    # LM has none; __post_init__ adds them for task_type SEQ_CLS/TOKEN_CLS), no DoRA, no lora_bias, no init that
    # changes the base weights (PiSSA, OLoRA, CorDA, LoftQ), no aLoRA, layer_replication, BD-LoRA or QALoRA.
    if config.get("modules_to_save") or config.get("task_type") in ("SEQ_CLS", "TOKEN_CLS"):
        problems.append(f"modules_to_save {config.get('modules_to_save')!r} / task_type {config.get('task_type')!r}: "
                        "vLLM serves a causal LM's LoRA only without full modules (PEFTHelper._validate_features)")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in PLAIN_INITS:
        problems.append(f"init_lora_weights {init!r} changes the base weights (PEFTHelper._init_is_supported)")
    problems += [f"{name} = {config[name]!r} is not supported (PEFTHelper._validate_features)"
                 for name in ("use_dora", "lora_bias", "alora_invocation_tokens", "layer_replication", "use_bdlora",
                              "use_qalora") if config.get(name)]
    # PEFTHelper.validate_legal: "Adapter bias is not supported."
    if config.get("bias", "none") != "none":
        problems.append(f"bias {config['bias']!r} is not supported (PEFTHelper.validate_legal)")

    layers = gemma3_lora_layers(base_config)
    pairs: dict[str, dict[str, tuple]] = {}
    for name, tensor in load_file(weights_file).items():
        # vllm/lora/utils.py, parse_fine_tuned_lora_name: "base_model.model." + module + ".lora_A.weight" or
        # ".lora_B.weight"; anything else raises "is unsupported LoRA weight" (a lora bias included). Gemma 3's
        # hf_to_vllm_mapper only packs names, which _load_adapter drops (get_rename_mapper): no renaming applies.
        prefix, _, part = name.rpartition(".lora_")
        if not name.startswith("base_model.model.") or part not in ("A.weight", "B.weight"):
            problems.append(f"{name}: not base_model.model.<module>.lora_A/B.weight (utils.parse_fine_tuned_lora_name)")
            continue
        module = prefix.removeprefix("base_model.model.")
        # LoRAModel.from_local_checkpoint, check_unexpected_modules: a module outside the model's LoRA modules is an
        # error ("expected target modules in ... but received ...").
        if module.rsplit(".", 1)[-1] not in GEMMA3_LORA_MODULES:
            problems.append(f"{name}: {module} is not one of Gemma 3's LoRA modules in vLLM "
                            "(lora_model.from_local_checkpoint)")
        # vllm/lora/model_manager.py, LoRAModelManager.activate_adapter: weights whose module is not a layer of the
        # served model are skipped without an error (a debug log line): the student's model would answer as the base.
        elif module not in layers:
            problems.append(f"{name}: {module} is no layer of vLLM's Gemma3ForCausalLM, vLLM would silently skip it "
                            "(model_manager.activate_adapter)")
        else:
            pairs.setdefault(module, {})[part[0]] = tuple(tensor.shape)
    # vllm/lora/layers/base_linear.py, BaseLinearLayerWithLoRA.set_lora copies lora_A into [rank, in] and lora_B into
    # [out, rank] of buffers sized for max_lora_rank; LoRAModel takes its rank from PEFTHelper.r (from_lora_tensors).
    rank = config.get("r")
    for module, shapes in sorted(pairs.items()):
        in_features, out_features = layers[module]
        expected = {"A": (rank, in_features), "B": (out_features, rank)}
        if shapes != expected:
            problems.append(f"{module}: lora_A/lora_B shapes {shapes} instead of {expected} (base_linear.set_lora)")
    return problems


# ------------------------------------------------------------------------------------------------ the server's adapters
class _Quiet:
    """A TrainingSink that keeps nothing (the continued training below only has to write its adapters)."""

    def message(self, text, data=None): ...

    def metrics(self, row): ...

    def checkpoint(self, step, epoch, adapter_dir, metrics): ...

    def should_stop(self):
        return False


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """The adapter folders of a job the server trained (two epochs: two checkpoints), then of that model trained
    further (continued fine-tuning), here in this process to spare a second worker."""
    server = RunningServer(Settings(data_dir=tmp_path_factory.mktemp("vllm-data"), model=str(tiny_model)))
    try:
        client = server.client()
        examples = datasets.hobanse_chat_examples("you are factual chatbot.")
        training_file = upload(client, chat_data.write_jsonl(examples, tmp_path_factory.mktemp("vllm") / "t.jsonl"))
        job = client.fine_tuning.jobs.create(model=server.model, training_file=training_file.id, method={
            "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8}}})
        job = wait_for(client, job.id, ("succeeded", "failed", "cancelled"))
        assert job.status == "succeeded", job.error
        folders = sorted((server.local.store.adapters_dir / job.id).iterdir())
        assert server.local.store.model(job.fine_tuned_model)["adapter_path"] == str(folders[-1])
    finally:
        server.close()
    continued = training.train(training.TrainingSpec(
        base_model=tiny_model, device="cpu", training=[example["messages"] for example in examples], validation=None,
        n_epochs=1, batch_size=8, learning_rate=2e-4, seed=0, output_dir=tmp_path_factory.mktemp("continued"),
        base_weights="the tiny test model", parent_adapter=folders[-1]), _Quiet())
    return [*folders, continued.final_adapter]


def test_the_servers_adapters_and_checkpoints_follow_vllms_rules(trained, tiny_model):
    assert [folder.name for folder in trained] == ["ckpt-step-2", "ckpt-step-4", "ckpt-step-2"]
    base_config = AutoConfig.from_pretrained(tiny_model)
    for folder in trained:
        assert vllm_problems(folder, base_config) == [], folder
        # every layer vLLM can adapt has its LoRA: none of what was learned is left out when vLLM serves it
        assert len(json.loads((folder / "adapter_config.json").read_text())["target_modules"]) == 7
        assert len(load_file(folder / "adapter_model.safetensors")) == 2 * len(gemma3_lora_layers(base_config))


def _edit_config(folder, edit):
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    edit(config)
    config_file.write_text(json.dumps(config))


def _set(**changes):
    return lambda folder: _edit_config(folder, lambda config: config.update(changes))


def _unset(key: str):
    return lambda folder: _edit_config(folder, lambda config: config.pop(key))


def _rename(old: str, new: str):
    def change(folder):
        tensors = load_file(folder / "adapter_model.safetensors")
        name = next(name for name in tensors if old in name)
        tensors[name.replace(old, new)] = tensors.pop(name)
        save_file(tensors, folder / "adapter_model.safetensors")
    return change


def _drop(part: str):
    def change(folder):
        tensors = load_file(folder / "adapter_model.safetensors")
        del tensors[next(name for name in tensors if part in name)]
        save_file(tensors, folder / "adapter_model.safetensors")
    return change


@pytest.mark.parametrize("change, expected", [
    (_set(r=32), "max_lora_rank"),
    (_set(rank_pattern={"q_proj": 64}), "max_lora_rank"),
    (_set(modules_to_save=["lm_head"]), "modules_to_save"),
    (_set(use_dora=True), "use_dora = True"),
    (_set(lora_bias=True), "lora_bias"),
    (_set(bias="lora_only"), "bias 'lora_only'"),
    (_set(init_lora_weights="pissa"), "init_lora_weights"),
    (_unset("target_modules"), "lacks target_modules"),
    (_rename("self_attn.q_proj", "self_attn.qkv_proj"), "not one of Gemma 3's LoRA modules"),
    (_rename("base_model.model.model.layers", "base_model.model.model.language_model.layers"), "silently skip"),
    (_rename("lora_A.weight", "lora_A.bias"), "lora_A/B.weight"),
    (_drop("lora_B"), "shapes"),
    (lambda folder: (folder / "adapter_model.safetensors").unlink(), "missing adapter_model.safetensors"),
])
def test_each_rule_catches_a_broken_adapter(trained, tiny_model, tmp_path, change, expected):
    broken = shutil.copytree(trained[-1], tmp_path / "adapter")
    change(broken)
    problems = vllm_problems(broken, AutoConfig.from_pretrained(tiny_model))
    assert any(expected in problem for problem in problems), problems

