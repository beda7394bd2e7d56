"""The command lines users bring from earlier tools, run as written: thin translations to ours.

- wisent-guard's ``python -m wisent_guard.cli tasks FILE --from-json --steering-mode
  --steering-method BiPO ...`` is ``bipo-lens tasks FILE ...``;
- the BiPO model-card scripts' ``bipo_train ...`` / ``bipo_inference ...`` are console scripts of
  the same names (and ``bipo-lens bipo-train`` / ``bipo-lens bipo-inference``).

Each parses the old flags and calls the one ``bipo-lens train`` / ``generate`` path with the
equivalent arguments, so there is no second trainer or generator behind them. Where a default
differs from the old tool's, ours is the BiPO paper's (see README, "Earlier tools").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bipo_lens.errors import BipoLensError


def _run(argv: list) -> int:
    from bipo_lens.cli import main

    return main([str(a) for a in argv])


class _Parser(argparse.ArgumentParser):
    """Bad flags end as one line and exit 2, as everywhere in bipo-lens."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _optional(flag: str, value) -> list:
    return [] if value is None else [flag, value]


def tasks(argv: list[str] | None = None) -> int:
    """wisent-guard's ``tasks`` in steering mode: train and save a vector from a pairs file, or load
    one and generate steered answers to a file's prompts."""
    p = _Parser(prog="bipo-lens tasks", description=tasks.__doc__)
    p.add_argument("file", help="pairs (JSON/JSONL/CSV) to train on, or prompts to answer with a loaded vector")
    p.add_argument("--from-json", action="store_true", help="accepted: the format is read from the file")
    p.add_argument("--steering-mode", action="store_true", help="accepted: steering is the only mode here")
    p.add_argument("--steering-method", default="CAA", type=str.lower, choices=["bipo", "caa"])
    p.add_argument("--layer", type=int, required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--save-steering-vector", default=None)
    p.add_argument("--load-steering-vector", default=None)
    p.add_argument("--steering-strength", type=float, default=1.0)
    p.add_argument("--bipo-epochs", type=int, default=None)
    p.add_argument("--bipo-lr", type=float, default=None)
    p.add_argument("--bipo-beta", type=float, default=None)
    p.add_argument("--bipo-batch-size", type=int, default=None)
    p.add_argument("--bipo-margin", type=float, default=None)
    p.add_argument("--bipo-weight-decay", type=float, default=None)
    p.add_argument("--bipo-loss", choices=["bipo", "activation_margin"], default="bipo",
                   help="bipo (default): the paper's objective; activation_margin: wisent-guard's own")
    p.add_argument("--enable-token-steering", action="store_true")
    p.add_argument("--token-steering-strategy", default="all")
    p.add_argument("--token-decay-rate", type=float, default=0.5)
    p.add_argument("--token-min-strength", type=float, default=0.1)
    p.add_argument("--token-max-strength", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--output", default=None, help="with --load-steering-vector: write the answers as JSON")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None)
    p.add_argument("--show-memory-usage", action="store_true")
    p.add_argument("--debug", action="store_true")
    from bipo_lens.cli import _join_negative_values  # "--magnitudes -2,..." is a value, not a flag

    args = p.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    common = ["--device", args.device, *_optional("--dtype", args.dtype)]
    common += ["--show-memory-usage"] if args.show_memory_usage else []
    common += ["--debug"] if args.debug else []
    strategy = args.token_steering_strategy if args.enable_token_steering else "all"
    if args.save_steering_vector:
        command = ["train", "--data", args.file, "--layer", args.layer, "--method", args.steering_method,
                   "--out", args.save_steering_vector, *_optional("--model", args.model), *common]
        if args.steering_method == "bipo":
            command += ["--loss", args.bipo_loss, *_optional("--epochs", args.bipo_epochs),
                        *_optional("--lr", args.bipo_lr), *_optional("--beta", args.bipo_beta),
                        *_optional("--batch-size", args.bipo_batch_size), *_optional("--margin", args.bipo_margin),
                        *_optional("--weight-decay", args.bipo_weight_decay)]
        command += ["--overwrite"] if args.overwrite else []
        code = _run(command)
        if code == 0 and strategy != "all":
            print(f"note: token strategy {strategy} applies when the vector is used: pass --enable-token-steering "
                  f"--token-steering-strategy {strategy} with --load-steering-vector (or generate --token-strategy)")
        return code
    if not args.load_steering_vector:
        print("bipo-lens tasks: error: nothing to do: pass --save-steering-vector FILE (train on the pairs) or "
              "--load-steering-vector FILE (answer the file's prompts)", file=sys.stderr)
        return 2
    try:
        prompts = _prompts(Path(args.file))
    except BipoLensError as e:
        print(f"bipo-lens: error: {e}", file=sys.stderr)
        return 2
    command = ["generate", "--vector", args.load_steering_vector, "--layer", args.layer,
               "--multipliers", str(args.steering_strength), "--token-strategy", strategy,
               "--decay-rate", args.token_decay_rate, "--min-strength", args.token_min_strength,
               "--max-strength", args.token_max_strength, "--max-new-tokens", args.max_new_tokens,
               *_optional("--model", args.model), *_optional("--out-json", args.output), *common]
    for prompt in prompts:
        command += ["--prompt", prompt]
    return _run(command)


def _prompts(path: Path) -> list[str]:
    """A task file's prompts: a JSON list of strings or of objects with a prompt/question field."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise BipoLensError(f"prompts file not found: {path}") from None
    except ValueError as e:
        raise BipoLensError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("tasks", data.get("prompts", data.get("pairs")))
    if not isinstance(data, list) or not data:
        raise BipoLensError(f"{path}: expected a non-empty list of prompts")
    prompts = []
    for index, item in enumerate(data, start=1):
        text = item if isinstance(item, str) else next(
            (item[k] for k in ("prompt", "question", "instruction", "task") if isinstance(item, dict) and k in item), None)
        if not isinstance(text, str) or not text.strip():
            raise BipoLensError(f"{path}: item {index} has no prompt (a string, or an object with 'prompt' or 'question')")
        prompts.append(text)
    return prompts


DATASETS = {  # the names the BiPO scripts knew -> files under the data directory
    "truthfulqa": "truthfulqa/TruthfulQA.csv",
    "power-seeking": "bipo/power-seeking/train.csv",
}


def resolve_dataset(name: str, data_dir: Path) -> str:
    """A dataset name, a path, or a built-in set -> what ``--data`` takes; one line where not found."""
    from bipo_lens.pairs import builtin_pair_sets

    if Path(name).exists() or name in builtin_pair_sets():
        return name
    key = name.lower().removesuffix(".jsonl")
    looked = []
    if key in DATASETS:
        looked.append(data_dir / DATASETS[key])
    looked += sorted((data_dir / "anthropic-evals").glob(f"*/{key}.jsonl")) if (data_dir / "anthropic-evals").is_dir() else []
    looked.append(data_dir / "anthropic-evals" / "*" / f"{key}.jsonl")
    for candidate in looked:
        if candidate.is_file():
            return str(candidate)
    raise BipoLensError(f"dataset {name!r} not found: looked for {', '.join(str(p) for p in looked)} "
                        f"(set --data_dir or $BIPO_LENS_SHARED_DATA), and it is neither a file nor a built-in set")


def bipo_train(argv: list[str] | None = None) -> int:
    """The BiPO model card's ``bipo_train``: train at ``--layer_idx`` and write
    ``OUTPUT_DIR/steering_vector.pt`` (``{"v": tensor, "config": {"layer_idx": ...}}``)."""
    from bipo_lens.pairs import shared_data_dir

    p = _Parser(prog="bipo_train", description=bipo_train.__doc__)
    p.add_argument("--model_name", default=None)
    p.add_argument("--dataset", required=True, help="truthfulqa, an Anthropic persona set's name, a file, a built-in set")
    p.add_argument("--data_dir", default=None, help="where dataset names are looked up (default: $BIPO_LENS_SHARED_DATA or ../shared/data)")
    p.add_argument("--layer_idx", type=int, required=True)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--max_pairs", type=int, default=None)
    p.add_argument("--output_dir", default="./bipo_output")
    p.add_argument("--test_generation", action="store_true", help="then answer a question at -2..2")
    p.add_argument("--device", default="auto")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    try:
        data = resolve_dataset(args.dataset, Path(args.data_dir) if args.data_dir else shared_data_dir())
    except BipoLensError as e:
        print(f"bipo-lens: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output_dir) / "steering_vector.pt"
    code = _run(["train", "--data", data, "--layer", args.layer_idx, "--out", out, "--overwrite",
                 *_optional("--model", args.model_name), *_optional("--epochs", args.epochs),
                 *_optional("--batch-size", args.batch_size), *_optional("--lr", args.lr),
                 *_optional("--beta", args.beta), *_optional("--max-pairs", args.max_pairs),
                 "--device", args.device, *(["--debug"] if args.debug else [])])
    if code == 0 and args.test_generation:
        code = _run(["generate", "--vector", out, *_optional("--model", args.model_name), "--device", args.device,
                     "--prompt", "What is NATO?", "--multipliers", "-2,-1,0,1,2"])
    return code


def bipo_inference(argv: list[str] | None = None) -> int:
    """The BiPO model card's ``bipo_inference``: answers to ``--prompt`` at each of ``--magnitudes``."""
    p = _Parser(prog="bipo_inference", description=bipo_inference.__doc__)
    p.add_argument("--model_name", default=None)
    p.add_argument("--steering_vector", required=True)
    p.add_argument("--prompt", required=True, action="append")
    p.add_argument("--magnitudes", default="-2.0,-1.0,0.0,1.0,2.0")
    p.add_argument("--layer_idx", type=int, default=None, help="for bare tensors only")
    p.add_argument("--max_new_tokens", type=int, default=48)
    p.add_argument("--test_generation", action="store_true", help="accepted: generation is what this does")
    p.add_argument("--device", default="auto")
    p.add_argument("--debug", action="store_true")
    from bipo_lens.cli import _join_negative_values  # "--magnitudes -2,..." is a value, not a flag

    args = p.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    command = ["generate", "--vector", args.steering_vector, *_optional("--layer", args.layer_idx),
               *_optional("--model", args.model_name), "--multipliers", args.magnitudes,
               "--max-new-tokens", args.max_new_tokens, "--device", args.device, *(["--debug"] if args.debug else [])]
    for prompt in args.prompt:
        command += ["--prompt", prompt]
    return _run(command)


def bipo_train_script() -> None:
    raise SystemExit(bipo_train())


def bipo_inference_script() -> None:
    raise SystemExit(bipo_inference())

