"""Config-only models for performance work: ``random:llama-2-7b`` and friends.

A real architecture at real size, without downloading it: the published ``config.json`` (written
in ``bipo_lens/data/shapes/``), weights drawn at random from a seed, created directly on the target
device in the target dtype (never materialised in fp32 on the CPU first), and a byte-level
tokenizer with a ChatML template, so every command runs end to end. The text such a model writes
is noise and its vectors mean nothing: these models exist to measure speed and memory at the sizes
users work at (1B-70B), on machines that cannot download them.
"""

from __future__ import annotations

import torch

from bipo_lens.model_names import random_shape_fields

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def shape_config(name: str):
    """The transformers config of ``random:<shape>`` (the published one, ids set to the tokenizer's)."""
    from transformers import AutoConfig

    fields = random_shape_fields(name)
    model_type = fields.pop("model_type")
    return AutoConfig.for_model(model_type, **fields)


def byte_tokenizer():
    """Bytes as tokens 0..255, then ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``: any text
    round-trips, and every id is valid for every shape's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHATML
    # TransformerLens re-loads a tokenizer by its name to turn BOS on unless it says BOS is handled;
    # this one has no files to re-load and never adds BOS itself (prompts are built from the template).
    tokenizer.init_kwargs.update(name_or_path="random-bytes", add_bos_token=True)
    return tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what the ByteLevel pre-tokenizer emits)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def load_random(name: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """(model, tokenizer, is_chat): ``random:<shape>`` built on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM

    config = shape_config(name)
    tokenizer = byte_tokenizer()
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, True
