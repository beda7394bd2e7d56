"""``score_tokens`` batched against one row at a time: what the server's echo/logprobs scoring gains
by running every waiting prompt in right-padded passes (an evaluation harness's log-likelihood
requests), and how far the batched log-probabilities move. Usage: python benchmarks/score_batching.py
"""

import time

from bipo_lens import load_model, load_pairs
from bipo_lens.generation import score_tokens
from bipo_lens.models import tokenize_prompt
from bipo_lens.training import train_caa

model = load_model(device="cpu")
pairs = load_pairs("power_seeking")[:32]
rows = [tokenize_prompt(model, p.question + " " + p.matching) for p in pairs]
vector = train_caa(model, pairs[:8], 15)
steering = [[(vector, 2.0 if i % 2 == 0 else -2.0)] for i in range(len(rows))]
score_tokens(model, rows[:2], steering[:2], 1)  # warm-up
started = time.perf_counter()
alone = [score_tokens(model, [r], [s], 5)[0] for r, s in zip(rows, steering)]
one_at_a_time = time.perf_counter() - started
started = time.perf_counter()
batched = score_tokens(model, rows, steering, 5)
together = time.perf_counter() - started
gap = max(abs(x - y) for a, b in zip(alone, batched) for x, y in zip(a.logprobs[1:], b.logprobs[1:]))
print(f"{len(rows)} rows ({sum(map(len, rows)) / len(rows):.0f} tokens each, multipliers +2/-2 alternating): one at a "
      f"time {one_at_a_time:.2f} s, batched (16 a pass) {together:.2f} s, {one_at_a_time / together:.1f}x; largest "
      f"log-probability difference {gap:.2e}; same greedy next tokens: "
      f"{[a.next_token for a in alone] == [b.next_token for b in batched]}")
