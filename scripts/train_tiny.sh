#!/usr/bin/env bash
# Train the embedded tiny model from scratch on this machine's CPU (~90 minutes on 2 cores) and
# install it into the package. Stages 2 and 3 only need stage 1, so they run side by side, one
# thread each (two OpenMP processes with 2 threads each on 2 cores stall each other).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
rgba="$root/.venv/bin/rgba"
run="${1:-$root/runs/tiny}"
mkdir -p "$run"
"$rgba" train base-vae --out "$run" --minutes 21 --threads 2
"$rgba" train base-dit --out "$run" --minutes 30 --threads 1 > "$run/base-dit.log" 2>&1 &
dit=$!
"$rgba" train rgba-vae --out "$run" --minutes 22 --threads 1 > "$run/rgba-vae.log" 2>&1 &
vae=$!
wait "$dit"; wait "$vae"
tail -n 1 "$run/base-dit.log" "$run/rgba-vae.log"
"$rgba" train dora --out "$run" --minutes 14 --threads 1 --clips 800 &
"$rgba" train alpha-tokens --out "$run" --minutes 10 --threads 1 --clips 800 &
wait
"$rgba" train export --out "$run"
echo "done: the tiny preset now uses the weights from $run"
