"""lm-evaluation-harness against ``bipo-lens serve``: does a steered model score and answer there?

Run by ``./dev interop lm-eval`` (which installs the pinned lm-eval once, without its dataset
dependencies: only its API model is used). Usage:
    python benchmarks/interop/lm_eval_check.py --lm-eval-path DIR

Steps: CAA at layer 15 on the built-in power-seeking pairs (``bipo-lens train``, deterministic);
``bipo-lens serve`` with it; then lm-eval's own ``local-completions`` model (``LocalCompletionsAPI``,
the class ``lm_eval --model local-completions`` builds), once with its default tokenizer backend
(which finds the server's vLLM-style /tokenize endpoints and sends token ids) and once with the
default model's tokenizer from the bipo-lens cache sending text, unsteered (``model=smollm2-135m-instruct``) and at +4
(``model=power@4``, as ``lm_eval --model_args model=power@4,...`` asks for it): ``loglikelihood`` on a three-way choice (the harness reads ``echo`` + ``logprobs``)
and ``generate_until`` with the six stop strings lm-eval's tasks commonly give (more than OpenAI's 4).
Prints each reading and ``interop: ok`` or ``interop: FAILED``.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CONTEXT = "Question: Which city is the capital of France?\nAnswer:"
CHOICES = (" Paris", " Berlin", " Madrid")
UNTIL = ["\n", ".", "Question:", "Q:", "A:", "\n\n"]
PROMPT = "The capital of France is"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm-eval-path", required=True, help="where ./dev installed lm-eval (appended to sys.path)")
    args = parser.parse_args()
    sys.path.append(args.lm_eval_path)  # after the project's own packages: theirs never shadow ours
    import importlib.metadata

    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from bipo_lens.model_names import DEFAULT_MODEL
    from bipo_lens.models import cache_root

    work = Path(tempfile.mkdtemp(prefix="lm-eval-check-"))
    vector = work / "power.safetensors"
    subprocess.run([sys.executable, "-m", "bipo_lens.cli", "train", "--data", "power_seeking", "--layer", "15",
                    "--method", "caa", "--max-pairs", "8", "--out", str(vector)], check=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bipo_lens.cli", "serve", "--vector", f"power={vector}",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/models", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print("interop: FAILED (the server did not start)")
                    return 1
                time.sleep(0.5)
        tokenizer = next(cache_root().glob(f"{DEFAULT_MODEL}-*/tokenizer.json")).parent
        print(f"lm-eval {importlib.metadata.version('lm_eval')}, LocalCompletionsAPI at {base}/completions, "
              f"tokenizer {tokenizer}")
        failures, readings = [], {}
        for multiplier in (0.0, 4.0):
            for tokenized in (True, False):
                name = f"power@{multiplier:g}" if multiplier else DEFAULT_MODEL  # the vector, by the model's name
                own = {} if tokenized else {"tokenizer_backend": "huggingface", "tokenizer": str(tokenizer)}
                lm = LocalCompletionsAPI(base_url=f"{base}/completions", model=name, tokenized_requests=tokenized,
                                         max_retries=1, **own)
                if tokenized and lm.tokenizer_backend != "remote":
                    failures.append(f"lm-eval's tokenizer backend is {lm.tokenizer_backend!r}, not the server's")
                started = time.perf_counter()
                scores = lm.loglikelihood([Instance("loglikelihood", {}, (CONTEXT, c), i) for i, c in enumerate(CHOICES)])
                answer = lm.generate_until([Instance("generate_until", {}, (PROMPT, {"until": UNTIL, "max_gen_toks": 24}), 0)])[0]
                seconds = time.perf_counter() - started
                readings[(multiplier, tokenized)] = [s for s, _ in scores]
                print(f"model={name}, {'token ids, the server tokenizing' if tokenized else 'text, a local tokenizer':32}: loglikelihood "
                      + ", ".join(f"{c.strip()} {s:+.3f}{' (greedy)' if g else ''}" for c, (s, g) in zip(CHOICES, scores))
                      + f"; generate_until {answer!r}; {seconds:.1f} s")
                if max(range(len(CHOICES)), key=lambda i: scores[i][0]) != 0:
                    failures.append(f"Paris is not the likeliest at {multiplier:+g}")
                if not answer.strip() or any(stop in answer for stop in UNTIL):
                    failures.append(f"generate_until gave {answer!r}: empty, or holding a stop string")
            if readings[(multiplier, True)] != readings[(multiplier, False)]:
                failures.append(f"the two tokenizers read differently at {multiplier:+g}")
        moved = max(abs(a - b) for a, b in zip(readings[(0.0, True)], readings[(4.0, True)]))
        print(f"largest change of a choice's log-likelihood under steering +4: {moved:.3f}")
        if moved < 0.05:
            failures.append("steering did not move the log-likelihoods")
        print("interop: " + ("ok" if not failures else "FAILED (" + "; ".join(failures) + ")"))
        return 0 if not failures else 1
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
