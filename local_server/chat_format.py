"""Gemma 3's turn format, as a chat template the tokenizer applies.

The packaged GGUF is the pretrained base model and carries no chat template, so the server supplies
Gemma 3's own: `<start_of_turn>user … <end_of_turn>`, assistant turns as `model`, and the system text
folded into the first user turn. The `{% generation %}` markers let transformers return the mask of
what the model says (the answer and its `<end_of_turn>`), which is all that training puts loss on;
an assistant message with `"weight": 0` (OpenAI's way to skip a turn) gets no markers.
"""
from __future__ import annotations

END_OF_TURN = "<end_of_turn>"

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] | trim + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- if message.get('weight', 1) == 0 -%}"
    "{{ message['content'] | trim + '<end_of_turn>' }}"
    "{%- else -%}"
    "{% generation %}{{ message['content'] | trim + '<end_of_turn>' }}{% endgeneration %}"
    "{%- endif -%}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<start_of_turn>user\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def use_turn_format(tokenizer, replace: bool = False):
    """Give `tokenizer` Gemma 3's turn format unless it has a chat template of its own (or `replace`)."""
    if replace or not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer
