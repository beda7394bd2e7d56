# Converts the transformers-5.x-written SmolLM2-135M-Instruct dir into something transformers 4.42.4 /
# tokenizers 0.19.1 read identically. Weights (model.safetensors) are copied unchanged.
import json, shutil, sys, os
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if f != "model.safetensors" or not os.path.exists(os.path.join(dst, f)):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))
os.chdir(dst)
# config.json: 5.x "dtype" -> "torch_dtype"; 5.x "rope_parameters" -> 4.42 "rope_theta"/"rope_scaling"
# (without this 4.42 would silently use its default rope_theta 10000 instead of 100000)
c = json.load(open('config.json'))
c['torch_dtype'] = c.pop('dtype')
rp = c.pop('rope_parameters'); assert rp == {'rope_theta': 100000.0, 'rope_type': 'default'}
c['rope_theta'] = rp['rope_theta']; c['rope_scaling'] = None
c['transformers_version'] = '4.42.4'
c.pop('_model_name_or_path', None)
json.dump(c, open('config.json', 'w'), indent=2)
# tokenizer.json: tokenizers>=0.20 writes BPE merges as [a, b] pairs; 0.19.1 needs "a b" strings
t = json.load(open('tokenizer.json'))
m = t['model']['merges']
if m and isinstance(m[0], list):
    assert all(' ' not in a and ' ' not in b for a, b in m)
    t['model']['merges'] = [a + ' ' + b for a, b in m]
json.dump(t, open('tokenizer.json', 'w'), ensure_ascii=False)
# tokenizer_config.json: class name, chat template inline, added tokens
tc = json.load(open('tokenizer_config.json'))
tc['tokenizer_class'] = 'GPT2TokenizerFast'
for k in ('backend', 'is_local', 'local_files_only'):
    tc.pop(k, None)
tc['add_prefix_space'] = False
tc['clean_up_tokenization_spaces'] = False
tc['chat_template'] = open('chat_template.jinja').read()
tc['added_tokens_decoder'] = {str(a['id']): {k: a[k] for k in ('content', 'lstrip', 'normalized', 'rstrip', 'single_word', 'special')} for a in t['added_tokens']}
json.dump(tc, open('tokenizer_config.json', 'w'), indent=2)
