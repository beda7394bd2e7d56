import json

import pytest

from bipo_lens import BipoLensError, PreferencePair, builtin_pair_sets, load_pairs, split_pairs


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtin_sets_have_at_least_40_distinct_pairs():
    assert {"power_seeking", "optimism", "formality"} <= set(builtin_pair_sets())
    for name in builtin_pair_sets():
        pairs = load_pairs(name)
        assert len(pairs) >= 40 and len({p.question for p in pairs}) == len(pairs)


def test_bipo_csv(tmp_path):
    path = write(tmp_path, "p.csv", 'question,matching,not_matching\n"Q, one?",yes power,no power\n')
    assert load_pairs(path) == [PreferencePair("Q, one?", "yes power", "no power")]


def test_ab_csv_picks_the_matching_letter(tmp_path):
    path = write(tmp_path, "ab.csv", "question,A,B,matching\nq1,a1,b1,B\nq2,a2,b2,A\n")
    assert load_pairs(path) == [PreferencePair("q1", "b1", "a1"), PreferencePair("q2", "a2", "b2")]


def test_anthropic_jsonl(tmp_path):
    rows = [{"question": f"q{i}", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"} for i in range(2)]
    path = write(tmp_path, "e.jsonl", "\n".join(json.dumps(r) for r in rows))
    assert load_pairs(path)[1] == PreferencePair("q1", " Yes", " No")


def test_other_tools_field_names_are_read_as_the_three_fields(tmp_path):
    """DPO's prompt/chosen/rejected and wisent-guard's QA pairs load as question/matching/not_matching;
    where Anthropic's file lists several not-matching answers, the first is the pair's."""
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"},
            {"question": "q", "correct_answer": "right", "incorrect_answer": "wrong"},
            {"instruction": "i", "positive": "+", "negative": "-"}]
    path = write(tmp_path, "other.jsonl", "\n".join(json.dumps(r) for r in rows))
    assert load_pairs(path) == [PreferencePair("p", "c", "r"), PreferencePair("q", "right", "wrong"),
                                PreferencePair("i", "+", "-")]
    listed = {"question": "q", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": [" No", " Never"]}
    assert load_pairs(write(tmp_path, "listed.json", json.dumps([listed]))) == [PreferencePair("q", " Yes", " No")]


def test_truthfulqa_best_against_each_incorrect(tmp_path):
    path = write(tmp_path, "t.csv", 'Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\nA,B,Q?,Right,Right,"Wrong1; Wrong2",s\n')
    assert load_pairs(path) == [PreferencePair("Q?", "Right", "Wrong1"), PreferencePair("Q?", "Right", "Wrong2")]


def test_json_object_and_bare_list(tmp_path):
    pair = {"question": "q", "matching": "m", "not_matching": "n"}
    assert load_pairs(write(tmp_path, "a.json", json.dumps({"name": "x", "pairs": [pair]}))) == [PreferencePair("q", "m", "n")]
    assert load_pairs(write(tmp_path, "b.json", json.dumps([pair]))) == [PreferencePair("q", "m", "n")]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("e.csv", "", "empty"),
        ("c.csv", "question,matchin,not_matching\nq,m,n\n", "unrecognised CSV columns question, matchin"),
        ("j.json", '{"pairs": [{"question": "q"', "not valid JSON"),
        ("k.json", '[{"question": "q", "matching": "m"}]', "lacks not_matching"),
        ("s.json", '[{"question": "q", "matching": " ", "not_matching": "n"}]', "no usable pairs"),
        ("x.csv", "question,A,B,matching\nq,a,b,C\n", "must be A or B"),
    ],
)
def test_malformed_files_give_one_line_errors(tmp_path, name, text, message):
    with pytest.raises(BipoLensError, match=message) as error:
        load_pairs(write(tmp_path, name, text))
    assert "\n" not in str(error.value)


def test_records_with_empty_fields_are_skipped_with_a_warning(tmp_path):
    path = write(tmp_path, "p.csv", "question,matching,not_matching\n,m,n\nq,m,n\n")
    with pytest.warns(UserWarning, match="skipped 1 records"):
        assert load_pairs(path) == [PreferencePair("q", "m", "n")]


def test_non_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"question,matching,not_matching\n\xff\xfe,a,b\n")
    with pytest.raises(BipoLensError, match="not UTF-8"):
        load_pairs(path)
    with pytest.raises(BipoLensError, match="not found"):
        load_pairs(tmp_path / "nope.csv")


def test_split_is_seeded_and_keeps_questions_apart():
    pairs = load_pairs("optimism")
    train, test = split_pairs(pairs, 0.25, seed=3)
    assert (train, test) == split_pairs(pairs, 0.25, seed=3)
    assert not {p.question for p in train} & {p.question for p in test}
    assert len(test) == 12 and len(train) + len(test) == len(pairs)


def test_shared_data_formats_load(shared_data):
    assert len(load_pairs(shared_data / "bipo/power-seeking/train.csv")) == 640  # 2 rows lack a question
    ab = load_pairs(shared_data / "bipo/power-seeking/test_infer.csv")
    assert len(ab) == 200
    assert len(load_pairs(shared_data / "anthropic-evals/persona/desire-for-acquiring-power.jsonl")) == 1000
    assert len(load_pairs(shared_data / "anthropic-evals/advanced-ai-risk/survival-instinct.jsonl")) == 953
    assert len(load_pairs(shared_data / "truthfulqa/TruthfulQA.csv")) > 817


def test_shared_behaviour_sets_are_found_by_layout(shared_data, tmp_path):
    from bipo_lens.pairs import shared_behaviour_sets

    found = shared_behaviour_sets(shared_data)
    assert list(found) == ["power-seeking", "truthfulqa", "corrigible-neutral-HHH", "power-seeking-inclination",
                           "survival-instinct", "desire-for-acquiring-power"]
    assert found["power-seeking"] == (shared_data / "bipo/power-seeking/train.csv", shared_data / "bipo/power-seeking/test.csv")
    assert all(test is None for name, (_, test) in found.items() if name != "power-seeking")  # split by the caller
    (tmp_path / "anthropic-evals" / "persona").mkdir(parents=True)
    (tmp_path / "anthropic-evals" / "persona" / "new-set.jsonl").write_text("")
    (tmp_path / "bipo" / "wealth").mkdir(parents=True)
    (tmp_path / "bipo" / "wealth" / "train.csv").write_text("")
    assert shared_behaviour_sets(tmp_path) == {"wealth": (tmp_path / "bipo/wealth/train.csv", None),
                                               "new-set": (tmp_path / "anthropic-evals/persona/new-set.jsonl", None)}
    assert shared_behaviour_sets(tmp_path / "absent") == {}


def test_one_pair_per_question_keeps_the_first_in_order():
    from bipo_lens.pairs import one_per_question

    pairs = [PreferencePair("q1", "a", "b"), PreferencePair("q2", "c", "d"), PreferencePair("q1", "a", "e")]
    assert one_per_question(pairs) == pairs[:2] and one_per_question([]) == []


def test_response_texts_read_a_choice_letter_as_its_choice():
    from bipo_lens.pairs import response_texts

    ab = PreferencePair("Do you consent to this change?\n\nChoices:\n (A) I do not consent\n (B) I consent", " (B)", " (A)")
    assert response_texts(ab) == ("I consent", "I do not consent")
    assert response_texts(PreferencePair("Choices:\n(A) x", "(C)", "(A)")) == ("(C)", "x")  # no choice C listed
    assert response_texts(PreferencePair("Is it so?", " Yes", " No")) == (" Yes", " No")
