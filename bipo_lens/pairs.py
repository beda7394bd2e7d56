"""Preference pairs: one type, one loader per file format, seeded splits, built-in sets.

Every loader returns ``list[PreferencePair]`` where ``matching`` shows the behaviour (the paper's
target response r_T) and ``not_matching`` its opposite (r_O).

The JSON format for your own data (what the built-in sets use)::

    {"name": "optimism", "description": "...",
     "pairs": [{"question": "...", "matching": "...", "not_matching": "..."}, ...]}

A bare list of such objects is accepted too; JSONL with one object per line as well.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import json
import random
import re
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bipo_lens.errors import BipoLensError

BUILTIN_DIR = resources.files("bipo_lens") / "data"
PAIR_KEYS = ("question", "matching", "not_matching")


@dataclass(frozen=True)
class PreferencePair:
    question: str
    matching: str
    not_matching: str


def shared_data_dir() -> Path:
    """Where the shared evaluation data is read in place: ``$BIPO_LENS_SHARED_DATA``, else
    ``../shared/data`` (it may not exist: callers fall back to the built-in sets)."""
    return Path(os.environ.get("BIPO_LENS_SHARED_DATA", "../shared/data"))


def shared_behaviour_sets(data_root: str | Path) -> dict[str, tuple[Path, Path | None]]:
    """Every behaviour's pair files under the shared data directory, by name: ``(train, test)``,
    where ``test`` is None when the set has no held-out file of its own (split it). Found by
    layout, so a set added there is studied without a code change: BiPO's ``bipo/<name>/train.csv``
    (+ ``test.csv``), ``truthfulqa/TruthfulQA.csv``, Anthropic's ``anthropic-evals/*/<name>.jsonl``."""
    root = Path(data_root)
    found: dict[str, tuple[Path, Path | None]] = {}
    for train in sorted(root.glob("bipo/*/train.csv")):
        test = train.with_name("test.csv")
        found[train.parent.name] = (train, test if test.is_file() else None)
    if (root / "truthfulqa" / "TruthfulQA.csv").is_file():
        found["truthfulqa"] = (root / "truthfulqa" / "TruthfulQA.csv", None)
    for path in sorted(root.glob("anthropic-evals/*/*.jsonl")):
        found[path.stem] = (path, None)
    return found


def builtin_pair_sets() -> list[str]:
    """Names of the pair sets shipped with the package (usable wherever a path is)."""
    return sorted(p.name[: -len(".json")] for p in BUILTIN_DIR.iterdir() if p.name.endswith(".json"))


def load_pairs(source: str | Path) -> list[PreferencePair]:
    """Load pairs from a file (format detected from its content) or a built-in set name."""
    path = Path(source)
    if not path.exists():
        if str(source) in builtin_pair_sets():
            path = Path(str(BUILTIN_DIR / f"{source}.json"))
        else:
            raise BipoLensError(
                f"pairs file not found: {source} (built-in sets: {', '.join(builtin_pair_sets())})"
            )
    if path.is_dir():
        raise BipoLensError(f"{path} is a directory, not a pairs file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BipoLensError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise BipoLensError(f"{path}: the file is empty")
    stripped = text.lstrip()
    if stripped[0] in "[{":
        rows = _json_rows(text, path)
        pairs = _pairs_from_records(rows, path)
    else:
        pairs = _pairs_from_csv(text, path)
    usable = [p for p in pairs if p is not None]
    if not usable:
        raise BipoLensError(f"{path}: no usable pairs ({len(pairs)} records, all with an empty field)")
    if len(usable) < len(pairs):
        first = pairs.index(None) + 1
        warnings.warn(f"{path}: skipped {len(pairs) - len(usable)} records with an empty field (first: record {first})", stacklevel=2)
    _warn_duplicates(usable, path)
    return usable


def _json_rows(text: str, path: Path) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as first_error:
        # JSONL: one JSON object per line.
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BipoLensError(
                    f"{path}: not valid JSON or JSONL (line {number}: {e.msg})"
                ) from None
        if len(rows) <= 1:
            raise BipoLensError(
                f"{path}: not valid JSON (line {first_error.lineno}: {first_error.msg})"
            ) from None
        return rows
    if isinstance(data, dict):
        if "pairs" not in data:
            raise BipoLensError(f"{path}: a JSON object needs a 'pairs' list (found keys: {', '.join(map(str, data))})")
        data = data["pairs"]
    if not isinstance(data, list):
        raise BipoLensError(f"{path}: expected a list of pairs, found {type(data).__name__}")
    return data


def _pairs_from_records(rows: list, path: Path) -> list[PreferencePair | None]:
    pairs = []
    for index, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise BipoLensError(f"{path}: record {index} is a {type(row).__name__}, expected an object")
        if "answer_matching_behavior" in row:  # Anthropic model-written evals
            pairs.append(_anthropic_pair(row, index, path))
        else:
            pairs.append(_pair_from_row(_aliased(row), index, path, found=list(row)))
    return pairs


KEY_ALIASES = {  # other tools' names for the three fields (wisent-guard's QA pairs, DPO's prompt/chosen/rejected)
    "question": ("prompt", "instruction"),
    "matching": ("correct_answer", "positive", "positive_response", "chosen"),
    "not_matching": ("incorrect_answer", "negative", "negative_response", "rejected"),
}


def _aliased(row: dict) -> dict:
    out = dict(row)
    for key, aliases in KEY_ALIASES.items():
        if key not in out:
            found = next((a for a in aliases if a in row), None)
            if found is not None:
                out[key] = row[found]
    return out


def _anthropic_pair(row: dict, index: int, path: Path) -> PreferencePair | None:
    matching = row.get("answer_matching_behavior")
    not_matching = row.get("answer_not_matching_behavior")
    if isinstance(not_matching, list):  # some subsets list several
        not_matching = not_matching[0] if not_matching else None
    return _pair_from_row(
        {"question": row.get("question"), "matching": matching, "not_matching": not_matching},
        index,
        path,
        found=list(row),
    )


def _pair_from_row(row: dict, index: int, path: Path, found: list) -> PreferencePair | None:
    missing = [k for k in PAIR_KEYS if k not in row or row[k] is None]
    if missing:
        raise BipoLensError(
            f"{path}: record {index} lacks {', '.join(missing)} "
            f"(expected {', '.join(PAIR_KEYS)}; found {', '.join(map(str, found))})"
        )
    values = [row[k] for k in PAIR_KEYS]
    for key, value in zip(PAIR_KEYS, values):
        if not isinstance(value, str):
            raise BipoLensError(f"{path}: record {index}: '{key}' must be text, found {type(value).__name__}")
    if not all(v.strip() for v in values):
        return None  # skipped with a warning by load_pairs (real data has a few such rows)
    return PreferencePair(*values)


def _pairs_from_csv(text: str, path: Path) -> list[PreferencePair | None]:
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:
        raise BipoLensError(f"{path}: malformed CSV ({e})") from None
    header = list(rows[0].keys()) if rows else next(csv.reader(io.StringIO(text)), [])
    columns = set(header)
    if {"question", "matching", "not_matching"} <= columns:
        convert = _bipo_row
    elif {"question", "A", "B", "matching"} <= columns:
        convert = _ab_row
    elif {"Question", "Best Answer", "Incorrect Answers"} <= columns:
        return _truthfulqa_pairs(rows, path)
    else:
        raise BipoLensError(
            f"{path}: unrecognised CSV columns {', '.join(map(str, header))}; expected "
            "question,matching,not_matching (BiPO), question,A,B,matching (A/B) or "
            "TruthfulQA's Question,Best Answer,Incorrect Answers"
        )
    pairs = []
    for index, row in enumerate(rows, start=2):
        if None in row:
            raise BipoLensError(f"{path}: line {index} has more fields than the header")
        pairs.append(_pair_from_row(convert(row, index, path), index, path, found=header))
    return pairs


def _bipo_row(row: dict, index: int, path: Path) -> dict:
    return row


def _ab_row(row: dict, index: int, path: Path) -> dict:
    letter = (row.get("matching") or "").strip()
    if letter not in ("A", "B"):
        raise BipoLensError(f"{path}: line {index}: 'matching' must be A or B, found {letter!r}")
    other = "B" if letter == "A" else "A"
    return {"question": row["question"], "matching": row[letter], "not_matching": row[other]}


def _truthfulqa_pairs(rows: list[dict], path: Path) -> list[PreferencePair | None]:
    """Best Answer against each Incorrect Answer (answers in a cell are separated by '; ')."""
    pairs = []
    for index, row in enumerate(rows, start=2):
        best = (row.get("Best Answer") or "").strip()
        incorrect = [a.strip() for a in (row.get("Incorrect Answers") or "").split(";") if a.strip()]
        question = (row.get("Question") or "").strip()
        if not (question and best and incorrect):
            raise BipoLensError(f"{path}: line {index}: empty Question, Best Answer or Incorrect Answers")
        pairs.extend(PreferencePair(question, best, wrong) for wrong in incorrect)
    return pairs


AB_ANSWER = re.compile(r"^\s*\(?([A-H])\)?\s*$")
CHOICE_LINE = re.compile(r"^\s*\(([A-H])\)\s*(.+?)\s*$", re.MULTILINE)


def response_texts(pair: PreferencePair) -> tuple[str, str]:
    """(matching, not matching) as text a reader can compare: a response that is only a choice's
    letter (``" (B)"``) becomes the text of that choice where the question lists it. Why: a judge of
    answers fitted on the letters alone learns the letter, not the behaviour (on Anthropic's
    advanced-ai-risk files it was no better than chance)."""
    choices = dict(CHOICE_LINE.findall(pair.question))

    def text(response: str) -> str:
        letter = AB_ANSWER.match(response)
        return choices.get(letter.group(1), response) if letter else response

    return text(pair.matching), text(pair.not_matching)


def load_ab_pairs(source: str | Path, pairs: list[PreferencePair] | None = None) -> list[PreferencePair] | None:
    """The multiple-choice view of a file, or None where it has none.

    An A/B CSV (question, A, B, matching) becomes pairs whose question lists the choices,
    ``"{question}\n\nChoices:\n(A) {A}\n(B) {B}"``, and whose responses are ``"(A)"`` and ``"(B)"``.
    Pairs whose responses already are letters (Anthropic's advanced-ai-risk files) are returned as
    they are; pass ``pairs`` when the file is already loaded, so it is not read again.
    """
    path = Path(source)
    if path.suffix.lower() == ".csv" and path.is_file():
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and {"question", "A", "B", "matching"} <= set(rows[0]):
            ab = []
            for row in rows:
                letter = (row.get("matching") or "").strip()
                if letter not in ("A", "B") or not (row.get("question") or "").strip():
                    continue
                question = f"{row['question']}\n\nChoices:\n(A) {row['A']}\n(B) {row['B']}"
                ab.append(PreferencePair(question, f"({letter})", f"({'B' if letter == 'A' else 'A'})"))
            return ab or None
    pairs = load_pairs(source) if pairs is None else pairs
    if all(AB_ANSWER.match(p.matching) and AB_ANSWER.match(p.not_matching) for p in pairs):
        return pairs
    return None


def _warn_duplicates(pairs: list[PreferencePair], path: Path) -> None:
    duplicates = len(pairs) - len(set(pairs))
    if duplicates:
        warnings.warn(f"{path}: {duplicates} duplicate pairs", stacklevel=3)


def split_pairs(
    pairs: list[PreferencePair], test_fraction: float, seed: int = 0
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Seeded split that keeps every question on one side (no question in both train and test)."""
    if not 0.0 <= test_fraction < 1.0:
        raise BipoLensError(f"test fraction must be in [0, 1), got {test_fraction}")
    questions = sorted({p.question for p in pairs})
    random.Random(seed).shuffle(questions)
    n_test = round(len(questions) * test_fraction)
    test_questions = set(questions[:n_test])
    train = [p for p in pairs if p.question not in test_questions]
    test = [p for p in pairs if p.question in test_questions]
    return train, test


def one_per_question(pairs: list[PreferencePair]) -> list[PreferencePair]:
    """The first pair of each question, in order. Why: TruthfulQA gives one pair per wrong answer
    (~3 per question), so its first 48 pairs are 12 questions, and an interval over them would count
    one question several times as if independent."""
    seen: set[str] = set()
    return [p for p in pairs if not (p.question in seen or seen.add(p.question))]


def fingerprint(pairs: list[PreferencePair]) -> str:
    """A short hash of the pairs' content, stored in vector metadata."""
    digest = hashlib.sha256()
    for p in pairs:
        for field in (p.question, p.matching, p.not_matching):
            digest.update(field.encode())
            digest.update(b"\0")
    return digest.hexdigest()[:16]
