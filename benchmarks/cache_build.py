"""Time a model-cache build with and without ``_gguf_read_once`` (one GGUF parse per build) and check
that both write the same files. Usage: python benchmarks/cache_build.py [smollm2-135m-instruct|gemma-3-270m]

The README's build times come from this script (record: benchmarks/records/cache-build-2026-11-26.txt).
Each build runs in its own process, so neither profits from the other's imports or file cache warm-up
beyond what the OS keeps."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BUILD = """
import contextlib, json, sys, time
from pathlib import Path
from bipo_lens import models
name, shared, out = sys.argv[1], sys.argv[2] == "shared", Path(sys.argv[3])
if not shared:
    models._gguf_read_once = contextlib.nullcontext  # transformers' own reads: three parses
spec = models.EMBEDDED_MODELS[name]
gguf = models._embedded_gguf(spec)
started = time.time()
models._build_cache_entry(out, gguf, spec.architecture)
print(json.dumps({"seconds": round(time.time() - started, 1)}))
"""


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m-instruct"
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("shared", "separate"):
            entry = Path(tmp) / mode / "entry"
            run = subprocess.run([sys.executable, "-c", BUILD, name, mode, str(entry)], capture_output=True, text=True)
            if run.returncode != 0:
                print(run.stderr[-2000:])
                return 1
            seconds = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
            files = json.loads((entry / "manifest.json").read_text())["files"]
            found[mode] = (seconds, files)
            print(f"{name}: build with {mode} GGUF reads {seconds:.1f} s")
    same = found["shared"][1] == found["separate"][1]
    print(f"same files (sha256 of each): {same}; speedup {found['separate'][0] / found['shared'][0]:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
