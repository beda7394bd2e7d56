"""``bipo-lens chat``: a steered conversation in the terminal, streamed as it is generated.

A thin face on the engine (:func:`bipo_lens.generation.generate_stream`): the model's chat template
with the whole history, the vector added at its layer times the multiplier. Commands change the
steering between turns; ``/compare`` answers the last question again with steering off (and on, if
it was off), so the same turn can be read both ways.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from io import TextIOBase  # not typing.TextIO: beartype cannot check streams against it

from bipo_lens.errors import BipoLensError
from bipo_lens.generation import Sampling, generate_stream
from bipo_lens.interop import read_vector
from bipo_lens.models import DEFAULT_SYSTEM_PROMPT, build_chat_prompt
from bipo_lens.vectors import SteeringVector

HELP = """commands:
  /m X         set the multiplier (e.g. /m -1.5)
  /load PATH   steer with another vector file (.safetensors, .pt, a one-direction .gguf)
  /off, /on    steering off / on
  /compare     answer the last question again with steering toggled, to compare the same turn
  /reset       forget the conversation
  /status      what is steering now
  /quit        leave (or Ctrl-D)"""


@dataclass
class ChatSession:
    model: object
    vector: SteeringVector | None
    multiplier: float = 1.0
    enabled: bool = True
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    max_new_tokens: int = 256
    sampling: Sampling = field(default_factory=Sampling)
    history: list[dict] = field(default_factory=list)

    def status(self) -> str:
        if self.vector is None:
            return "steering: no vector"
        state = "on" if self.enabled else "off"
        return (f"steering {state}: {self.vector.method} vector, layer {self.vector.layer}, "
                f"multiplier {self.multiplier:+g}")

    def answer(self, messages: list[dict], steered: bool, out: TextIOBase) -> str:
        steering = [(self.vector, self.multiplier)] if steered and self.vector is not None else []
        prompt = build_chat_prompt(self.model, messages, self.system_prompt)
        pieces = []
        for piece in generate_stream(self.model, prompt, steering, max_new_tokens=self.max_new_tokens,
                                     sampling=self.sampling):
            pieces.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        return "".join(pieces).strip()

    def command(self, line: str, out: TextIOBase) -> bool:
        """Handle a /command; False when the session should end."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/m":
            try:
                value = float(argument)
            except ValueError:
                raise BipoLensError(f"/m needs a number, got {argument!r}") from None
            if value != value or abs(value) == float("inf"):
                raise BipoLensError("/m needs a finite number")
            self.multiplier = value
        elif name == "/load":
            vector = read_vector(argument)
            vector.check_compatible(self.model)
            self.vector, self.enabled = vector, True
        elif name in ("/off", "/on"):
            self.enabled = name == "/on"
        elif name == "/reset":
            self.history.clear()
        elif name == "/compare":
            if len(self.history) < 2:
                raise BipoLensError("/compare needs a finished turn")
            question = self.history[:-1]
            out.write(f"[steering {'off' if self.enabled else 'on'}] ")
            self.answer(question, not self.enabled, out)
        elif name == "/help":
            out.write(HELP + "\n")
            return True
        elif name != "/status":
            raise BipoLensError(f"unknown command {name}; /help lists them")
        out.write(f"[{self.status()}]\n")
        return True

    def run(self, lines: TextIOBase | None = None, out: TextIOBase | None = None) -> None:
        """Read questions and /commands from ``lines`` (default: the ``sys.stdin`` of the moment)."""
        lines, out = lines or sys.stdin, out or sys.stdout
        interactive = lines.isatty()
        out.write(f"[{self.status()}; /help for commands]\n")
        while True:
            if interactive:
                out.write("you> ")
                out.flush()
            line = lines.readline()
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                try:
                    if not self.command(line, out):
                        break
                except BipoLensError as e:
                    out.write(f"[error: {e}]\n")
                continue
            self.history.append({"role": "user", "content": line})
            out.write(f"[{self._label()}] ")
            reply = self.answer(self.history, self.enabled, out)
            self.history.append({"role": "assistant", "content": reply})

    def _label(self) -> str:
        return f"steered {self.multiplier:+g}" if self.enabled and self.vector is not None else "unsteered"
