"""``bipo-lens serve``: an OpenAI-compatible HTTP server for steered generation.

Engine and server are apart (vLLM's shape): :class:`Batcher` owns the model and runs the engine in
one worker thread, taking every request that arrived while the previous batch ran (or within a
short window) into the next ``generate_batch`` call, each row with its own steering; the FastAPI
app only parses, validates and formats. Requests name vectors in an extra body field::

    {"model": "...", "messages": [...], "steering": [{"vector": "power", "multiplier": 1.5}]}

(``{"power": 1.5}`` works too), or in the model's name, for harnesses that can set nothing else:
``"model": "power@1.5"`` (a served name without ``@`` is that vector at +1; an unknown name is a 404).
Endpoints: ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions``, both with ``"stream": true`` (server-sent events), and vLLM's
``GET /tokenizer_info``, ``POST /tokenize``, ``POST /detokenize``. Bad requests get
a 400 with OpenAI's error body; the server keeps serving. Defaults: greedy (``temperature`` 0),
``max_tokens`` 128. Honoured: ``max_tokens`` (``max_completion_tokens``), ``n``, ``temperature``,
``top_p``, ``seed``, ``stop`` (up to 16 strings; the answer ends before the first, streamed text is
held back while it could be the start of one), ``stream`` and ``stream_options.include_usage``.
``echo`` and ``logprobs`` on /v1/completions score the prompt instead (each token's log-probability
under the steering, and at most one greedy token after it: what evaluation harnesses read for
log-likelihoods; one forward pass per prompt in the engine's thread); ``logprobs`` on
/v1/chat/completions with max_tokens 1 gives the answer's first token and its likeliest rivals (an
A/B evaluation's read). A setting that would change the answer and that this server cannot honour
(log-probabilities of longer answers, penalties, ``logit_bias``, tools, a JSON ``response_format``,
...) is a 400 naming it, never silently ignored.
"""


import asyncio
import itertools
import json
import math
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable

from bipo_lens.errors import BipoLensError
from bipo_lens.generation import GREEDY, Sampling, ScoredTokens, generate_batch, score_tokens
from bipo_lens.models import DEFAULT_SYSTEM_PROMPT, build_chat_prompt, stop_token_ids, tokenize_prompt
from bipo_lens.vectors import SteeringVector

MAX_TOKENS_LIMIT = 2048
MAX_MULTIPLIER = 100.0
MAX_STOP_STRINGS = 16  # OpenAI allows 4; harnesses send more (lm-evaluation-harness's task lists)
MAX_PROMPTS = 64  # prompts in one /v1/completions request
MAX_LOGPROBS = 20  # likeliest tokens reported per place
SCORING = ("logprobs", "top_logprobs", "echo")
# Settings that change what comes back, which this server does not implement: a request that sets
# one to anything but the values that ask for nothing (listed) is refused, so that no client reads
# an answer made without it as one made with it.
UNSUPPORTED = {
    "logprobs": ("log-probabilities", (False,)), "top_logprobs": ("log-probabilities", (0,)),
    "echo": ("echoing the prompt", (False,)), "presence_penalty": ("penalties", (0,)),
    "frequency_penalty": ("penalties", (0,)), "logit_bias": ("logit bias", ({},)), "best_of": ("best_of above 1", (1,)),
    "suffix": ("a suffix", ("",)), "tools": ("tool calls", ([],)), "tool_choice": ("tool calls", ("none", "auto")),
    "functions": ("function calls", ([],)), "function_call": ("function calls", ("none", "auto")),
}


class RequestError(ValueError):
    """A client error: answered with HTTP 400 (or ``status``) and OpenAI's error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


@dataclass
class Job:
    """One request's rows (``n`` samples of one prompt) on their way through the engine."""

    prompt: str | list[int]  # text, or token ids (the server sends ids)
    steering: list[tuple[SteeringVector, float]]
    n: int
    max_tokens: int
    sampling: Sampling
    on_token: Callable[[int, int], None]  # (row within the job, token id), from the worker thread
    on_done: Callable[[list[str] | None, BaseException | None], None]
    stop: tuple[str, ...] = ()  # stop strings
    score_tokens: list[int] | None = None  # score these tokens (echo/logprobs) instead of generating
    top_k: int = 0  # with score_tokens: the likeliest tokens reported at each place
    batch_rows: int = 0  # rows in the engine call that ran this job (its own and others')

    def key(self) -> tuple:
        return ("score",) if self.score_tokens is not None else (self.max_tokens, self.sampling, self.stop)


@dataclass
class Batcher:
    """The engine side: one worker thread batches the jobs that are waiting."""

    model: object
    window_s: float = 0.05  # a request waits this long for company after the last arrival ...
    max_wait_s: float = 0.25  # ... and no longer than this in all (5% of a 5 s answer)
    max_rows: int = 64
    batches: list[int] = field(default_factory=list)  # rows per engine call, for the benchmark and tests
    _jobs: "queue.Queue[Job]" = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        threading.Thread(target=self._work, daemon=True, name="bipo-lens-engine").start()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            # Collect while requests keep arriving (each within window_s of the last), for at most
            # max_wait_s: a burst of clients lands in one engine call instead of two.
            last = first = time.monotonic()
            while sum(j.n for j in jobs) < self.max_rows:
                timeout = min(last + self.window_s, first + self.max_wait_s) - time.monotonic()
                try:
                    jobs.append(self._jobs.get(timeout=max(0.0, timeout)))
                    last = time.monotonic()
                except queue.Empty:
                    break
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key(), []).append(job)
            for group in groups.values():
                self._run(group)

    def _run(self, jobs: list[Job]) -> None:
        if jobs[0].score_tokens is not None:
            return self._score(jobs)
        owners = [(job, row) for job in jobs for row in range(job.n)]

        def on_token(index: int, token: int) -> None:
            job, row = owners[index]
            job.on_token(row, token)

        for job in jobs:
            job.batch_rows = len(owners)
        try:
            self.batches.append(len(owners))
            texts = generate_batch(self.model, [job.prompt for job, _ in owners], [job.steering for job, _ in owners],
                                   max_new_tokens=jobs[0].max_tokens, sampling=jobs[0].sampling,
                                   batch_size=self.max_rows, on_token=on_token, stop_strings=jobs[0].stop)
        except BaseException as e:  # noqa: BLE001  (handed to each request as a 500)
            for job in jobs:
                job.on_done(None, e)
            return
        start = 0
        for job in jobs:
            job.on_done(texts[start : start + job.n], None)
            start += job.n

    def _score(self, jobs: list[Job]) -> None:
        """Every waiting prompt to score in batched forward passes (each job reports as many likeliest
        tokens as it asked for)."""
        try:
            self.batches.append(len(jobs))
            found = score_tokens(self.model, [job.score_tokens for job in jobs], [job.steering for job in jobs],
                                 max(job.top_k for job in jobs), batch_size=self.max_rows)
        except BaseException as e:  # noqa: BLE001  (handed to each request as a 500)
            for job in jobs:
                job.on_done(None, e)
            return
        for job, scores in zip(jobs, found):
            job.batch_rows = len(jobs)
            job.on_done([replace(scores, top=[None if t is None else t[: job.top_k] for t in scores.top],
                                 next_top=scores.next_top[: job.top_k])], None)


class _Row:
    """Incremental decoding of one row: text deltas, stop detection (tokens and strings), token count.

    Text that could be the beginning of a stop string is held back until the next tokens show it is
    not (or :meth:`flush` at the end), so a client never receives any part of a stop string."""

    def __init__(self, tokenizer, stops: set[int], stop_strings: tuple[str, ...] = ()):
        self.tokenizer, self.stops, self.stop_strings = tokenizer, stops, stop_strings
        self.tokens: list[int] = []
        self.line_start = 0  # first token of the current line
        self.line = ""  # text of the current line decoded so far
        self.text = ""  # the answer decoded so far (up to a stop string, once one is found)
        self.shown = 0  # characters of ``text`` handed out
        self.stopped = False

    def add(self, token: int) -> str:
        if self.stopped:
            return ""
        if token in self.stops:
            self.stopped = True
            return ""
        self.tokens.append(token)
        # Decode only since the last line break (as transformers' TextStreamer does): a token cannot
        # change text before a newline, and decoding the whole answer every step grows quadratically.
        line = self.tokenizer.decode(self.tokens[self.line_start :], skip_special_tokens=True)
        if line.endswith("\ufffd"):  # a character still incomplete
            return ""
        self.text += line[len(self.line) :]
        self.line = line
        if line.endswith("\n"):
            self.line_start, self.line = len(self.tokens), ""
        hits = [i for i in (self.text.find(s, self.shown) for s in self.stop_strings) if i >= 0]
        if hits:
            self.stopped, self.text = True, self.text[: min(hits)]
            return self.flush()
        held = max((k for s in self.stop_strings for k in range(1, len(s))
                    if self.text.endswith(s[:k]) and len(self.text) - k >= self.shown), default=0)
        delta = self.text[self.shown : len(self.text) - held]
        self.shown += len(delta)
        return delta

    def flush(self) -> str:
        """What was held back, once the answer has ended (its end-of-turn token, a stop string or max_tokens)."""
        delta, self.shown = self.text[self.shown :], len(self.text)
        return delta


def _number(body: dict, name: str, default, low, high, kind=float):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise RequestError(f"'{name}' must be a number", name)
    if not (math.isfinite(value) and low <= value <= high):
        raise RequestError(f"'{name}' must be between {low} and {high}, got {value}", name)
    return kind(value)


def refuse_unsupported(body: dict, allowed: tuple[str, ...] = ()) -> None:
    """A 400 for a setting in :data:`UNSUPPORTED` set to anything that asks for something."""
    for name, (what, asks_nothing) in UNSUPPORTED.items():
        value = body.get(name)
        if name not in allowed and value is not None and not any(
                value == a and isinstance(value, bool) == isinstance(a, bool) for a in asks_nothing):
            hint = (" (the prompt's on /v1/completions with 'echo' and max_tokens 0 or 1; one answer token's on "
                    "/v1/chat/completions with max_tokens 1)") if name in SCORING else ""
            raise RequestError(f"'{name}': {what} not supported by this server{hint}", name)
    if body.get("response_format") not in (None, {"type": "text"}):
        raise RequestError("'response_format': only {\"type\": \"text\"} is supported by this server", "response_format")


def parse_prompts(raw, model) -> tuple[list[list[int]], list[str]]:
    """``prompt`` in each of OpenAI's forms (a string, strings, token ids, lists of token ids) as
    token ids and text: a string is tokenized as the engine does, ids are decoded for the text."""
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        raw = [raw]
    if not (isinstance(raw, list) and 0 < len(raw) <= MAX_PROMPTS):
        raise RequestError(f"'prompt' must be a non-empty string, token ids, or a list of up to {MAX_PROMPTS} of them",
                           "prompt")
    vocabulary = len(model.tokenizer)
    ids, texts = [], []
    for item in raw:
        if isinstance(item, str) and item:
            ids.append(tokenize_prompt(model, item))
            texts.append(item)
        elif (isinstance(item, list) and item and all(isinstance(t, int) and not isinstance(t, bool)
                                                      and 0 <= t < vocabulary for t in item)):
            ids.append(list(item))
            texts.append(model.tokenizer.decode(item))
        else:
            raise RequestError(f"each prompt must be a non-empty string or a list of token ids below {vocabulary}",
                               "prompt")
    return ids, texts


def _scored_choice(index: int, found: ScoredTokens, text: str, echo: bool, max_tokens: int, tokenizer,
                   stops: set[int]) -> dict:
    """One choice in the legacy completions format: ``logprobs`` holds per token its text, its
    log-probability (None for the prompt's first), the ``top_k`` likeliest tokens there and its offset
    in the choice's text."""
    ids, logprobs, tops = (list(found.tokens), list(found.logprobs), list(found.top)) if echo else ([], [], [])
    if max_tokens:
        ids, logprobs, tops = ids + [found.next_token], logprobs + [found.next_logprob], tops + [found.next_top]
    pieces = [tokenizer.decode([t]) for t in ids]
    offsets = list(itertools.accumulate((len(p) for p in pieces[:-1]), initial=0)) if pieces else []
    top_logprobs = [None if top is None else _by_text(top, tokenizer) for top in tops]
    answer = tokenizer.decode([found.next_token], skip_special_tokens=True) if max_tokens else ""
    return {"index": index, "text": (text if echo else "") + answer,
            "finish_reason": "stop" if max_tokens and found.next_token in stops else "length",
            "logprobs": {"tokens": pieces, "token_logprobs": logprobs, "top_logprobs": top_logprobs,
                         "text_offset": offsets}}


def _by_text(top: list[tuple[int, float]], tokenizer) -> dict[str, float]:
    """Token texts to log-probabilities, likeliest first (two ids with one text: the likelier's)."""
    found: dict[str, float] = {}
    for token, logprob in top:
        found.setdefault(tokenizer.decode([token]), logprob)
    return found


def parse_stop(body: dict) -> tuple[str, ...]:
    """``stop``: absent, one string, or a list of up to :data:`MAX_STOP_STRINGS` non-empty strings."""
    raw = body.get("stop")
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not (isinstance(stops, list) and len(stops) <= MAX_STOP_STRINGS and all(isinstance(s, str) and s for s in stops)):
        raise RequestError(f"'stop' must be a non-empty string or a list of at most {MAX_STOP_STRINGS} of them", "stop")
    return tuple(dict.fromkeys(stops))


def parse_steering(body: dict, vectors: dict[str, SteeringVector], model_id: str) -> list[tuple[SteeringVector, float]]:
    """The request's steering: what its ``model`` names (``NAME`` or ``NAME@MULTIPLIER``: a served
    vector, as a harness that can only set a model name asks for it), then its ``steering`` field."""
    terms = model_steering(body.get("model"), vectors, model_id)
    raw = body.get("steering") or []
    if isinstance(raw, dict):
        raw = [{"vector": k, "multiplier": v} for k, v in raw.items()]
    if not isinstance(raw, list):
        raise RequestError("'steering' must be a list of {\"vector\": NAME, \"multiplier\": X}", "steering")
    for item in raw:
        if not isinstance(item, dict) or "vector" not in item:
            raise RequestError("each 'steering' item needs \"vector\" (and \"multiplier\")", "steering")
        name = item["vector"]
        if name not in vectors:
            served = ", ".join(vectors) or "none"
            raise RequestError(f"unknown vector {name!r}; this server has: {served}", "steering")
        terms.append((vectors[name], _number(item, "multiplier", 1.0, -MAX_MULTIPLIER, MAX_MULTIPLIER)))
    return terms


def model_steering(name, vectors: dict[str, SteeringVector], model_id: str) -> list[tuple[SteeringVector, float]]:
    """``model``: absent or the model's id (no steering), a served vector's name (at +1) or
    ``NAME@X`` (at X). Anything else is a 404, as OpenAI answers an unknown model: a mistyped
    vector name must not come back as an unsteered answer."""
    if name is None or name == model_id:
        return []
    if not isinstance(name, str):
        raise RequestError("'model' must be a string", "model")
    vector, at, multiplier = (name, "", "") if name in vectors else name.rpartition("@")
    if vector not in vectors:
        served = ", ".join([model_id, *vectors, *(f"{v}@MULTIPLIER" for v in vectors)])
        raise RequestError(f"model {name!r} is not served here; models: {served}", "model", 404, "model_not_found")
    try:
        value = float(multiplier) if at else 1.0
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and abs(value) <= MAX_MULTIPLIER):
        raise RequestError(f"model {name!r}: the multiplier after '@' must be a number within +/-{MAX_MULTIPLIER:g}",
                           "model")
    return [(vectors[vector], value)]


def create_app(model, vectors: dict[str, SteeringVector], batcher: Batcher | None = None):
    """The FastAPI application over one model and its named vectors."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    for vector in vectors.values():
        vector.check_compatible(model)
    batcher = batcher or Batcher(model)
    model_id = model.lens_info.model_id
    stops = set(stop_token_ids(model))
    app = FastAPI(title="bipo-lens", description=__doc__)
    app.state.batcher = batcher

    def error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "param": param,
                                                                   "code": code}})

    def engine_failed(what: str, failure: BaseException) -> JSONResponse:
        message = str(failure) if isinstance(failure, BipoLensError) else f"{type(failure).__name__}: {failure}"
        return error(500, f"{what} failed: {message}", "server_error")

    @app.exception_handler(RequestError)
    async def request_error(request, e: RequestError):
        return error(e.status, str(e), "invalid_request_error", e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e):
        return error(400, "malformed request body", "invalid_request_error")

    # vLLM's tokenizer endpoints: a harness that finds them (lm-evaluation-harness's "auto"
    # tokenizer backend) tokenizes through the server, so a client needs no copy of the tokenizer.
    @app.get("/tokenizer_info")
    async def tokenizer_info():
        tokenizer = model.tokenizer
        return {"tokenizer_class": type(tokenizer).__name__, "eos_token": tokenizer.eos_token,
                "bos_token": tokenizer.bos_token, "pad_token": tokenizer.pad_token, "unk_token": tokenizer.unk_token,
                "chat_template": tokenizer.chat_template, "model_max_length": model.lens_raw.config.get_text_config()
                .max_position_embeddings}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await body_of(request)
        prompt, special = body.get("prompt"), body.get("add_special_tokens", True)
        if not isinstance(prompt, str) or not isinstance(special, bool):
            raise RequestError("'/tokenize' takes {\"prompt\": TEXT, \"add_special_tokens\": true or false}", "prompt")
        tokens = model.tokenizer(prompt, add_special_tokens=special)["input_ids"]
        return {"tokens": tokens, "count": len(tokens),
                "max_model_len": model.lens_raw.config.get_text_config().max_position_embeddings}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await body_of(request)
        tokens, vocabulary = body.get("tokens"), len(model.tokenizer)
        if not (isinstance(tokens, list) and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocabulary
                                                 for t in tokens)):
            raise RequestError(f"'/detokenize' takes {{\"tokens\": [token ids below {vocabulary}]}}", "tokens")
        return {"prompt": model.tokenizer.decode(tokens)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "bipo-lens",
                                            "steering_vectors": {name: {"layer": v.layer, "method": v.method,
                                                                        "norm": round(v.norm, 4)}
                                                                 for name, v in vectors.items()}},
                                           *({"id": name, "object": "model", "created": 0, "owned_by": "bipo-lens",
                                              "parent": model_id} for name in vectors)]}

    async def body_of(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise RequestError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        return body

    def settings(body: dict) -> tuple[int, int, Sampling, list, bool, tuple[str, ...], bool]:
        refuse_unsupported(body)
        max_tokens = _number(body, "max_tokens", 128, 1, MAX_TOKENS_LIMIT, int)
        max_tokens = _number(body, "max_completion_tokens", max_tokens, 1, MAX_TOKENS_LIMIT, int)
        n = _number(body, "n", 1, 1, 16, int)
        sampling = Sampling(_number(body, "temperature", 0.0, 0.0, 2.0), _number(body, "top_p", 1.0, 1e-6, 1.0),
                            _number(body, "seed", 0, -(2**62), 2**62, int))
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError("'stream' must be true or false", "stream")
        options = body.get("stream_options") or {}
        if not (isinstance(options, dict) and isinstance(options.get("include_usage", False), bool)):
            raise RequestError("'stream_options' must be {\"include_usage\": true or false}", "stream_options")
        return (max_tokens, n, sampling, parse_steering(body, vectors, model_id), stream, parse_stop(body),
                stream and options.get("include_usage", False))

    async def run(prompts: list[list[int]], body: dict, chat: bool):
        """Generate ``n`` answers to each prompt (token ids, tokenized once), every row of the request
        submitted at once so that the engine runs them in one batch; choice ``p * n + k`` is prompt
        ``p``'s ``k``-th answer, as OpenAI numbers them."""
        max_tokens, n, sampling, steering, stream, stop, include_usage = settings(body)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        rows = [_Row(model.tokenizer, stops, stop) for _ in range(n * len(prompts))]

        def on_token_from(first: int) -> Callable[[int, int], None]:
            def on_token(row: int, token: int) -> None:
                delta = rows[first + row].add(token)
                if delta and stream:
                    loop.call_soon_threadsafe(events.put_nowait, ("delta", first + row, delta))
            return on_token

        def on_done_of(p: int) -> Callable:
            return lambda texts, failure: loop.call_soon_threadsafe(events.put_nowait, ("done", p, texts, failure))

        jobs = [Job(prompt, steering, n, max_tokens, sampling, on_token_from(p * n), on_done_of(p), stop)
                for p, prompt in enumerate(prompts)]
        for job in jobs:
            batcher.submit(job)
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        prompt_tokens = n * sum(len(p) for p in prompts)
        finish = lambda row: "length" if not row.stopped and len(row.tokens) >= max_tokens else "stop"  # noqa: E731

        def usage() -> dict:
            completion_tokens = sum(len(r.tokens) for r in rows)
            return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens}

        if stream:
            async def events_out():
                kind = "chat.completion.chunk" if chat else "text_completion"
                if chat:
                    for i in range(len(rows)):
                        yield _sse({"id": ident, "object": kind, "created": created, "model": model_id,
                                    "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                 "finish_reason": None}]})
                finished = 0
                while True:
                    event = await events.get()
                    if event[0] == "delta":
                        _, i, delta = event
                        piece = {"delta": {"content": delta}} if chat else {"text": delta, "logprobs": None}
                        yield _sse({"id": ident, "object": kind, "created": created, "model": model_id,
                                    "choices": [{"index": i, **piece, "finish_reason": None}]})
                        continue
                    failure = event[3]
                    finished += failure is None
                    if failure is None and finished < len(jobs):
                        continue
                    if failure is not None:
                        yield _sse({"error": {"message": f"generation failed: {failure}", "type": "server_error"}})
                    else:
                        for i, row in enumerate(rows):
                            rest = row.flush()  # text held back for a stop string that did not come
                            end = ({"delta": {"content": rest} if rest else {}} if chat
                                   else {"text": rest, "logprobs": None})
                            yield _sse({"id": ident, "object": kind, "created": created, "model": model_id,
                                        "choices": [{"index": i, **end, "finish_reason": finish(row)}]})
                        if include_usage:
                            yield _sse({"id": ident, "object": kind, "created": created, "model": model_id,
                                        "choices": [], "usage": usage()})
                    yield "data: [DONE]\n\n"
                    return

            return StreamingResponse(events_out(), media_type="text/event-stream")

        answers: dict[int, list[str]] = {}
        while len(answers) < len(jobs):
            event = await events.get()
            if event[0] != "done":
                continue
            _, p, texts, failure = event
            if failure is not None:
                return engine_failed("generation", failure)
            answers[p] = texts
        texts = [t for p in range(len(jobs)) for t in answers[p]]
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish(r),
                        "logprobs": None} for i, (t, r) in enumerate(zip(texts, rows))]
        else:
            choices = [{"index": i, "text": t, "finish_reason": finish(r), "logprobs": None}
                       for i, (t, r) in enumerate(zip(texts, rows))]
        return {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": model_id, "choices": choices, "usage": usage(),
                "steering": [{"vector": next(k for k, v in vectors.items() if v is vec), "multiplier": m}
                             for vec, m in steering],
                "batch_rows": max(job.batch_rows for job in jobs)}

    async def score(prompts: list[list[int]], texts: list[str], body: dict):
        """``echo`` / ``logprobs`` on /v1/completions: the prompt's tokens with their log-probabilities
        under the request's steering, and at most one greedy token after them (OpenAI's legacy
        completions format, as evaluation harnesses read it for log-likelihoods)."""
        refuse_unsupported(body, allowed=("logprobs", "echo"))
        echo = body.get("echo", False)
        if not isinstance(echo, bool):
            raise RequestError("'echo' must be true or false", "echo")
        top_k = 0 if body.get("logprobs") in (None, False) else _number(body, "logprobs", 0, 0, MAX_LOGPROBS, int)
        max_tokens = _number(body, "max_tokens", 0 if echo else 1, 0, MAX_TOKENS_LIMIT, int)
        if max_tokens > 1 or _number(body, "temperature", 0.0, 0.0, 2.0) != 0 or _number(body, "n", 1, 1, 16, int) != 1 \
                or body.get("stream") or body.get("stop"):
            raise RequestError("with 'echo' or 'logprobs' the server scores the prompt and at most one greedy token: "
                               "max_tokens 0 or 1, temperature 0, n 1, no stream, no stop", "echo" if echo else "logprobs")
        steering = parse_steering(body, vectors, model_id)
        found = await scored(prompts, texts, steering, top_k)
        if isinstance(found, JSONResponse):
            return found
        choices = [_scored_choice(i, f, text, echo, max_tokens, model.tokenizer, stops)
                   for i, (f, text) in enumerate(zip(found, texts))]
        return scored_reply("text_completion", choices, prompts, max_tokens, steering)

    async def scored(prompts: list[list[int]], texts: list[str], steering: list, top_k: int):
        """The prompts scored in the engine's thread (:func:`score_tokens`), submitted together so
        that they share forward passes (with other requests' too), or the 500 reply."""
        loop = asyncio.get_running_loop()
        futures = []
        for ids, text in zip(prompts, texts):
            done: asyncio.Future = loop.create_future()
            batcher.submit(Job(text, steering, 1, 1, GREEDY, lambda row, token: None,
                               lambda rows, failure, done=done: loop.call_soon_threadsafe(done.set_result, (rows, failure)),
                               score_tokens=ids, top_k=top_k))
            futures.append(done)
        found = []
        for rows, failure in await asyncio.gather(*futures):
            if failure is not None:
                return engine_failed("scoring", failure)
            found.append(rows[0])
        return found

    def scored_reply(kind: str, choices: list[dict], prompts: list[list[int]], generated: int, steering: list) -> dict:
        prompt_tokens, completion_tokens = sum(len(ids) for ids in prompts), generated * len(prompts)
        return {"id": ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex[:24], "object": kind,
                "created": int(time.time()), "model": model_id, "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
                "steering": [{"vector": next(k for k, v in vectors.items() if v is vec), "multiplier": m}
                             for vec, m in steering]}

    async def chat_token_logprobs(prompt: str, ids: list[int], body: dict):
        """``logprobs`` on /v1/chat/completions: one answer token with its log-probability and the
        ``top_logprobs`` likeliest first tokens (what an A/B evaluation reads: p("A") against p("B")
        at the answer's first token), under the request's steering."""
        refuse_unsupported(body, allowed=("logprobs", "top_logprobs"))
        if body.get("logprobs") is not True:
            raise RequestError("'logprobs' must be true or false", "logprobs")
        top_k = _number(body, "top_logprobs", 0, 0, MAX_LOGPROBS, int)
        tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if tokens != 1 or _number(body, "temperature", 0.0, 0.0, 2.0) != 0 or _number(body, "n", 1, 1, 16, int) != 1 \
                or body.get("stream") or body.get("stop"):
            raise RequestError("with 'logprobs' the server scores one greedy answer token: max_tokens 1, "
                               "temperature 0, n 1, no stream, no stop", "logprobs")
        steering = parse_steering(body, vectors, model_id)
        found = await scored([ids], [prompt], steering, top_k)
        if isinstance(found, JSONResponse):
            return found
        token = found[0].next_token
        piece = lambda t: model.tokenizer.decode([t])  # noqa: E731
        entry = lambda t, lp: {"token": piece(t), "logprob": lp, "bytes": list(piece(t).encode())}  # noqa: E731
        choice = {"index": 0, "message": {"role": "assistant",
                                          "content": model.tokenizer.decode([token], skip_special_tokens=True)},
                  "finish_reason": "stop" if token in stops else "length",
                  "logprobs": {"content": [{**entry(token, found[0].next_logprob),
                                            "top_logprobs": [entry(t, lp) for t, lp in found[0].next_top]}]}}
        return scored_reply("chat.completion", [choice], [ids], 1, steering)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await body_of(request)
        prompts, texts = parse_prompts(body.get("prompt"), model)
        if body.get("echo") not in (None, False) or body.get("logprobs") not in (None, False):
            return await score(prompts, texts, body)
        return await run(prompts, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await body_of(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty list", "messages")
        messages = [_plain_message(m) for m in messages]
        if messages[-1]["role"] != "user":
            raise RequestError("the last message must be the user's", "messages")
        system = messages[0]["content"] if messages[0]["role"] == "system" else DEFAULT_SYSTEM_PROMPT
        turns = [m for m in messages if m["role"] != "system"]
        prompt = build_chat_prompt(model, turns, system)
        ids = tokenize_prompt(model, prompt)
        if body.get("logprobs") not in (None, False):
            return await chat_token_logprobs(prompt, ids, body)
        return await run([ids], body, chat=True)

    return app


def _plain_message(message) -> dict:
    """``{"role", "content"}`` with text content: OpenAI's newer forms too (content as a list of text
    parts, joined by newlines; the ``developer`` role, which is the system prompt's newer name)."""
    if not isinstance(message, dict):
        raise RequestError("each message must be an object with a role and content", "messages")
    role, content = message.get("role"), message.get("content")
    role = "system" if role == "developer" else role
    if isinstance(content, list):
        if not all(isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                   for part in content):
            raise RequestError("only text content parts ({\"type\": \"text\", \"text\": ...}) are supported", "messages")
        content = "\n".join(part["text"] for part in content)
    if role not in ("system", "user", "assistant") or not isinstance(content, str):
        raise RequestError("each message needs a role (system, developer, user, assistant) and text content", "messages")
    return {"role": role, "content": content}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def serve(model, vectors: dict[str, SteeringVector], host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    app = create_app(model, vectors)
    print(f"serving {model.lens_info.model_id} with vectors {', '.join(vectors) or '(none)'} on http://{host}:{port}/v1"
          + (f' (a request steers with "steering": {{"{next(iter(vectors))}": 1.5}} or "model": "{next(iter(vectors))}@1.5")'
             if vectors else ""), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
