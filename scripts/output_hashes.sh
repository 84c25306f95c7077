#!/usr/bin/env bash
# Hashes of the outputs that a refactor must leave unchanged (same seed, preset and device):
# generate on both tiny presets, a batch, --motion-guidance, encode/decode and composite.
# usage: scripts/output_hashes.sh [OUT_DIR]   (prints "<sha256>  <name>" lines, sorted)
# PNG / APNG / safetensors are hashed as bytes; the .mov's decoded frames are hashed (its
# container carries encoder metadata that is not part of what the pipeline computes).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rgba="$root/.venv/bin/rgba"
py="$root/.venv/bin/python"
out="${1:-$(mktemp -d)}"
mkdir -p "$out/batch"
cd "$out"
export RGBA_WEIGHTS=""
"$rgba" generate "a glass jellyfish" -o jelly.apng --seed 0 --force 2>/dev/null
"$rgba" generate "a red orb drifting left" -o orb.%04d.png --seed 3 --force 2>/dev/null
"$rgba" generate "a red star drifting left" --backend alpha-tokens -o star.apng --seed 1 --force 2>/dev/null
"$rgba" generate "a blue orb drifting up" --guidance 3 --motion-guidance 1.2 -o mfg.apng --seed 2 --force 2>/dev/null
"$rgba" generate "a yellow star" --backend alpha-tokens --guidance 3 --motion-guidance 1.2 -o mfg_at.apng --seed 4 --force 2>/dev/null
printf 'a green cube drifting right\n{"prompt": "a glowing pink orb", "seed": 11, "frames": 9}\n' > prompts.txt
"$rgba" generate --prompts prompts.txt -o 'batch/{index:03d}-{slug}.apng' --seed 5 --force 2>/dev/null || true
"$rgba" encode jelly.apng -o jelly.safetensors --force 2>/dev/null
"$rgba" decode jelly.safetensors -o jelly_back.apng --force 2>/dev/null
"$rgba" composite jelly.apng orb.%04d.png --over '#204060' -o comp.apng --position 4,4 --position 10,-3 --scale 1.5 --force 2>/dev/null
"$rgba" generate "a white bubble" -o bubble.mov --seed 6 --force 2>/dev/null
"$py" - "$out" <<'PY'
import hashlib, json, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
rows = []
for p in sorted(out.rglob("*")):
    if p.suffix in (".png", ".apng"):
        rows.append((hashlib.sha256(p.read_bytes()).hexdigest(), str(p.relative_to(out))))
    elif p.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(p), framework="pt") as f:
            meta = json.dumps(f.metadata(), sort_keys=True).encode()
            data = b"".join(f.get_tensor(k).numpy().tobytes() for k in sorted(f.keys()))
        rows.append((hashlib.sha256(meta + data).hexdigest(), str(p.relative_to(out)) + " (tensors+metadata)"))
    elif p.suffix == ".mov":
        from rgbacli.media import read_clip
        rows.append((hashlib.sha256(np.ascontiguousarray(read_clip(p).frames).tobytes()).hexdigest(),
                     str(p.relative_to(out)) + " (decoded frames)"))
for h, name in rows:
    print(f"{h}  {name}")
PY
