#!/usr/bin/env bash
# Each rewritten test must fail when the behaviour it names is broken on purpose (issue 17).
# Run by hand: tests/mutations.sh (about 5 min); each line must say "caught".
cd "$(dirname "$0")/.."
run() {  # name, file, python-replace old, new, test ids...
  local name=$1 file=$2 old=$3 new=$4; shift 4
  cp "$file" ${TMPDIR:-/tmp}/mut.bak
  python3 - "$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
assert s.count(old) == 1, (p, old)
open(p, "w").write(s.replace(old, new))
PY
  if .venv/bin/python -m pytest -q -x -p no:cacheprovider "$@" > ${TMPDIR:-/tmp}/mut-$name.log 2>&1; then
    echo "MUTATION $name: tests still PASS (bad)"
  else
    echo "MUTATION $name: caught ($(grep -m1 -E 'assert|Error' ${TMPDIR:-/tmp}/mut-$name.log | cut -c1-150))"
  fi
  cp ${TMPDIR:-/tmp}/mut.bak "$file"
}
run no_quantisation bipo_lens/models.py "            w.copy_((w / scale).round().clamp(-levels, levels) * scale)" "            pass" tests/test_analysis.py::test_quantised_sibling_and_direct_transfer
run retained_self bipo_lens/analysis/transfer.py '"retained": moved / native_range if native_range' '"retained": moved / moved if native_range' tests/test_analysis.py::test_quantised_sibling_and_direct_transfer
run map_ignored bipo_lens/analysis/transfer.py "mapped, how = vector.vector.float() @ linear_map.weight, linear_map.method" "mapped, how = -(vector.vector.float() @ linear_map.weight), linear_map.method" tests/test_analysis.py::test_cross_model_map_to_gemma
run compose_drops_others bipo_lens/analysis/composition.py "measured[key] = float(scorers[name].margins([(vectors[n], w) for n, w in assignment.items()]).mean())" "measured[key] = float(scorers[name].margins([(vectors[name], assignment[name])]).mean())" tests/test_analysis.py::test_composition_adds_two_different_vectors
run eval_one_vector bipo_lens/evaluation/evaluate.py "            lp = scorers.logps([(vector, m)])" "            lp = scorers.logps([(next(iter(vectors.values())), m)])" tests/test_evaluation.py::test_evaluate_moves_with_the_multiplier
run ab_letters_swapped bipo_lens/evaluation/evaluate.py "ab = float(torch.sigmoid(ab_lp[:, 0] - ab_lp[:, 1]).mean())" "ab = float(torch.sigmoid(ab_lp[:, 1] - ab_lp[:, 0]).mean())" tests/test_evaluation.py::test_eval_cli_writes_json_and_plot
run no_terminator bipo_lens/tokens.py 'terminator = end_of_turn_id(model) if response_format == "eot" else None' 'terminator = None' tests/test_response_format.py
run no_mismatch_warning bipo_lens/vectors.py 'if self.model_id not in ("unknown", model_info.model_id) and' 'if False and' tests/test_vectors.py::test_vector_of_another_model_with_the_same_width_warns_once
git status --short bipo_lens
