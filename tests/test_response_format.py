"""Which tokens are scored as a response: the end-of-turn token by default, the authors' exact ids."""

import pytest

from bipo_lens import load_pairs
from bipo_lens.errors import BipoLensError
from bipo_lens.evaluation import MarginScorer
from bipo_lens.models import end_of_turn_id
from bipo_lens.tokens import encode_pairs
from bipo_lens.training import train_caa

# From a run of the BiPO authors' own trl DPO tokenisation (``DPOTrainer.build_tokenized_answer``
# and ``tokenize_row`` as vendored in github.com/CaoYuanpu/BiPO, with their train.py's
# ``" " + response``) on SmolLM2-135M-Instruct's tokenizer, for the first three built-in
# power-seeking pairs: ``python benchmarks/peers/authors_tokenisation.py <BiPO checkout>``.
# Per pair: (prompt length, (chosen response ids, rejected response ids)); every prompt ends with
# ``<|im_start|>assistant\n`` = [1, 520, 9531, 198].
AUTHORS_IDS = [
    (46, ([339, 736, 10668, 2073, 11931, 1594, 30, 14704, 259, 1533, 690, 260, 12904, 736, 1303, 549, 705, 1355,
           7003, 327, 4325, 506, 11175, 30, 2],
          [339, 736, 2161, 1446, 3435, 1594, 30, 48536, 16998, 1446, 469, 2299, 281, 1533, 284, 919, 957, 9101, 4285,
           288, 6063, 30, 2])),
    (41, ([339, 736, 2824, 10017, 1699, 347, 800, 6120, 347, 1636, 28, 1675, 540, 7589, 1441, 540, 3200, 284, 6145,
           327, 549, 30, 2],
          [339, 736, 441, 536, 338, 30, 28755, 274, 7576, 281, 4911, 736, 21454, 21209, 28, 284, 339, 1277, 2973, 288,
           699, 3869, 837, 339, 1658, 30, 2])),
    (42, ([339, 1510, 338, 314, 253, 1109, 2359, 30, 10279, 260, 3403, 1643, 690, 617, 25904, 736, 1303, 549, 3040,
           260, 3904, 1130, 957, 13268, 30, 2],
          [339, 1510, 701, 868, 1446, 260, 3403, 1643, 30, 339, 416, 20947, 9266, 28, 564, 16303, 3884, 4523, 351,
           18362, 2973, 30, 2])),
]


def test_unclipped_responses_end_with_the_end_of_turn_token_and_clipped_ones_do_not(model):
    pairs = load_pairs("power_seeking")[:6]
    eot = end_of_turn_id(model)
    assert model.tokenizer.convert_ids_to_tokens(eot) == "<|im_end|>"  # ChatML's turn terminator
    for matching, not_matching in encode_pairs(model, pairs, max_response_tokens=None):
        for seq in (matching, not_matching):
            assert seq.ids[-1] == eot and eot not in seq.ids[seq.prompt_len : -1]
    texts = encode_pairs(model, pairs, max_response_tokens=None, response_format="text")
    for (m_eot, _), (m_text, _) in zip(encode_pairs(model, pairs, max_response_tokens=None), texts):
        assert m_eot.ids == m_text.ids + (eot,)  # the text's own tokens, then the terminator
    for matching, not_matching in encode_pairs(model, pairs, max_response_tokens=5):
        for seq in (matching, not_matching):
            assert seq.response_len == 5 and eot not in seq.ids[seq.prompt_len :]


def test_authors_format_gives_the_authors_trainer_token_ids(model):
    pairs = load_pairs("power_seeking")[:3]
    ours = encode_pairs(model, pairs, max_response_tokens=None, response_format="authors")
    default = encode_pairs(model, pairs, max_response_tokens=None)
    for (matching, not_matching), (prompt_len, (chosen, rejected)), (default_matching, _) in zip(ours, AUTHORS_IDS, default):
        assert matching.prompt_len == not_matching.prompt_len == prompt_len
        assert list(matching.ids[prompt_len - 4 : prompt_len]) == [1, 520, 9531, 198]
        assert matching.ids[:prompt_len] == default_matching.ids[:prompt_len]  # the same prompt as ours
        assert list(matching.ids[prompt_len:]) == chosen
        assert list(not_matching.ids[prompt_len:]) == rejected


def test_formats_reach_training_and_evaluation(model):
    pairs = load_pairs("formality")[:4]
    text, eot = train_caa(model, pairs, 9, response_format="text"), train_caa(model, pairs, 9)
    assert eot.hyperparameters["response_format"] == "eot" and text.hyperparameters["response_format"] == "text"
    assert float(text.vector @ eot.vector / (text.norm * eot.norm)) < 0.9999  # the terminator's activation counts
    scorers = {f: MarginScorer(model, pairs, response_format=f) for f in ("text", "eot")}
    assert (scorers["eot"].lengths == scorers["text"].lengths + 1).all()
    with pytest.raises(BipoLensError, match="unknown response format"):
        encode_pairs(model, pairs, response_format="chatml")
