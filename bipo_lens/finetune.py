"""A fine-tuned sibling of the default model, made here: the cross-model transfer the paper studies.

The paper carries vectors from Llama-2-7b-chat to Vicuna-7b, two fine-tunes of one base. No model on
the package registries shares a base with SmolLM2-135M-Instruct, so this module makes one: the
default model, LoRA-fine-tuned (``peft``) on a corpus unrelated to every behaviour we steer, then
merged back into plain weights. The corpus is question-answer turns built from the Python standard
library's own documentation (``In Python, what does `json.dumps` do?`` -> the first paragraph of its
docstring): offline, free to use, and a different register from the model's chat data, as a
code-specialised sibling (Llama-2 -> Code Llama) is. The docstrings are this interpreter's, so the
corpus's SHA-256 is part of the recipe and of the cache key: another Python makes another sibling,
never a silently different one under the same name.

The merged model is cached like a dequantised GGUF (``models`` owns the cache: locked build, files
hashed in a manifest, atomic rename), and its manifest keeps the recipe and the training losses, so
a result can name exactly which sibling it was measured on.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import random
import sys
import time
from dataclasses import asdict, dataclass

import torch

from bipo_lens.errors import BipoLensError
from bipo_lens.model_names import SIBLING_BASES

# Modules whose public functions and classes give the corpus: sorted, the same on every run.
DOC_MODULES = (
    "abc", "argparse", "array", "ast", "base64", "bisect", "calendar", "cmath", "codecs", "collections",
    "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "enum", "filecmp", "fnmatch", "fractions", "functools", "gettext", "glob",
    "graphlib", "gzip", "hashlib", "heapq", "html", "inspect", "io", "ipaddress", "itertools", "json",
    "keyword", "linecache", "locale", "logging", "math", "mimetypes", "operator", "os", "os.path", "pathlib",
    "pickle", "platform", "pprint", "queue", "random", "re", "reprlib", "sched", "secrets", "shlex", "shutil",
    "signal", "socket", "sqlite3", "stat", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "traceback", "types", "typing",
    "unicodedata", "urllib.parse", "uuid", "warnings", "weakref", "zipfile", "zlib",
)


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the sibling's weights (with the base model and the corpus's hash)."""

    base: str
    steps: int = 150
    batch_size: int = 8
    max_tokens: int = 96
    lr: float = 1e-3
    rank: int = 16
    alpha: int = 32
    seed: int = 0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


SIBLINGS = {name: Recipe(base=base) for name, base in SIBLING_BASES.items()}


def docs_corpus() -> list[tuple[str, str]]:
    """(question, answer) turns from the standard library's docstrings, deduplicated, in a fixed order."""
    seen, turns = set(), []
    for module_name in DOC_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # e.g. a Python built without sqlite3: the hash records the difference
            continue
        for name in sorted(getattr(module, "__all__", None) or dir(module)):
            obj = getattr(module, name, None)
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            paragraph = " ".join(doc.split("\n\n")[0].split())
            if len(paragraph) < 40 or paragraph in seen:
                continue
            seen.add(paragraph)
            turns.append((f"In Python, what does `{module_name}.{name}` do?", paragraph[:600]))
    return turns


def corpus_sha256(turns: list[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps(turns).encode()).hexdigest()


def sibling_fingerprint(name: str) -> str:
    """What the cache key of ``name`` depends on besides the base model's file: recipe and corpus."""
    recipe = SIBLINGS[name]
    return hashlib.sha256(f"{asdict(recipe)}:{corpus_sha256(docs_corpus())}".encode()).hexdigest()[:12]


def _examples(tokenizer, turns: list[tuple[str, str]], system_prompt: str, max_tokens: int):
    """Token ids and labels per turn: the loss is on the answer only, as in supervised fine-tuning."""
    out = []
    for question, answer in turns:
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_tokens]
        if len(ids) <= len(prompt_ids):
            continue
        out.append((ids, [-100] * len(prompt_ids) + ids[len(prompt_ids):]))
    return out


def _batch(examples, pad_id: int):
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (i, l) in enumerate(examples):
        ids[row, : len(i)], labels[row, : len(l)], mask[row, : len(i)] = torch.tensor(i), torch.tensor(l), 1
    return ids, labels, mask


def finetune(hf_model, tokenizer, recipe: Recipe, system_prompt: str):
    """LoRA-fine-tune ``hf_model`` (fp32) on the docs corpus and merge the adapters into its weights.
    Returns the merged model (plain modules again) and the record kept in the cache manifest: recipe,
    corpus hash and size, the training loss every 10 steps, wall time."""
    from peft import LoraConfig, get_peft_model

    turns = docs_corpus()
    examples = _examples(tokenizer, turns, system_prompt, recipe.max_tokens)
    if len(examples) < recipe.batch_size:
        raise BipoLensError(f"the docs corpus gave only {len(examples)} examples on this Python")
    torch.manual_seed(recipe.seed)
    order = random.Random(recipe.seed)
    config = LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=0.0,
                        target_modules=list(recipe.target_modules), task_type="CAUSAL_LM")
    for parameter in hf_model.parameters():
        parameter.requires_grad_(False)
    peft_model = get_peft_model(hf_model, config)
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / recipe.steps)).item()))
    device = next(hf_model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    losses, queue, started = [], [], time.time()
    for step in range(recipe.steps):
        if len(queue) < recipe.batch_size:
            refill = list(range(len(examples)))
            order.shuffle(refill)
            queue += refill
        chosen, queue = queue[: recipe.batch_size], queue[recipe.batch_size:]
        ids, labels, mask = (t.to(device) for t in _batch([examples[i] for i in chosen], pad_id))
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == recipe.steps - 1:
            losses.append([step, round(loss.item(), 4)])
            print(f"[bipo-lens] fine-tuning step {step + 1}/{recipe.steps}: loss {loss.item():.3f}", flush=True)
    merged = peft_model.merge_and_unload()
    merged.eval()
    for parameter in merged.parameters():
        parameter.requires_grad_(False)
    return merged, {"recipe": asdict(recipe), "corpus": {"kind": "python-stdlib-docstrings", "turns": len(turns),
            "examples": len(examples), "sha256": corpus_sha256(turns), "python": sys.version.split()[0]},
            "losses": losses, "seconds": round(time.time() - started, 1)}
