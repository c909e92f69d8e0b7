"""A local OpenAI-compatible fine-tuning server: the course's unchanged openai-SDK code trains and queries
a real open-weight model (Gemma 3 270M by default, LoRA on this computer's CPU) with no key and no network.

    python -m local_server                      # http://127.0.0.1:8765/v1, data in the user's cache folder
    python -m local_server --help

Modules, one concern each: base_model (where the weights come from), chat_format (Gemma's turn format),
inference (batched answers and logprobs), training (LoRA with TRL), jobs (scheduler and worker process),
store (SQLite and files), api and errors (the OpenAI endpoints), keys (a class's keys and who asks),
server (ties them together).
"""
