"""``bipo-lens bench train``: the naive BiPO loop against the fast path, in one process.

Prints a table (s/step, pairs/s, peak RSS, each switch of FastPath on its own), the vectors'
cosine, the cost model (response length and layer sweeps, achieved GFLOP/s against a plain matmul
ceiling) and ends with ``speedup_vs_naive: X.XX``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from bipo_lens.activations import device_of
from bipo_lens.scoring import cache_tier, default_host_budget
from bipo_lens.records import finish_record, start_record

SHARED_TRAIN = "bipo/power-seeking/train.csv"


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _default_data() -> str:
    from bipo_lens.pairs import shared_data_dir

    root = shared_data_dir()
    return str(root / SHARED_TRAIN) if (root / SHARED_TRAIN).is_file() else "power_seeking"


def _run(model, pairs, layer, fast, response_tokens, epochs=1, batch_size=4, cache_budget_bytes=2 << 30):
    """(vector, total seconds, setup seconds, seconds per step after setup)."""
    from bipo_lens.training import train_bipo

    started = time.perf_counter()
    vector = train_bipo(model, pairs, layer, fast=fast, epochs=epochs, lr=5e-3, batch_size=batch_size,
                        max_response_tokens=response_tokens, progress=False, seed=0,
                        cache_budget_bytes=cache_budget_bytes)
    total = time.perf_counter() - started
    training = sum(r["seconds"] for r in vector.history)
    return vector, total, total - training, training / (-(-len(pairs) // batch_size) * epochs)


def _bucket_padding(model, encoded, batch: int, bucket: int) -> str:
    """What rounding shapes up to ``bucket`` costs (``--compile graphs``), over batches of ``batch``
    pairs in file order: distinct shapes (each one compilation and capture per block) and the extra
    token slots and targets."""
    from bipo_lens.activations import MAX_ROW_TOKENS
    from bipo_lens.tokens import make_packed_batch

    shapes, slots, targets = set(), [0, 0], [0, 0]
    for start in range(0, len(encoded), batch):
        chunk = encoded[start : start + batch]
        exact, rounded = (make_packed_batch(chunk, 0, torch.device("cpu"), MAX_ROW_TOKENS, b) for b in (1, bucket))
        shapes.add(tuple(rounded.tokens.shape))
        slots = [slots[0] + exact.tokens.numel(), slots[1] + rounded.tokens.numel()]
        targets = [targets[0] + len(exact.targets), targets[1] + len(rounded.targets)]
    return (f"shapes rounded up to {bucket}: {len(shapes)} distinct (rows, length) over {len(encoded)} pairs in "
            f"batches of {batch}; +{slots[1] / slots[0] - 1:.1%} token slots, +{targets[1] / targets[0] - 1:.1%} targets")


def _flops_per_step(model, pairs, layer, response_tokens) -> float:
    """Forward + activation-gradient backward (about 2x forward) of blocks after L, response logits."""
    from bipo_lens.models import info
    from bipo_lens.tokens import encode_pairs

    cfg = model.original_model.config.get_text_config()
    d, ff, v = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    per_token_layer = 2 * (d * d * 2 + d * kv * 2 + 3 * d * ff)
    encoded = encode_pairs(model, pairs, response_tokens)
    tokens = sum(len(m.ids) + n.response_len for m, n in encoded)  # packed: each prompt once
    targets = sum(s.response_len for pair in encoded for s in pair)
    later = info(model).n_layers - layer - 1
    forward = tokens * later * per_token_layer + targets * 2 * d * v
    return 2 * forward


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _matmul_gflops(rows: int, d: int, ff: int, device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """A plain ``rows x d @ d x ff`` product on the model's device and dtype (synchronised on CUDA)."""
    a = torch.randn(rows, d, device=device, dtype=dtype)
    b = torch.randn(d, ff, device=device, dtype=dtype)
    repeats = repeats * 10 if device.type == "cuda" else repeats
    a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * rows * d * ff * repeats / (time.perf_counter() - started) / 1e9


def _peak_flops(device: torch.device, dtype: torch.dtype, d: int, ff: int) -> tuple[float, str]:
    """The matmul throughput to hold a step against: on CUDA a large square product (the device's
    practical peak in this dtype), on the CPU the model's own ``512 x d @ d x ff`` product."""
    if device.type == "cuda":
        return _matmul_gflops(8192, 8192, 8192, device, dtype, repeats=1), "8192^3 matmul"
    return _matmul_gflops(512, d, ff, device, dtype), f"512x{d}x{ff} matmul"


def fast_only(args) -> int:
    """The fast step alone, at any size: s/step, pairs/s, tokens/s, peak memory and MFU (the
    step's model FLOPs per second over the measured matmul peak), then optionally the full run."""
    from bipo_lens.models import DEFAULT_MODEL, load_model, load_options
    from bipo_lens.pairs import load_pairs
    from bipo_lens.records import describe
    from bipo_lens.tokens import encode_pairs
    from bipo_lens.training import train_bipo
    from bipo_lens.training import FastPath

    name = args.model or DEFAULT_MODEL
    steps = args.steps or 8
    batch = args.batch_size
    n_pairs = args.pairs or batch * steps
    data = args.data or _default_data()
    import transformer_lens.model_bridge  # noqa: F401  (imports are not part of the load time)

    started = time.perf_counter()
    model = load_model(name, **load_options(args))
    load_s = time.perf_counter() - started
    record = start_record(model=model, data=[data], seeds={"training": 0, "weights": 0})
    device = device_of(model)
    dtype = next(model.lens_raw.parameters()).dtype
    all_pairs = load_pairs(data)
    pairs = (all_pairs * (-(-n_pairs // len(all_pairs))))[:n_pairs]
    cfg = model.lens_raw.config.get_text_config()
    print(describe(record))
    print(f"model {name} on {device} ({dtype}), {sum(p.numel() for p in model.lens_raw.parameters()) / 1e9:.2f} B "
          f"parameters, built/loaded in {load_s:.1f} s; layer {args.layer} of {cfg.num_hidden_layers}; {len(pairs)} pairs, "
          f"batch {batch}, responses <= {args.response_tokens} tokens; peak RSS {_peak_rss_mb():.0f} MB")
    encoded = encode_pairs(model, pairs, args.response_tokens)
    tokens_per_pair = sum(len(m.ids) + n.response_len for m, n in encoded) / len(encoded)
    # what PairScorer caches: the layer-L residual of both sequences, in the model's dtype
    cache_per_pair = sum(len(s.ids) for pair in encoded for s in pair) * cfg.hidden_size * dtype.itemsize / len(encoded)
    print(f"tokens per pair (packed: prompt once, both responses) {tokens_per_pair:.0f}; cached residual "
          f"{cache_per_pair / 2**20:.2f} MiB per pair in {dtype} (both sequences)")
    budget = args.cache_budget_mib << 20
    tier = cache_tier(int(cache_per_pair * len(pairs)), device, budget, default_host_budget())
    print(f"activation cache of {len(pairs)} pairs: {cache_per_pair * len(pairs) / 2**20:.0f} MiB -> tier '{tier}' "
          f"(device budget {args.cache_budget_mib} MiB; host: half the free RAM; else recomputed per step)")
    fast = FastPath.compiled(args.compile)
    if fast.graphs:
        print(_bucket_padding(model, encoded, batch, fast.bucket))
    started = time.perf_counter()
    # warm-up: one epoch over the same pairs, so that every batch shape has met the kernels' plans and
    # the compiler (a recompilation inside the timed epoch would count as a slow step)
    _run(model, pairs, args.layer, fast, args.response_tokens, batch_size=batch, cache_budget_bytes=budget)
    print(f"warm-up (an epoch{', compilation included' if args.compile else ''}): {time.perf_counter() - started:.1f} s")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _, total, setup, step = _run(model, pairs, args.layer, fast, args.response_tokens, batch_size=batch,
                                 cache_budget_bytes=budget)
    flops = _flops_per_step(model, pairs, args.layer, args.response_tokens) * batch / len(pairs)
    peak, label = _peak_flops(device, dtype, cfg.hidden_size, cfg.intermediate_size)
    achieved = flops / step / 1e9
    memory = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB peak CUDA memory allocated"
              if device.type == "cuda" else f"{_peak_rss_mb() / 1024:.1f} GiB peak RSS")
    print(f"fast step: {step:.3f} s/step, {batch / step:.1f} pairs/s, {batch * tokens_per_pair / step:.0f} tokens/s; "
          f"setup (activation cache, reference log-probs) {setup:.1f} s for {len(pairs)} pairs; {memory}")
    print(f"model FLOPs per step {flops / 1e9:.1f} GFLOP -> {achieved:.1f} GFLOP/s; measured {label} "
          f"{peak:.1f} GFLOP/s in {dtype}; MFU {achieved / peak:.1%}")
    if fast.graphs and device.type == "cuda":  # a block that cannot be captured runs uncaptured: one logged line, easy to miss
        from torch._dynamo.utils import counters

        print(f"CUDA graphs: {counters['inductor']['cudagraph_skips']} compiled graphs skipped capture (the reasons "
              "are logged above as 'skipping cudagraphs')")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as trace:
            profiled = time.perf_counter()
            _run(model, pairs[: 4 * batch], args.layer, fast, args.response_tokens, batch_size=batch)
            _sync(device)
            profiled = time.perf_counter() - profiled
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(trace.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
        if device.type == "cuda":  # a launch-bound step: the GPU idles while Python prepares the next kernel
            busy = sum(e.self_device_time_total for e in trace.key_averages()) / 1e6
            print(f"profiled run: {profiled:.2f} s wall (with the profiler's overhead), GPU busy {busy:.2f} s ({busy / profiled:.0%})")
            # what makes the host wait for the GPU (it cannot run ahead past these), per step
            counts = {e.key: e.count for e in trace.key_averages()}
            waits = {k: counts.get(k, 0) / 4 for k in ("aten::_local_scalar_dense", "Memcpy HtoD (Pageable -> Device)",
                                                       "cudaStreamSynchronize", "cudaDeviceSynchronize")}
            print("host waits per step (the 4 steps' set-up included): " + ", ".join(f"{k} {v:g}" for k, v in waits.items()))
    if args.full_run:
        run_pairs = (all_pairs * (-(-64 // len(all_pairs))))[:64]
        _sync(device)
        started = time.perf_counter()
        train_bipo(model, run_pairs, args.layer, epochs=20, lr=5e-3, max_response_tokens=args.response_tokens,
                   progress=False, fast=fast)
        _sync(device)
        print(f"full run, 64 pairs x 20 epochs (fast, activation cache included): {time.perf_counter() - started:.1f} s")
    print(f"peak RSS {_peak_rss_mb():.0f} MB{_peak_cuda(device)}")
    print(f"mfu: {achieved / peak:.3f}")
    print(json.dumps({"record": finish_record(record)}))
    return 0


def _peak_cuda(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f"; peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB allocated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bipo-lens bench train", description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=None, help="default: ../shared/data power-seeking train.csv, else the built-in set")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--pairs", type=int, default=None, help="pairs per run (default 8 quick, 16 full)")
    parser.add_argument("--steps", type=_at_least_one, default=None, help="steps per run (default 2 quick, 4 full; batch 4)")
    parser.add_argument("--response-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="under 3 minutes on 2 cores")
    parser.add_argument("--full-run", action="store_true", help="also time a 64 pairs x 20 epochs training")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--device-map", default=None, help="auto: spread the model over devices (accelerate)")
    parser.add_argument("--cache-budget-mib", type=int, default=2048,
                        help="with --fast-only (and random: shapes): activation cache on the device up to this; "
                             "beyond: pinned host memory (GPU), else recompute")
    parser.add_argument("--max-memory", default=None, help="with --device-map: 0=70GiB,cpu=100GiB")
    parser.add_argument("--authors-workload", default=None, metavar="CSV",
                        help="instead: the workload the BiPO authors' trainer was timed on (their "
                             "data/hallucination/train.csv), against that recorded figure")
    parser.add_argument("--authors-vector", default=None, metavar="PT",
                        help="with --authors-workload: the vector their trainer saved, for the cosine to ours")
    parser.add_argument("--out-dir", default="runs/bench", help="where --authors-workload saves its vectors")
    parser.add_argument("--fast-only", action="store_true",
                        help="time the fast path alone (no naive loop, no switch table): for large models; "
                             "implied by random:<shape> models")
    parser.add_argument("--batch-size", type=int, default=4, help="with --fast-only: pairs per step (the paper's 4)")
    parser.add_argument("--compile", nargs="?", const="fused", choices=("fused", "graphs"), default=None,
                        help="with --fast-only: the blocks after L through torch.compile (FastPath.compiled: "
                             "'fused' kernels, or also replayed as CUDA 'graphs' over bucketed shapes)")
    parser.add_argument("--profile", action="store_true",
                        help="with --fast-only: the top kernels of a few fast steps (torch.profiler)")
    args = parser.parse_args(argv)
    if args.authors_workload:
        return authors_workload(args)
    if args.fast_only or (args.model or "").startswith("random:"):
        return fast_only(args)

    from bipo_lens.models import DEFAULT_MODEL, load_model, load_options
    from bipo_lens.pairs import load_pairs
    from bipo_lens.training import FastPath, train_bipo, train_caa

    torch.manual_seed(0)
    n_pairs = args.pairs or (8 if args.quick else 16)
    steps = args.steps or (2 if args.quick else 4)
    epochs = max(1, -(-steps * 4 // n_pairs))
    data = args.data or _default_data()
    import transformer_lens.model_bridge  # noqa: F401  (imports are not part of the load time)

    started = time.perf_counter()
    model = load_model(args.model or DEFAULT_MODEL, **load_options(args))
    load_s = time.perf_counter() - started
    record = start_record(model=model, data=[args.data or _default_data()], seeds={"training": 0})
    all_pairs = load_pairs(data)
    pairs = all_pairs[:n_pairs]
    device = device_of(model)
    print(f"model {args.model or DEFAULT_MODEL} on {device} ({model.original_model.dtype}); load from cache "
          f"{load_s:.1f} s; data {data}; layer {args.layer}; {len(pairs)} pairs x {epochs} epochs, batch 4; "
          f"responses <= {args.response_tokens} tokens; torch threads {torch.get_num_threads()}")

    configs = {
        "naive (paper's loop)": FastPath.naive(),
        "reference once only": FastPath(True, False, False, False),
        "prefix cache only": FastPath(False, True, False, False),
        "response logits only": FastPath(False, False, True, False),
        "shared prompt only": FastPath(False, False, False, True),
        "fast (all switches)": FastPath(),
    }
    _run(model, pairs[:4], args.layer, FastPath(), args.response_tokens)  # warm-up
    results = {}
    print(f"\n{'path':22s} {'total s':>8s} {'setup s':>8s} {'s/step':>8s} {'pairs/s':>8s} {'x naive':>8s} {'peak RSS MB':>12s}")
    for name, fast in configs.items():
        vector, total, setup, step = _run(model, pairs, args.layer, fast, args.response_tokens, epochs)
        results[name] = (vector, total, setup, step)
        naive_step = results["naive (paper's loop)"][3]
        print(f"{name:22s} {total:8.2f} {setup:8.2f} {step:8.3f} {4 / step:8.2f} {naive_step / step:8.2f} {_peak_rss_mb():12.0f}")
    naive_vector, naive_total, _, naive_step = results["naive (paper's loop)"]
    fast_vector, fast_total, fast_setup, fast_step = results["fast (all switches)"]
    cosine = float(naive_vector.vector @ fast_vector.vector / (naive_vector.norm * fast_vector.norm))
    print(f"\ncosine(naive vector, fast vector) after the same {len(naive_vector.history) * -(-len(pairs) // 4)} steps: {cosine:.6f}")
    print(f"end to end for this run (setup included): naive {naive_total:.1f} s, fast {fast_total:.1f} s "
          f"({naive_total / fast_total:.2f}x)")
    per_pair_setup = fast_setup / len(pairs)
    projected_fast = 64 * per_pair_setup + 16 * 20 * fast_step
    print(f"projected 64 pairs x 20 epochs: naive {16 * 20 * naive_step / 60:.1f} min, fast {projected_fast / 60:.1f} min "
          f"({16 * 20 * naive_step / projected_fast:.2f}x); the BiPO authors' trainer: see --authors-workload")

    cfg = model.original_model.config.get_text_config()
    flops = _flops_per_step(model, pairs, args.layer, args.response_tokens) * 4 / len(pairs)
    ceiling = _matmul_gflops(512, cfg.hidden_size, cfg.intermediate_size, device, model.original_model.dtype)
    print(f"fast step: {flops / 1e9:.1f} GFLOP (forward + input-gradient backward of the blocks after L on the packed "
          f"tokens, response logits) in {fast_step:.3f} s = {flops / fast_step / 1e9:.1f} GFLOP/s; plain matmul "
          f"ceiling {ceiling:.1f} GFLOP/s ({flops / fast_step / 1e9 / ceiling:.0%} of it)")

    lengths = (16, 32, 64, 128)
    print("\nfast s/step by response length: " + ", ".join(
        f"{n} tok {_run(model, pairs[:8], args.layer, FastPath(), n)[3]:.3f}" for n in lengths))
    n_layers = cfg.num_hidden_layers
    layers = (n_layers // 6, n_layers // 2, n_layers - 5)
    print("fast s/step by layer: " + ", ".join(
        f"L{layer} {_run(model, pairs[:8], layer, FastPath(), args.response_tokens)[3]:.3f}" for layer in layers))

    caa_pairs = all_pairs[:64] if args.quick else all_pairs
    started = time.perf_counter()
    train_caa(model, caa_pairs, args.layer)  # timed, not kept
    print(f"CAA over {len(caa_pairs)} pairs: {time.perf_counter() - started:.1f} s")
    print("generation: see `bipo-lens bench generate` (plain vs steered vs the bridge path)")
    if args.full_run:
        run_pairs = all_pairs[:64]
        started = time.perf_counter()
        train_bipo(model, run_pairs, args.layer, epochs=20, lr=5e-3, max_response_tokens=args.response_tokens,
                   progress=False)
        print(f"full run, 64 pairs x 20 epochs (fast): {(time.perf_counter() - started) / 60:.1f} min")
    print(f"peak RSS {_peak_rss_mb():.0f} MB{_peak_cuda(device)}")
    print(f"speedup_vs_naive: {naive_step / fast_step:.2f}")
    print(json.dumps({"record": finish_record(record)}))
    return 0


PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "records" / "peers.json"


def authors_workload(args) -> int:
    """64 pairs x 5 epochs (80 steps), batch 4, lr 5e-3, 8 warm-up steps, full-length responses, at
    layer 15: the run the authors' trainer was timed on (``benchmarks/records/peers.json``), in the
    authors' tokenisation and in the default one."""
    from bipo_lens.models import DEFAULT_MODEL, load_model, load_options
    from bipo_lens.pairs import load_pairs
    from bipo_lens.records import describe

    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    from bipo_lens.training import train_bipo

    model = load_model(args.model or DEFAULT_MODEL, **load_options(args))
    record = start_record(model=model, data=[args.authors_workload], seeds={"training": 0})
    print(f"{describe(record)}")
    pairs = load_pairs(args.authors_workload)[:64]
    peer = json.loads(PEERS.read_text())["bipo_authors_trainer"] if PEERS.is_file() else None
    steps = -(-len(pairs) // 4) * 5
    found = {}
    for response_format in ("authors", "eot"):
        started = time.perf_counter()
        vector = train_bipo(model, pairs, 15, epochs=5, lr=5e-3, batch_size=4, warmup_steps=8,
                            max_response_tokens=512, response_format=response_format, progress=False, seed=0)
        total = time.perf_counter() - started
        step = sum(r["seconds"] for r in vector.history) / steps
        found[response_format] = (vector, total, step)
        vector.save(Path(args.out_dir) / f"authors_workload_{response_format}.safetensors", overwrite=True)
        print(f"--response-format {response_format:7s}: {steps} steps, {total:.1f} s in all (setup {total - step * steps:.1f} s), "
              f"{step:.3f} s/step, norm {vector.norm:.3f}")
    a, b = found["authors"][0].vector, found["eot"][0].vector
    print(f"cosine(authors format, eot format): {float(a @ b / (a.norm() * b.norm())):.4f}")
    if args.authors_vector:
        from bipo_lens.vectors import SteeringVector

        theirs = SteeringVector.load(args.authors_vector, layer=15).vector
        for response_format, (vector, _, _) in found.items():
            cos = float(vector.vector @ theirs / (vector.vector.norm() * theirs.norm()))
            print(f"cosine to the authors' vector, --response-format {response_format}: {cos:.4f} "
                  f"(norms {vector.norm:.3f} / {float(theirs.norm()):.3f})")
    if peer:
        ratio = peer["seconds_per_step"] / found["authors"][2]
        print(f"the authors' trainer: {peer['seconds_per_step']:.2f} s/step, measured {peer['date']} on {peer['machine']} "
              f"({PEERS.name}); a ratio holds only on that machine: rerun benchmarks/peers/authors-trainer/run.sh")
        print(f"vs_authors_trainer: {ratio:.2f}")
    print(json.dumps({"record": finish_record(record)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
