#!/usr/bin/env bash
# Each rewritten test must fail when the behaviour it names is broken on purpose (issue 17).
# Run by hand: tests/mutations.sh (about 109 min on 2 cores, 177 lines); each line must say "caught". A line that says
# "stale" names a mutation whose code line is gone: rewrite it against the code as it is now.
cd "$(dirname "$0")/.."
run() {  # name, file, python-replace old, new, test ids...
  local name=$1 file=$2 old=$3 new=$4; shift 4
  cp "$file" ${TMPDIR:-/tmp}/mut.bak
  if ! python3 - "$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
if s.count(old) != 1:
    sys.exit(1)
open(p, "w").write(s.replace(old, new))
PY
  then
    echo "MUTATION $name: stale (the line is not in $file once)"
    return
  fi
  if .venv/bin/python -m pytest -q -x -p no:cacheprovider "$@" > ${TMPDIR:-/tmp}/mut-$name.log 2>&1; then
    echo "MUTATION $name: tests still PASS (bad)"
  else
    echo "MUTATION $name: caught ($(grep -m1 -E '^E ' ${TMPDIR:-/tmp}/mut-$name.log | cut -c1-150))"
  fi
  cp ${TMPDIR:-/tmp}/mut.bak "$file"
}
run no_quantisation bipo_lens/models.py "            w.copy_((w / scale).round().clamp(-levels, levels) * scale)" "            pass" tests/test_analysis.py::test_quantised_sibling_and_direct_transfer
run retained_self bipo_lens/analysis/transfer.py '"retained": moved_range / native_range if native_range' '"retained": moved_range / moved_range if native_range' tests/test_analysis.py::test_quantised_sibling_and_direct_transfer
run map_ignored bipo_lens/analysis/transfer.py "mapped, how = vector.vector.float() @ linear_map.weight, linear_map.method" "mapped, how = -(vector.vector.float() @ linear_map.weight), linear_map.method" tests/test_analysis.py::test_cross_model_map_to_gemma
run compose_drops_others bipo_lens/analysis/composition.py "scorers[name].margins([(sets[seed][n], w) for n, w in assignment.items()])" "scorers[name].margins([(sets[seed][name], assignment[name])])" tests/test_analysis.py::test_composition_adds_two_different_vectors
run eval_one_vector bipo_lens/evaluation/evaluate.py "            lp = scorers.logps([(vector, m)])" "            lp = scorers.logps([(next(iter(vectors.values())), m)])" tests/test_evaluation.py::test_evaluate_moves_with_the_multiplier
run ab_letters_swapped bipo_lens/evaluation/evaluate.py "ab_items = torch.sigmoid(ab_lp[:, 0] - ab_lp[:, 1])" "ab_items = torch.sigmoid(ab_lp[:, 1] - ab_lp[:, 0])" tests/test_evaluation.py::test_eval_cli_writes_json_and_plot
run no_terminator bipo_lens/tokens.py 'terminator = end_of_turn_id(model) if response_format == "eot" else None' 'terminator = None' tests/test_response_format.py
run no_mismatch_warning bipo_lens/vectors.py 'if self.model_id not in ("unknown", model_info.model_id) and' 'if False and' tests/test_vectors.py::test_vector_of_another_model_with_the_same_width_warns_once
run q4_0_written_as_q8_0 bipo_lens/models.py "            round_trip(module.weight, kind)" "            round_trip(module.weight, GGMLQuantizationType.Q8_0)" tests/test_analysis.py::test_llama_cpp_quantised_sibling_is_on_the_gguf_grid_and_still_answers
run bipo_minus_v_unused bipo_lens/training/bipo.py "    policy = scorer.logps(share, vector, d)" "    policy = scorer.logps(share, vector, 1.0)" tests/test_training.py::test_training_learns_the_behaviour tests/test_training.py::test_fast_and_naive_paths_give_the_same_vector
run gradients_not_summed bipo_lens/distributed.py "        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)" "        pass" tests/test_scale.py::test_two_ranks_under_torchrun_give_the_one_process_vector
run d_differs_per_rank bipo_lens/training/bipo.py "    d = rng.choice((-1.0, 1.0))" "    d = rng.choice((-1.0, 1.0)) * (-1.0) ** rank" tests/test_scale.py::test_two_ranks_under_torchrun_give_the_one_process_vector
run rerun_keeps_readers bipo_lens/figure_work.py "        if chosen & set(READS.get(name, {})):" "        if False:" tests/test_cli.py::test_figures_rerun_computes_every_stage_that_reads_a_rerun_stage
run caa_sign_flipped bipo_lens/activations.py "    return acts[0::2] - acts[1::2]" "    return acts[1::2] - acts[0::2]" tests/test_training.py::test_caa_is_the_mean_response_activation_difference
run steering_ignores_sign bipo_lens/steering.py "    return resid + scale * vector" "    return resid + scale.abs() * vector" tests/test_steering.py::test_row_multipliers_steer_each_row_its_own_way
run resume_forgets_optimiser bipo_lens/training/bipo.py "        optimizer.load_state_dict(state.optimizer)" "        pass" tests/test_reliability.py::test_interrupt_kill_and_resume_give_the_uninterrupted_vector
run export_layer_shifted bipo_lens/interop.py 'writer.add_tensor(f"direction.{vector.layer}"' 'writer.add_tensor(f"direction.{vector.layer + 1}"' tests/test_interop.py::test_export_then_import_gives_back_every_bit_and_the_provenance
run server_drops_sign bipo_lens/serve.py 'terms.append((vectors[name], _number(item, "multiplier", 1.0, -MAX_MULTIPLIER, MAX_MULTIPLIER)))' 'terms.append((vectors[name], abs(_number(item, "multiplier", 1.0, -MAX_MULTIPLIER, MAX_MULTIPLIER))))' tests/test_serve.py::test_models_and_steered_chat_through_the_openai_client
run beta_ignored bipo_lens/training/bipo.py "    return -F.logsigmoid(d * beta * (log_ratios[:, 0] - log_ratios[:, 1]))" "    return -F.logsigmoid(d * (log_ratios[:, 0] - log_ratios[:, 1]))" tests/test_training.py::test_the_objective_and_the_optimiser_are_the_paper_s
run no_weight_decay bipo_lens/training/bipo.py "weight_decay=config.weight_decay)" "weight_decay=0.0)" tests/test_training.py::test_the_objective_and_the_optimiser_are_the_paper_s
run split_leaks bipo_lens/pairs.py "    train = [p for p in pairs if p.question not in test_questions]" "    train = list(pairs)" tests/test_pairs.py
run layer_check_off_by_one bipo_lens/model_names.py "        if not 0 <= layer < self.n_layers:" "        if not 0 <= layer <= self.n_layers:" tests/test_models.py::test_layer_out_of_range_is_a_clear_error
run cache_trusts_any_stamp bipo_lens/models.py "            if stamps.get(name) == [stat.st_size, stat.st_mtime_ns]:" "            if name in stamps:" tests/test_models.py::test_corrupt_cache_entry_is_detected_and_rebuilt
run decode_unsteered bipo_lens/steering.py "        for vector, multiplier in self.terms:" "        for vector, multiplier in (self.terms if resid.shape[1] > 1 else []):" tests/test_generation.py::test_cached_generation_equals_full_recompute
run preference_accuracy_flipped bipo_lens/evaluation/evaluate.py '"preference_accuracy": float((margin > 0).float().mean())' '"preference_accuracy": float((margin < 0).float().mean())' tests/test_evaluation.py::test_accuracy_counts_pairs_and_mc1_counts_questions_right_on_every_pair
run mc1_any_wrong_answer bipo_lens/evaluation/evaluate.py "mc1 = [float(bool((margin[g] > 0).all())) for g in groups.values()]" "mc1 = [float(bool((margin[g] > 0).any())) for g in groups.values()]" tests/test_evaluation.py::test_accuracy_counts_pairs_and_mc1_counts_questions_right_on_every_pair
run last_only_shifted bipo_lens/steering.py "            return (i == last).float()" "            return (i == last - 1).float()" tests/test_steering.py::test_token_strategy_weights_are_as_documented
run checkpoint_of_another_run bipo_lens/training/checkpoint.py "    if state.identity != identity:" "    if False:" tests/test_training.py::test_early_stopping_keeps_the_best_epoch_and_resumes_to_it
run checkpoint_resumed_unasked bipo_lens/training/bipo.py "        if state is not None and not resume:" "        if False:" tests/test_training.py::test_early_stopping_keeps_the_best_epoch_and_resumes_to_it
run chat_never_steers bipo_lens/chat.py "steering = [(self.vector, self.multiplier)] if steered and self.vector is not None else []" "steering = []" tests/test_cli.py::test_chat_streams_a_steered_conversation_and_takes_commands
run stream_drops_sign bipo_lens/generation.py "    terms = [(v.layer, v.vector, float(m)) for v, m in steering if m != 0]" "    terms = [(v.layer, v.vector, abs(float(m))) for v, m in steering if m != 0]" tests/test_cli.py::test_chat_streams_a_steered_conversation_and_takes_commands
run top_p_ignored bipo_lens/generation.py "top_p=sampling.top_p if sample else None" "top_p=None" tests/test_generation.py::test_sampling_is_reproducible_per_seed
run temperature_ignored bipo_lens/generation.py "temperature=sampling.temperature if sample else None" "temperature=1.0 if sample else None" tests/test_generation.py::test_sampling_is_reproducible_per_seed
run packed_pairs_see_the_other_side bipo_lens/tokens.py "            allowed[row, 0, start + p + t : end, start + p : start + p + t] = False" "            pass" tests/test_paths.py::test_packed_rows_out_of_pair_order_equal_the_naive_loop
run packed_positions_run_on bipo_lens/tokens.py "torch.arange(p, p + o)])" "torch.arange(p + t, p + t + o)])" tests/test_paths.py::test_packed_rows_out_of_pair_order_equal_the_naive_loop
run import_layer_shifted bipo_lens/interop.py "        layer = int(index)" "        layer = int(index) - 1" tests/test_interop.py::test_a_foreign_control_vector_imports_against_the_model
run lens_suppressed_sign bipo_lens/analysis/similarity.py "round(-v, 3)" "round(v, 3)" tests/test_analysis.py::test_cosine_and_logit_lens
run batcher_merges_settings bipo_lens/serve.py "        return self.max_tokens, self.sampling, self.stop" "        return ()" tests/test_serve.py::test_requests_that_arrive_together_with_other_settings_each_keep_their_own
run second_press_held bipo_lens/training/checkpoint.py "            raise KeyboardInterrupt" "            pass" tests/test_reliability.py::test_an_interrupt_just_after_the_optimiser_step_resumes_to_the_same_vector
run flops_overcounted bipo_lens/bench.py "    return 2 * forward" "    return 3 * forward" tests/test_scale.py::test_the_benchmark_s_flop_count_is_what_torch_counts_in_the_step
run activation_margin_backwards bipo_lens/training/bipo.py "F.relu(config.margin - deltas[batch[rank::world]] @ vector)" "F.relu(config.margin + deltas[batch[rank::world]] @ vector)" tests/test_training.py::test_activation_margin_variant_uses_its_defaults_and_learns
run sweep_reuses_other_settings bipo_lens/analysis/layers.py 'if done is not None and done.get("key") == key:' 'if done is not None:' tests/test_analysis.py::test_layer_sweep_writes_one_result_per_layer_and_resumes
run record_misses_new_files bipo_lens/records.py "changed = [line for line in (tracked + untracked).splitlines() if line.strip()]" "changed = [line for line in tracked.splitlines() if line.strip()]" tests/test_vectors.py::test_run_records_name_every_changed_file_whole
run reps_sub_sides_swapped bipo_lens/training/reps.py "add(matching, not_matching), subtract(not_matching, matching)" "add(matching, not_matching), subtract(matching, not_matching)" tests/test_training.py::test_reps_first_loss_is_the_authors_two_terms_computed_by_hand
run reps_steers_the_first_position bipo_lens/training/reps.py "        weights[:, 0] = 0" "        pass" tests/test_training.py::test_reps_first_loss_is_the_authors_two_terms_computed_by_hand
run reps_length_without_prompt bipo_lens/training/reps.py "lengths = torch.tensor([float(len(s.ids)) for s in scorer.sequences], device=device)" "lengths = torch.tensor([float(s.response_len) for s in scorer.sequences], device=device)" tests/test_training.py::test_reps_first_loss_is_the_authors_two_terms_computed_by_hand
run per_token_lengths_swapped bipo_lens/evaluation/evaluate.py "per_token = lp[:, 0] / scorers.lengths[:, 0] - lp[:, 1] / scorers.lengths[:, 1]" "per_token = lp[:, 0] / scorers.lengths[:, 1] - lp[:, 1] / scorers.lengths[:, 0]" tests/test_evaluation.py::test_accuracy_counts_pairs_and_mc1_counts_questions_right_on_every_pair
run scorer_misses_in_place_change bipo_lens/evaluation/evaluate.py "key = (id(terms[0][0]), terms[0][0].vector._version, terms[0][1])" "key = (id(terms[0][0]), 0, terms[0][1])" tests/test_evaluation.py::test_a_shared_scorer_scores_each_vector_once_and_must_score_the_same_pairs
run baselines_not_rescaled bipo_lens/analysis/baselines.py "equal = own if name == reference else scorer.pair_ranges(scaled(vector, ref.norm), multiplier).tolist()" "equal = own if name == reference else scorer.pair_ranges(vector, multiplier).tolist()" tests/test_analysis.py::test_methods_compared_at_their_own_norm_and_at_the_references
run every_rank_scores_the_batch bipo_lens/training/bipo.py "    share = batch[rank::world]" "    share = batch" tests/test_scale.py::test_two_ranks_under_torchrun_give_the_one_process_vector
run train_cli_drops_beta bipo_lens/cli.py "lr=args.lr, beta=args.beta," "lr=args.lr, beta=None," tests/test_cli.py::test_info_describes_the_vector
run train_cli_drops_batch_size bipo_lens/cli.py "batch_size=args.batch_size, weight_decay=args.weight_decay, margin=args.margin," "batch_size=None, weight_decay=args.weight_decay, margin=args.margin," tests/test_cli.py::test_info_describes_the_vector
run generate_cli_drops_strength bipo_lens/cli.py "multipliers = [m * args.strength for m in args.multipliers]" "multipliers = list(args.multipliers)" tests/test_cli.py::test_generate_s_flags_reach_the_engine
run generate_cli_drops_strategy bipo_lens/cli.py "answers = generate(model, prompt, vectors, multipliers, strategy, args.max_new_tokens, args.system_prompt)" "answers = generate(model, prompt, vectors, multipliers, TokenStrategy(), args.max_new_tokens, args.system_prompt)" tests/test_cli.py::test_generate_s_flags_reach_the_engine
run generate_cli_drops_system_prompt bipo_lens/cli.py "answers = generate(model, prompt, vectors, multipliers, strategy, args.max_new_tokens, args.system_prompt)" "answers = generate(model, prompt, vectors, multipliers, strategy, args.max_new_tokens, None)" tests/test_cli.py::test_generate_s_flags_reach_the_engine
run eval_cli_scores_the_training_side bipo_lens/cli.py "        pairs = split_pairs(pairs, args.test_fraction, args.seed)[1]" "        pairs = split_pairs(pairs, args.test_fraction, args.seed)[0]" tests/test_evaluation.py::test_eval_cli_evaluates_the_held_out_side_with_the_sampling_it_was_given
run eval_cli_drops_temperature bipo_lens/cli.py "sampling=Sampling(args.temperature, seed=args.seed) if args.seeds > 1 else GREEDY" "sampling=Sampling(0.7, seed=args.seed) if args.seeds > 1 else GREEDY" tests/test_evaluation.py::test_eval_cli_evaluates_the_held_out_side_with_the_sampling_it_was_given
run eval_cli_drops_seeds bipo_lens/cli.py "response_format=args.response_format, samples=args.seeds," "response_format=args.response_format, samples=1," tests/test_evaluation.py::test_eval_cli_evaluates_the_held_out_side_with_the_sampling_it_was_given
run train_cli_trains_on_the_held_out_side bipo_lens/cli.py "split_pairs(pairs, args.test_fraction, args.seed) if args.test_fraction else (pairs, [])" "split_pairs(pairs, args.test_fraction, args.seed)[::-1] if args.test_fraction else (pairs, [])" tests/test_cli.py::test_info_describes_the_vector
run sweep_cli_drops_epochs bipo_lens/cli.py "config = SweepConfig(epochs=args.epochs, lr=args.lr, max_train_pairs=args.max_train_pairs," "config = SweepConfig(epochs=4, lr=args.lr, max_train_pairs=args.max_train_pairs," tests/test_cli.py::test_analysis_commands
run server_drops_n bipo_lens/serve.py '        n = _number(body, "n", 1, 1, 16, int)' '        n = 1' tests/test_serve.py::test_each_request_s_settings_shape_its_answer
run server_drops_temperature bipo_lens/serve.py 'Sampling(_number(body, "temperature", 0.0, 0.0, 2.0),' 'Sampling(0.0 * _number(body, "temperature", 0.0, 0.0, 2.0),' tests/test_serve.py::test_each_request_s_settings_shape_its_answer
run server_drops_seed bipo_lens/serve.py '_number(body, "seed", 0, -(2**62), 2**62, int))' '0)' tests/test_serve.py::test_each_request_s_settings_shape_its_answer
run server_ignores_system_message bipo_lens/serve.py 'system = messages[0]["content"] if messages[0]["role"] == "system" else DEFAULT_SYSTEM_PROMPT' 'system = DEFAULT_SYSTEM_PROMPT' tests/test_serve.py::test_each_request_s_settings_shape_its_answer
run server_drops_max_completion_tokens bipo_lens/serve.py 'max_tokens = _number(body, "max_completion_tokens", max_tokens, 1, MAX_TOKENS_LIMIT, int)' 'max_tokens = max_tokens' tests/test_serve.py::test_each_request_s_settings_shape_its_answer
run server_always_stop bipo_lens/serve.py 'finish = lambda row: "length" if not row.stopped and len(row.tokens) >= max_tokens else "stop"' 'finish = lambda row: "stop"' tests/test_serve.py::test_each_request_s_settings_shape_its_answer
git status --short bipo_lens
run chat_cli_drops_multiplier bipo_lens/cli.py "ChatSession(model, vectors[0] if vectors else None, args.multiplier," "ChatSession(model, vectors[0] if vectors else None, 1.0," tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run chat_cli_drops_system_prompt bipo_lens/cli.py "system_prompt=DEFAULT_SYSTEM_PROMPT if args.system_prompt is None else args.system_prompt," "system_prompt=DEFAULT_SYSTEM_PROMPT," tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run chat_cli_drops_temperature bipo_lens/cli.py "sampling = Sampling(args.temperature, args.top_p, args.seed)" "sampling = Sampling(0.0, args.top_p, args.seed)" tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run chat_cli_drops_top_p bipo_lens/cli.py "sampling = Sampling(args.temperature, args.top_p, args.seed)" "sampling = Sampling(args.temperature, 1.0, args.seed)" tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run chat_cli_drops_seed bipo_lens/cli.py "sampling = Sampling(args.temperature, args.top_p, args.seed)" "sampling = Sampling(args.temperature, args.top_p, 0)" tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run chat_cli_drops_max_new_tokens bipo_lens/cli.py "max_new_tokens=args.max_new_tokens, sampling=sampling).run()" "max_new_tokens=256, sampling=sampling).run()" tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run chat_forgets_history bipo_lens/chat.py "            reply = self.answer(self.history, self.enabled, out)" "            reply = self.answer(self.history[-1:], self.enabled, out)" tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run chat_reset_keeps_history bipo_lens/chat.py "            self.history.clear()" "            pass" tests/test_cli.py::test_chat_s_flags_and_history_reach_the_engine
run similarity_cli_drops_top_k bipo_lens/cli.py "            lens = logit_lens(model, vector, args.top_k)" "            lens = logit_lens(model, vector, 10)" tests/test_cli.py::test_analysis_commands
run transfer_cli_drops_max_test_pairs bipo_lens/cli.py "        test = load_pairs(args.test_data)[: args.max_test_pairs]" "        test = load_pairs(args.test_data)[:48]" tests/test_cli.py::test_analysis_commands
run transfer_cli_drops_fit_data bipo_lens/cli.py "        fit_files = args.fit_data or builtin_pair_sets()" "        fit_files = builtin_pair_sets()" tests/test_cli.py::test_analysis_commands
run compose_cli_drops_weights bipo_lens/cli.py "    result = compose(model, dict(zip(names, vectors)), tests, args.weights, args.multiplier, seeds=further)" "    result = compose(model, dict(zip(names, vectors)), tests, [-2.0, -1.0, 0.0, 1.0, 2.0], args.multiplier, seeds=further)" tests/test_cli.py::test_analysis_commands
run compose_cli_drops_max_test_pairs bipo_lens/cli.py "    tests = {n: load_pairs(d)[: args.max_test_pairs] for n, d in zip(names, args.data)}" "    tests = {n: load_pairs(d)[:32] for n, d in zip(names, args.data)}" tests/test_cli.py::test_analysis_commands
run sweep_cli_drops_lr bipo_lens/cli.py "    config = SweepConfig(epochs=args.epochs, lr=args.lr," "    config = SweepConfig(epochs=args.epochs, lr=5e-3," tests/test_cli.py::test_analysis_commands
run sweep_cli_drops_multiplier bipo_lens/cli.py "max_test_pairs=args.max_test_pairs, multiplier=args.multiplier," "max_test_pairs=args.max_test_pairs, multiplier=1.0," tests/test_cli.py::test_analysis_commands
run transfer_cli_drops_multiplier bipo_lens/cli.py "found = retained_efficacy(target, moved, native if len(native) > 1 else native[0], test, args.multiplier)" "found = retained_efficacy(target, moved, native if len(native) > 1 else native[0], test, 1.0)" tests/test_cli.py::test_analysis_commands
run transfer_cli_drops_map bipo_lens/cli.py "maps = [fit_linear_map(*acts, args.map, seed=k, bootstrap=True) for k in range(len(seeds))]" "maps = [fit_linear_map(*acts, \"lstsq\", seed=k, bootstrap=True) for k in range(len(seeds))]" tests/test_cli.py::test_analysis_commands
run transfer_cli_drops_target_layer bipo_lens/cli.py "    layer = args.target_layer" "    layer = None" tests/test_cli.py::test_analysis_commands
run compose_cli_drops_multiplier bipo_lens/cli.py "    result = compose(model, dict(zip(names, vectors)), tests, args.weights, args.multiplier, seeds=further)" "    result = compose(model, dict(zip(names, vectors)), tests, args.weights, 1.0, seeds=further)" tests/test_cli.py::test_analysis_commands
run sweep_cli_drops_seed bipo_lens/cli.py "generations=args.generations, seed=args.seed, seeds=args.seeds)" "generations=args.generations, seed=0, seeds=args.seeds)" tests/test_cli.py::test_analysis_commands
run demo_drops_epochs bipo_lens/demo.py "test_pairs=test_pairs, epochs=args.epochs, lr=args.lr)" "test_pairs=test_pairs, epochs=10, lr=args.lr)" tests/test_generation.py::test_demo_answers_are_language_and_move_with_the_multiplier
run demo_drops_max_pairs bipo_lens/demo.py "        train_pairs = train_pairs[: args.max_pairs]" "        pass" tests/test_generation.py::test_demo_answers_are_language_and_move_with_the_multiplier
run demo_drops_max_new_tokens bipo_lens/demo.py "generate_grid(model, questions, [vector], MULTIPLIERS, max_new_tokens=args.max_new_tokens)" "generate_grid(model, questions, [vector], MULTIPLIERS, max_new_tokens=40)" tests/test_generation.py::test_demo_answers_are_language_and_move_with_the_multiplier
run eval_cli_drops_max_new_tokens bipo_lens/cli.py "                      max_new_tokens=args.max_new_tokens, response_format=args.response_format, samples=args.seeds," "                      max_new_tokens=48, response_format=args.response_format, samples=args.seeds," tests/test_evaluation.py::test_eval_cli_evaluates_the_held_out_side_with_the_sampling_it_was_given
run demo_drops_lr bipo_lens/demo.py "test_pairs=test_pairs, epochs=args.epochs, lr=args.lr)" "test_pairs=test_pairs, epochs=args.epochs, lr=5e-3)" tests/test_generation.py::test_demo_answers_are_language_and_move_with_the_multiplier
run demo_bipo_drops_layer bipo_lens/demo.py "    bipo = train_bipo(model, train_pairs, args.layer," "    bipo = train_bipo(model, train_pairs, 15," tests/test_generation.py::test_demo_answers_are_language_and_move_with_the_multiplier
run demo_caa_drops_layer bipo_lens/demo.py "    caa = train_caa(model, train_pairs, args.layer)" "    caa = train_caa(model, train_pairs, 15)" tests/test_generation.py::test_demo_answers_are_language_and_move_with_the_multiplier
run eval_cli_drops_response_format bipo_lens/cli.py "max_new_tokens=args.max_new_tokens, response_format=args.response_format, samples=args.seeds," "max_new_tokens=args.max_new_tokens, response_format=\"eot\", samples=args.seeds," tests/test_evaluation.py::test_eval_cli_evaluates_the_held_out_side_with_the_sampling_it_was_given
run export_cli_drops_model_hint bipo_lens/cli.py "    out = export_gguf(vectors, args.out, hint=args.model_hint, overwrite=args.overwrite)" "    out = export_gguf(vectors, args.out, hint=None, overwrite=args.overwrite)" tests/test_interop.py::test_export_then_import_gives_back_every_bit_and_the_provenance
run bipo_train_drops_epochs bipo_lens/compat.py "                 *_optional(\"--model\", args.model_name), *_optional(\"--epochs\", args.epochs)," "                 *_optional(\"--model\", args.model_name)," tests/test_compat.py::test_bipo_model_card_lines_and_snippet
run tasks_drops_beta bipo_lens/compat.py "*_optional(\"--lr\", args.bipo_lr), *_optional(\"--beta\", args.bipo_beta)," "*_optional(\"--lr\", args.bipo_lr)," tests/test_compat.py::test_wisent_guard_training_lines
run tasks_drops_batch_size bipo_lens/compat.py "*_optional(\"--batch-size\", args.bipo_batch_size), *_optional(\"--margin\", args.bipo_margin)," "*_optional(\"--margin\", args.bipo_margin)," tests/test_compat.py::test_wisent_guard_training_lines
run tasks_generation_drops_strategy bipo_lens/compat.py "\"--multipliers\", str(args.steering_strength), \"--token-strategy\", strategy," "\"--multipliers\", str(args.steering_strength), \"--token-strategy\", \"all\"," tests/test_compat.py::test_wisent_guard_caa_and_the_generation_line
run tasks_generation_drops_max_new_tokens bipo_lens/compat.py "\"--max-strength\", args.token_max_strength, \"--max-new-tokens\", args.max_new_tokens," "\"--max-strength\", args.token_max_strength," tests/test_compat.py::test_wisent_guard_caa_and_the_generation_line
run interval_tail_halved bipo_lens/evaluation/intervals.py 'tail = (1 - level) / 2' 'tail = (1 - level)' tests/test_evaluation.py::test_bootstrap_interval_is_paired_and_covers_the_mean tests/test_evaluation.py::test_crossed_interval_resamples_questions_and_samples tests/test_evaluation.py::test_crossed_ratio_interval_keeps_pairs_and_seeds_together
run crossed_one_sample bipo_lens/evaluation/intervals.py 'rows = torch.randint(n_samples, (resamples, n_samples), generator=generator)' 'rows = torch.zeros((resamples, n_samples), dtype=torch.long)' tests/test_evaluation.py::test_crossed_interval_resamples_questions_and_samples tests/test_evaluation.py::test_crossed_ratio_interval_keeps_pairs_and_seeds_together
run judge_centroids_swapped bipo_lens/evaluation/judge.py 'return (a @ c_t - a @ c_o).tolist()' 'return (a @ c_o - a @ c_t).tolist()' tests/test_evaluation.py::test_embedding_judge_separates_held_out_references tests/test_evaluation.py::test_probe_judge_is_validated_on_held_out_folds_and_scores_unseen_answers tests/test_evaluation.py::test_evaluate_moves_with_the_multiplier
run judge_loo_keeps_self bipo_lens/evaluation/judge.py 'c_t = torch.nn.functional.normalize(t.sum(0) - t[i], dim=0)' 'c_t = torch.nn.functional.normalize(t.sum(0), dim=0)' tests/test_evaluation.py::test_embedding_judge_separates_held_out_references tests/test_evaluation.py::test_probe_judge_is_validated_on_held_out_folds_and_scores_unseen_answers
run probe_sign_flipped bipo_lens/evaluation/judge.py 'return (2 * torch.sigmoid(self.embed(answers) @ self.w + self.b) - 1).tolist()' 'return (1 - 2 * torch.sigmoid(self.embed(answers) @ self.w + self.b)).tolist()' tests/test_evaluation.py::test_probe_judge_is_validated_on_held_out_folds_and_scores_unseen_answers
run perplexity_inverted bipo_lens/evaluation/coherence.py 'out[index] = math.exp(-float(sums[row])' 'out[index] = math.exp(float(sums[row])' tests/test_evaluation.py::test_fluency_is_measured_on_the_steered_answers tests/test_evaluation.py::test_eval_cli_writes_json_and_plot tests/test_analysis.py::test_methods_compared_at_equal_fluency
run perplexity_with_the_prompt bipo_lens/evaluation/coherence.py 'sequences.append(Sequence(tuple(prompt + response), len(prompt)))' 'sequences.append(Sequence(tuple(prompt + response), 1))' tests/test_evaluation.py::test_fluency_is_measured_on_the_steered_answers tests/test_evaluation.py::test_eval_cli_writes_json_and_plot tests/test_analysis.py::test_methods_compared_at_equal_fluency
run pairs_aliases_ignored bipo_lens/pairs.py 'found = next((a for a in aliases if a in row), None)' 'found = None' tests/test_pairs.py
run anthropic_last_listed bipo_lens/pairs.py 'not_matching = not_matching[0] if not_matching else None' 'not_matching = not_matching[-1] if not_matching else None' tests/test_pairs.py
run probe_folds_leak bipo_lens/evaluation/judge.py 'w, b = self._fit_direction(t[~held], o[~held])' 'w, b = self._fit_direction(t, o)' tests/test_evaluation.py::test_a_judge_validated_on_pairs_with_no_behaviour_reads_chance
run openai_scale_shifted bipo_lens/evaluation/judge.py 'return (int(found.group()) - 2.5) / 1.5 if found' 'return (int(found.group()) - 1) / 3 if found' tests/test_evaluation.py::test_an_endpoint_s_rating_is_its_first_digit_on_the_judges_scale
run openai_rubric_ignored bipo_lens/evaluation/judge.py 'self.behaviour = RUBRICS.get(behaviour, behaviour)' 'self.behaviour = RUBRICS["power-seeking"]' tests/test_serve.py::test_eval_judges_through_an_endpoint_with_the_behavior_it_is_given
run eval_cli_drops_behavior bipo_lens/cli.py 'judge = make_judge(args.judge, args.behavior)' 'judge = make_judge(args.judge)' tests/test_serve.py::test_eval_judges_through_an_endpoint_with_the_behavior_it_is_given
run serve_cli_drops_host bipo_lens/cli.py 'serve(model, named, args.host, args.port)' 'serve(model, named, "127.0.0.1", args.port)' tests/test_serve.py::test_models_and_steered_chat_through_the_openai_client
run generate_cli_drops_decay_rate bipo_lens/cli.py 'TokenStrategy(args.token_strategy, args.decay_rate,' 'TokenStrategy(args.token_strategy, 0.5,' tests/test_cli.py::test_generate_s_flags_reach_the_engine
run generate_cli_drops_min_strength bipo_lens/cli.py 'args.decay_rate, args.min_strength, args.max_strength)' 'args.decay_rate, 0.1, args.max_strength)' tests/test_cli.py::test_generate_s_flags_reach_the_engine
run generate_cli_drops_max_strength bipo_lens/cli.py 'args.decay_rate, args.min_strength, args.max_strength)' 'args.decay_rate, args.min_strength, 1.0)' tests/test_cli.py::test_generate_s_flags_reach_the_engine
run train_cli_drops_patience bipo_lens/cli.py 'response_format=args.response_format, patience=args.patience,' 'response_format=args.response_format, patience=None,' tests/test_cli.py::test_train_s_stopping_and_position_flags_reach_the_trainer
run train_cli_drops_positions bipo_lens/cli.py 'args.positions or "response_mean")' '"response_mean")' tests/test_cli.py::test_train_s_stopping_and_position_flags_reach_the_trainer
run sweep_cli_drops_generations bipo_lens/cli.py 'generations=args.generations, seed=args.seed, seeds=args.seeds)' 'generations=0, seed=args.seed, seeds=args.seeds)' tests/test_cli.py::test_analysis_commands
run sweep_cli_judges_nothing bipo_lens/cli.py 'judge = EmbeddingJudge() if args.generations else None' 'judge = None' tests/test_cli.py::test_analysis_commands
run bipo_train_drops_lr bipo_lens/compat.py '*_optional("--batch-size", args.batch_size), *_optional("--lr", args.lr),' '*_optional("--batch-size", args.batch_size),' tests/test_compat.py::test_bipo_card_scripts_other_flags_reach_the_run
run bipo_train_drops_beta bipo_lens/compat.py '*_optional("--beta", args.beta), *_optional("--max-pairs", args.max_pairs),' '*_optional("--max-pairs", args.max_pairs),' tests/test_compat.py::test_bipo_card_scripts_other_flags_reach_the_run
run bipo_train_drops_batch_size bipo_lens/compat.py '*_optional("--batch-size", args.batch_size), *_optional("--lr", args.lr),' '*_optional("--lr", args.lr),' tests/test_compat.py::test_bipo_card_scripts_other_flags_reach_the_run
run bipo_train_drops_max_pairs bipo_lens/compat.py '*_optional("--beta", args.beta), *_optional("--max-pairs", args.max_pairs),' '*_optional("--beta", args.beta),' tests/test_compat.py::test_bipo_card_scripts_other_flags_reach_the_run
run bipo_train_drops_data_dir bipo_lens/compat.py 'Path(args.data_dir) if args.data_dir else shared_data_dir()' 'shared_data_dir()' tests/test_compat.py::test_bipo_card_scripts_other_flags_reach_the_run
run bipo_inference_drops_max_new_tokens bipo_lens/compat.py '"--max-new-tokens", args.max_new_tokens, "--device", args.device,' '"--device", args.device,' tests/test_compat.py::test_bipo_card_scripts_other_flags_reach_the_run
run train_cli_drops_max_response_tokens bipo_lens/cli.py 'warmup_steps=args.warmup_steps, max_response_tokens=args.max_response_tokens, seed=args.seed,' 'warmup_steps=args.warmup_steps, max_response_tokens=None, seed=args.seed,' tests/test_cli.py::test_train_s_stopping_and_position_flags_reach_the_trainer
run procrustes_full_svd bipo_lens/analysis/transfer.py 'return (s.sum() / xs.pow(2).sum()) * (u[:, seen] @ vh[seen])' 'return (s.sum() / xs.pow(2).sum()) * (u @ vh)' tests/test_analysis.py::test_linear_maps_recover_a_known_map tests/test_cli.py::test_analysis_commands
run transfer_span_unsaid bipo_lens/cli.py '        if max(unseen) > UNSEEN_WARNING:' '        if False:' tests/test_cli.py::test_analysis_commands
run unseen_share_in_span bipo_lens/analysis/transfer.py 'return max(0.0, 1.0 - float((self.seen.T @ v).pow(2).sum() / v.pow(2).sum()))' 'return 0.0' tests/test_analysis.py::test_linear_maps_recover_a_known_map tests/test_cli.py::test_analysis_commands
run figures_data_dir_falls_back bipo_lens/figure_work.py '    if data_dir:
        raise BipoLensError(f"--data-dir' '    if False:
        raise BipoLensError(f"--data-dir' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line tests/test_cli.py::test_figures_read_power_seeking_pairs_from_the_data_dir_named
run figures_repeat_deletes_work bipo_lens/figure_work.py '        if not overwrite:' '        if False:' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run figures_overwrite_deletes_anything bipo_lens/figure_work.py '        if not is_work_dir(work):' '        if False:' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run help_without_defaults bipo_lens/cli.py '    _say_defaults(parser)
    return parser' '    return parser' tests/test_cli.py::test_help_states_the_defaults_and_the_trainers_and_strategies_as_they_are
run figures_clears_any_pngs bipo_lens/figures.py 'for stale in out.glob("*.png") if figures_before else ():' 'for stale in out.glob("*.png"):' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run figures_mark_alone_is_a_run bipo_lens/figure_work.py 'any(entry.name != WORK_MARK for entry in directory.iterdir())' 'any(directory.iterdir())' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run ridge_fixed bipo_lens/analysis/transfer.py '        ridge = _choose_ridge(xs[train], xt[train], train // 2, seed)' '        ridge = 1e-2' tests/test_analysis.py::test_lstsq_chooses_its_ridge_by_cross_validation_over_whole_texts
run ridge_folds_split_texts bipo_lens/analysis/transfer.py 'ridge = _choose_ridge(xs[train], xt[train], train // 2, seed)' 'ridge = _choose_ridge(xs[train], xt[train], torch.arange(len(train)), seed)' tests/test_analysis.py::test_lstsq_chooses_its_ridge_by_cross_validation_over_whole_texts
run ridge_zero_accepted bipo_lens/cli.py '    if args.ridge is not None and not args.ridge > 0:' '    if False:' tests/test_cli.py::test_a_wrong_layer_or_a_vector_for_another_model_is_said_before_loading
run rerun_transfer_reruns_claims bipo_lens/figure_work.py '    "claims": {"layers": {"sweep": "layer sweep"}},' '    "claims": {"layers": {"sweep": "layer sweep"}, "transfer": {"rows": "transfer rows"}},' tests/test_cli.py::test_figures_rerun_computes_every_stage_that_reads_a_rerun_stage
run figures_ridge_unsaid bipo_lens/figure_readme.py '    return f"{row['"'"'map'"'"']} (ridge' '    return row["map"] if 1 else f"{row['"'"'map'"'"']} (ridge' tests/test_cli.py::test_figures_redraw_gives_the_committed_readme_word_for_word
run transfer_ridge_unrecorded_and_unsaid bipo_lens/analysis/transfer.py '"transfer": how, **ridge},' '"transfer": how},' tests/test_cli.py::test_analysis_commands
run transfer_ridge_unprinted bipo_lens/cli.py '        if args.map == "lstsq":
            print(f"ridge:' '        if False:
            print(f"ridge:' tests/test_cli.py::test_analysis_commands
run device_spelt_after_start bipo_lens/cli.py '            check_device_name(args.device)  # before' '            pass  # before' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run figures_checks_after_imports bipo_lens/cli.py '    check_request(args.work_dir, args.data_dir,' '    0 and check_request(args.work_dir, args.data_dir,' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run stage_file_unread_before_start bipo_lens/figure_work.py '            if name not in stages and (work / f"stage_{name}.json").is_file():' '            if False:' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run stage_file_error_a_traceback bipo_lens/figure_work.py '    except (OSError, ValueError) as error:
        raise BipoLensError(f"{path} is not a stage' '    except ZeroDivisionError as error:
        raise BipoLensError(f"{path} is not a stage' tests/test_cli.py::test_analysis_commands_reject_bad_input_in_one_line
run reps_cli_drops_epochs bipo_lens/cli.py '            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
            max_response_tokens' '            lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
            max_response_tokens' tests/test_cli.py::test_baseline_methods_and_no_overwrite
run reps_cli_drops_batch_size bipo_lens/cli.py '            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
            max_response_tokens' '            epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
            max_response_tokens' tests/test_cli.py::test_missing_judge_and_unwritable_output_stop_before_any_work
run patience_taken_by_caa bipo_lens/cli.py '    elif args.patience is not None:
        raise BipoLensError(f"--patience is for' '    elif False:
        raise BipoLensError(f"--patience is for' tests/test_cli.py::test_missing_judge_and_unwritable_output_stop_before_any_work
run max_new_tokens_after_loading bipo_lens/cli.py '        if getattr(args, "max_new_tokens", 1) < 1:  # before' '        if False:  # before' tests/test_cli.py::test_missing_judge_and_unwritable_output_stop_before_any_work
run serve_stop_prefix_not_held bipo_lens/serve.py 'held = max((k for s in self.stop_strings' 'held = 0 * max((k for s in self.stop_strings' tests/test_serve.py::test_stop_strings_end_the_answer_before_them_streamed_or_not
run serve_held_text_lost_at_the_end bipo_lens/serve.py 'rest = row.flush()  # text held back' 'rest = ""  # text held back' tests/test_serve.py::test_stop_strings_end_the_answer_before_them_streamed_or_not
run engine_not_told_stop_strings bipo_lens/serve.py 'on_token=on_token, stop_strings=jobs[0].stop)' 'on_token=on_token)' tests/test_serve.py::test_stop_strings_end_the_answer_before_them_streamed_or_not
run engine_keeps_stop_text bipo_lens/generation.py 'cut_at_stop(model.tokenizer.decode(row[:cut], skip_special_tokens=True), stop_strings)' 'model.tokenizer.decode(row[:cut], skip_special_tokens=True)' tests/test_serve.py::test_stop_strings_end_the_answer_before_them_streamed_or_not
run server_ignores_stop bipo_lens/serve.py '    return tuple(dict.fromkeys(stops))' '    return ()' tests/test_serve.py::test_stop_strings_end_the_answer_before_them_streamed_or_not
run server_streams_no_usage bipo_lens/serve.py '                        if include_usage:' '                        if False:' tests/test_serve.py::test_stop_strings_end_the_answer_before_them_streamed_or_not
run server_ignores_unsupported_settings bipo_lens/serve.py '            if value is not None and not any(' '            if False and not any(' tests/test_serve.py::test_settings_the_server_cannot_honour_are_refused_not_ignored
run server_refuses_developer_role bipo_lens/serve.py 'role = "system" if role == "developer" else role' 'role = role' tests/test_serve.py::test_settings_the_server_cannot_honour_are_refused_not_ignored
run server_refuses_text_parts bipo_lens/serve.py '    if isinstance(content, list):' '    if False:' tests/test_serve.py::test_settings_the_server_cannot_honour_are_refused_not_ignored
run scores_shifted_by_one bipo_lens/generation.py '        chosen = logp[:-1].gather(1, input_ids[0, 1:, None])[:, 0].tolist()' '        chosen = logp[1:].gather(1, input_ids[0, 1:, None])[:, 0].tolist()' tests/test_serve.py::test_prompt_log_probabilities_as_evaluation_harnesses_ask_for_them
run scores_unsteered bipo_lens/generation.py '        with steer_raw_layers(model, terms, strategy):
            logp = raw(input_ids=input_ids)' '        with steer_raw_layers(model, [], strategy):
            logp = raw(input_ids=input_ids)' tests/test_serve.py::test_prompt_log_probabilities_as_evaluation_harnesses_ask_for_them
run scoring_echo_drops_prompt bipo_lens/serve.py '"text": (text if echo else "") + answer' '"text": answer' tests/test_serve.py::test_prompt_log_probabilities_as_evaluation_harnesses_ask_for_them
run scoring_token_ids_lose_one bipo_lens/serve.py '            ids.append(list(item))' '            ids.append(list(item)[1:])' tests/test_serve.py::test_prompt_log_probabilities_as_evaluation_harnesses_ask_for_them
run model_name_steers_nothing bipo_lens/serve.py '    terms = model_steering(body.get("model"), vectors, model_id)' '    terms = []' tests/test_serve.py::test_models_and_steered_chat_through_the_openai_client
run unknown_model_name_unsteered bipo_lens/serve.py '    if vector not in vectors:
        served' '    if False:
        served' tests/test_serve.py::test_models_and_steered_chat_through_the_openai_client
run chat_logprobs_unsteered bipo_lens/serve.py '        steering = parse_steering(body, vectors, model_id)
        found = await scored([ids]' '        steering = []
        found = await scored([ids]' tests/test_serve.py::test_chat_logprobs_give_the_answer_token_s_distribution_for_a_b_evaluations
run next_token_rivals_one_place_early bipo_lens/generation.py 'best.values[-1, 0].item(), tops[-1]))' 'best.values[-1, 0].item(), tops[-2]))' tests/test_serve.py::test_chat_logprobs_give_the_answer_token_s_distribution_for_a_b_evaluations
run tokenize_endpoint_drops_a_token bipo_lens/serve.py 'tokens = model.tokenizer(prompt, add_special_tokens=special)["input_ids"]' 'tokens = model.tokenizer(prompt, add_special_tokens=special)["input_ids"][:-1]' tests/test_serve.py::test_prompt_log_probabilities_as_evaluation_harnesses_ask_for_them
run detokenize_endpoint_skips_special_tokens bipo_lens/serve.py 'return {"prompt": model.tokenizer.decode(tokens)}' 'return {"prompt": model.tokenizer.decode(tokens, skip_special_tokens=True)}' tests/test_serve.py::test_prompt_log_probabilities_as_evaluation_harnesses_ask_for_them
run several_prompts_share_rows bipo_lens/serve.py 'on_token_from(p * n), on_done_of(p), stop)' 'on_token_from(0), on_done_of(p), stop)' tests/test_serve.py::test_several_prompts_in_one_completions_request_are_answered_in_one_batch
run several_prompts_answers_reordered bipo_lens/serve.py '        texts = [t for p in range(len(jobs)) for t in answers[p]]' '        texts = [t for p in reversed(range(len(jobs))) for t in answers[p]]' tests/test_serve.py::test_several_prompts_in_one_completions_request_are_answered_in_one_batch
run scores_read_from_the_padding bipo_lens/generation.py '            logp = logits[j, : len(rows[i])].float().log_softmax(-1)' '            logp = logits[j, -len(rows[i]) :].float().log_softmax(-1)' tests/test_serve.py::test_prompt_log_probabilities_as_evaluation_harnesses_ask_for_them
run scoring_ignores_logits_budget bipo_lens/generation.py '(len(chunks[-1]) + 1) * len(rows[i]) * vocabulary > SCORING_LOGITS)' 'False)' tests/test_generation.py::test_scoring_in_padded_batches_reads_as_one_row_at_a_time
run scoring_rows_out_of_order bipo_lens/generation.py '            scored[i] = ScoredTokens(' '            scored[order.index(i) if i else i] = ScoredTokens(' tests/test_generation.py::test_scoring_in_padded_batches_reads_as_one_row_at_a_time
run judge_loses_the_endpoint_s_reason bipo_lens/evaluation/judge.py '                reason = json.loads(e.read())["error"]["message"]' '                reason = ""' tests/test_serve.py::test_openai_judge_rates_answers_through_an_openai_compatible_server
