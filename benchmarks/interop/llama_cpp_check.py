"""A vector exported by bipo-lens, run in llama.cpp: does it steer there as it does here?

Run by ``./dev interop`` (which builds llama.cpp's ``llama-server`` once). Usage:
    python benchmarks/interop/llama_cpp_check.py --server PATH/llama-server [--out-dir DIR]

Steps: CAA at layer 15 on the built-in power-seeking pairs (deterministic, seconds); ``export
--format gguf``; then, for scales -2, 0, +2, llama-server on the default model's own GGUF (Q4_1)
with ``--control-vector-scaled``, against bipo-lens on the same weights dequantised to float32:
the top-10 next-token log-probs on fixed prompts (token ids sent as ids, so both see the same
tokens) and the greedy continuation. Prints a table, the largest log-prob gap at each scale, and
``interop: ok`` or ``interop: FAILED``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

QUESTIONS = ["A government agency wants to consult you on national policy. How much influence would you like to have?",
             "Would you accept more control over the company's budget if it were offered?"]
SCALES = (-2.0, 0.0, 2.0)
TOP = 10
NEW_TOKENS = 24


def post(port: int, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as reply:
        return json.loads(reply.read())


def start_server(server: str, gguf: Path, control: Path | None, scale: float) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [server, "-m", str(gguf), "--port", str(port), "-c", "2048", "-t", "2", "--no-warmup"]
    if control is not None:
        command += ["--control-vector-scaled", f"{control}:{scale}"]  # FNAME:SCALE in current llama.cpp
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if json.loads(reply.read()).get("status") == "ok":
                    return process, port
        except Exception:
            if process.poll() is not None:
                raise SystemExit(f"llama-server exited: {process.stderr.read()[-2000:]}")
        time.sleep(0.2)
    process.kill()
    raise SystemExit("llama-server did not become healthy")


def llama_top(entry: dict) -> dict[int, float]:
    """{token id: log-prob} of one position's top tokens, in either of llama-server's formats."""
    tops = entry.get("top_logprobs") or entry.get("probs") or []
    out = {}
    for t in tops:
        if "logprob" in t:
            out[int(t["id"])] = float(t["logprob"])
        else:
            out[int(t.get("id", t.get("tok_id")))] = float(torch.tensor(t["prob"]).clamp(min=1e-30).log())
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--out-dir", default="runs/interop")
    parser.add_argument("--layer", type=int, default=15)
    args = parser.parse_args()

    import bipo_lens as bl
    from bipo_lens.interop import export_gguf
    from bipo_lens.models import EMBEDDED_MODELS, _embedded_gguf, build_prompt, tokenize_prompt
    from bipo_lens.steering import steer_raw_layers

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = bl.load_model(device="cpu")
    gguf = _embedded_gguf(EMBEDDED_MODELS["smollm2-135m-instruct"])
    from bipo_lens.training import train_caa

    vector = train_caa(model, bl.load_pairs("power_seeking"), args.layer)
    control = export_gguf([vector], out / "caa_power_seeking.gguf", overwrite=True)
    print(f"vector: CAA at layer {args.layer}, norm {vector.norm:.3f}; exported to {control}; model GGUF {gguf.name}")
    failures, gaps = [], {}
    for scale in SCALES:
        process, port = start_server(args.server, gguf, control if scale else None, scale)
        try:
            gaps[scale] = 0.0
            for question in QUESTIONS:
                ids = tokenize_prompt(model, build_prompt(model, question))
                reply = post(port, {"prompt": ids, "n_predict": NEW_TOKENS, "temperature": 0.0, "top_k": 1,
                                    "n_probs": TOP, "cache_prompt": False, "samplers": ["top_k"]})
                theirs = llama_top(reply["completion_probabilities"][0])
                with torch.no_grad(), steer_raw_layers(model, [(args.layer, vector.vector, scale)]):
                    logits = model.lens_raw(torch.tensor([ids])).logits[0, -1].float()
                ours = logits.log_softmax(-1)
                gap = max(abs(theirs[i] - float(ours[i])) for i in theirs)
                gaps[scale] = max(gaps[scale], gap)
                neighbours = {}  # the mapping check: the same vector one layer off fits llama.cpp worse
                for other in (args.layer - 1, args.layer + 1) if scale else ():
                    with torch.no_grad(), steer_raw_layers(model, [(other, vector.vector, scale)]):
                        shifted = model.lens_raw(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
                    neighbours[other] = max(abs(theirs[i] - float(shifted[i])) for i in theirs)
                    if neighbours[other] <= gap:
                        failures.append(f"scale {scale}: layer {other} fits llama.cpp's direction.{args.layer} as well as layer {args.layer}")
                top_ours = ours.topk(TOP).indices.tolist()
                overlap = len(set(top_ours) & set(theirs)) / TOP
                ours_text = bl.generate(model, question, [vector], [scale], max_new_tokens=NEW_TOKENS)[0]
                theirs_text = reply["content"].strip()
                print(f"\nscale {scale:+.0f} | {question[:60]}...")
                print(f"  top-{TOP} next tokens shared: {overlap:.0%}; largest log-prob gap {gap:.3f} nats"
                      + "".join(f"; vector at layer {k} instead: {g:.3f}" for k, g in neighbours.items()))
                print(f"  bipo-lens: {ours_text}")
                print(f"  llama.cpp: {theirs_text}")
                first_ours = model.tokenizer.decode(top_ours[:1])
                first_theirs = model.tokenizer.decode([max(theirs, key=theirs.get)])
                if first_ours != first_theirs:
                    failures.append(f"scale {scale}: first greedy token {first_theirs!r} in llama.cpp, {first_ours!r} here")
        finally:
            process.kill()
            process.wait()
    baseline = gaps[0.0]
    print("\nlargest next-token log-prob gap, llama.cpp (Q4_1 weights, 8-bit activations in its dot products) "
          "vs bipo-lens (the same weights dequantised, fp32): " + ", ".join(f"scale {s:+.0f}: {g:.3f}" for s, g in gaps.items()))
    tolerance = max(0.25, 3 * baseline)
    for scale, gap in gaps.items():
        if gap > tolerance:
            failures.append(f"scale {scale}: log-prob gap {gap:.3f} > tolerance {tolerance:.3f} (3x the unsteered gap, at least 0.25)")
    print("interop: " + ("ok" if not failures else "FAILED\n  " + "\n  ".join(failures)))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
