#!/usr/bin/env bash
# Train the embedded tiny model from scratch on this machine's CPU (~200 minutes on 2 cores) and
# install it into the package. After stage 1, two processes share the 2 cores, one thread each
# (two OpenMP processes with 2 threads each on 2 cores stall each other):
#   base-dit (32 min)  ∥  rgba-vae (27 min), then the dora and alpha-token latent caches
#   dora (17 min), then alpha-tokens (12 min)
#                      ∥  rgba-decoders (12 min: stage 3 continued on the decoder LoRAs), then
#                         rgb-decoder (18 min: the fused RGB decoder alone on whole clips)
# then, alone on the machine and on the frozen base: trajectory (stage 5, 40 min: Tora's extractor
# + motion fusers), export, and smp (stage 6, ~7 min keyframe + guide cache + 12,400 updates, ~40 min:
# the semantic motion predictor of `rgba interpolate`), exported beside it.
# Neither decoder stage moves the latent space dora trains on.
# Usage: scripts/train_tiny.sh [RUN_FOLDER] (default runs/tiny). Stages refuse a folder where they
# already ran (resume one with `rgba train STAGE --resume`), so give a new folder for a new run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
rgba="$root/.venv/bin/rgba"
run="${1:-$root/runs/tiny}"
mkdir -p "$run"
"$rgba" train base-vae --out "$run" --minutes 24 --threads 2
"$rgba" train base-dit --out "$run" --minutes 32 --threads 1 --clips 2400 > "$run/base_dit.log" 2>&1 &
dit=$!
{
  "$rgba" train rgba-vae --out "$run" --minutes 27 --threads 1
  "$rgba" train latents dora --out "$run" --clips 800 --threads 1
  "$rgba" train latents alpha-tokens --out "$run" --clips 800 --threads 1
} > "$run/rgba_vae.log" 2>&1 &
vae=$!
wait "$dit"; wait "$vae"
tail -n 1 "$run/base_dit.log" "$run/rgba_vae.log"
{
  "$rgba" train dora --out "$run" --minutes 17 --threads 1 --clips 800
  "$rgba" train alpha-tokens --out "$run" --minutes 12 --threads 1 --clips 800
} > "$run/dora.log" 2>&1 &
dora=$!
{
  "$rgba" train rgba-decoders --out "$run" --minutes 12 --threads 1
  "$rgba" train rgb-decoder --out "$run" --minutes 18 --threads 1
} > "$run/decoders.log" 2>&1 &
decoders=$!
wait "$dora"; wait "$decoders"
tail -n 2 "$run/dora.log" "$run/decoders.log"
# Stage 5 reads the finished base (transformer + dora + vae) from the run folder; alone on the machine.
"$rgba" train trajectory --out "$run" --minutes 28 --threads 2 --clips 1200 > "$run/trajectory.log" 2>&1
tail -n 1 "$run/trajectory.log"
"$rgba" train export --out "$run" --force
# Stage 6, on the base just installed (frozen): the semantic motion predictor of `rgba interpolate`
# (~7 min encoding its keyframes and their motion guides, then 12,400 updates, 80 % of each batch
# guided: where interpolate samples; docs/interpolate.md), then exported beside it.
"$rgba" train smp --out "$run" --base "$run" --steps 12400 --minutes 45 --threads 2 --clips 1600 --guided 0.8 \
  > "$run/smp.log" 2>&1
tail -n 1 "$run/smp.log"
"$rgba" train export --out "$run" --force
echo "done: the tiny preset now uses the weights from $run"
