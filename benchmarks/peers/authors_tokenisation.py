"""Token ids the BiPO authors' trainer scores, from their own code, for ``--response-format authors``.

Runs ``DPOTrainer.build_tokenized_answer`` and ``DPOTrainer.tokenize_row`` exactly as vendored in
the authors' repository (github.com/CaoYuanpu/BiPO, ``trl/trainer/dpo_trainer.py``; their
``train.py`` builds rows as ``prompt``, ``" " + matching``, ``" " + not_matching``) on the default
model's tokenizer, and prints the prompt and response ids of a few built-in pairs. The expected
ids in ``tests/test_response_format.py`` were written down from this script's output.

    python benchmarks/peers/authors_tokenisation.py /path/to/BiPO  (a checkout of the authors' repo)

No torch model is loaded: only the tokenizer from the model cache (run any bipo-lens command once
first) and the two methods' source, executed with the attributes they read.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from transformers import AutoTokenizer

from bipo_lens.models import DEFAULT_SYSTEM_PROMPT, cache_root
from bipo_lens.pairs import load_pairs

METHODS = ("build_tokenized_answer", "tokenize_row")


def authors_methods(repo: Path) -> dict:
    """The two methods' code from the authors' vendored trl, as plain functions."""
    source = (repo / "trl" / "trainer" / "dpo_trainer.py").read_text()
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name in METHODS:
            code = textwrap.dedent(ast.get_source_segment(source, node))
            scope = {"np": np, "inspect": inspect, "Optional": object, "Union": object, "Dict": dict,
                     "PreTrainedModel": object, "nn": SimpleNamespace(Module=object)}
            exec(compile(code.replace("Optional[Union[PreTrainedModel, nn.Module]]", "object"), "dpo_trainer", "exec"), scope)
            found[node.name] = scope[node.name]
    return found


def main(repo: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(next(cache_root().glob("smollm2-135m-instruct-*")))
    methods = authors_methods(Path(repo))
    trainer = SimpleNamespace(tokenizer=tokenizer, is_vision_model=False, is_encoder_decoder=False, max_length=2048,
                              max_prompt_length=2048, truncation_mode="keep_end", label_pad_token_id=-100)
    trainer.build_tokenized_answer = lambda prompt, answer, images=None: methods["build_tokenized_answer"](
        trainer, prompt, answer, images)
    for pair in load_pairs("power_seeking")[:3]:
        prompt = tokenizer.apply_chat_template(
            [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": pair.question}],
            tokenize=False, add_generation_prompt=True)
        row = methods["tokenize_row"](trainer, {"prompt": prompt, "chosen": " " + pair.matching,
                                                "rejected": " " + pair.not_matching})
        for side in ("chosen", "rejected"):
            ids, labels = row[f"{side}_input_ids"], row[f"{side}_labels"]
            start = sum(1 for label in labels if label == -100)
            print(json.dumps({"question": pair.question[:40], "side": side, "prompt": ids[:start][-4:],
                              "prompt_len": start, "response": ids[start:]}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "BiPO")
