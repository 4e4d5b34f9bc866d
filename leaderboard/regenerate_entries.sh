#!/usr/bin/env bash
# Rebuilds every reproduced entry under leaderboard/entries/shapes from the checkpoints and
# code in this repository (offline, CPU, about 10 min on 2 cores). Run from the repository root
# in the project's venv: `bash leaderboard/regenerate_entries.sh [BACKUP_DIR]`. The previous
# entries are moved to BACKUP_DIR (default: a temporary folder) so they can be compared: the
# scores must come out equal, only the run records change.
set -euo pipefail
cd "$(dirname "$0")/.."
entries=leaderboard/entries/shapes
backup=${1:-$(mktemp -d)}
mkdir -p "$backup"
echo "previous entries: $backup"

for row in "shapes-oracle-long:shapes-oracle:--model-arg detail=long:shapes-oracle (long captions)" \
           "shapes-oracle-short:shapes-oracle:--model-arg detail=short:shapes-oracle (short captions)" \
           "blank:blank::blank"; do
  IFS=: read -r name model args label <<<"$row"
  mv "$entries/$name" "$backup/$name"
  # shellcheck disable=SC2086
  unified-bench eval --model "$model" $args --data shapes --limit 200 --batch-size 50 \
    --name "$label" --out "$entries/$name" --no-progress
done

# the Unified-GRPO stages of the shipped uae-tiny, with the training curves their runs carry
mv "$entries/uae-tiny-rl" "$backup/uae-tiny-rl"
uae-reference rl evaluate --limit 200 --out "$entries/uae-tiny-rl" --no-progress \
  --checkpoint pre-rl=uae_reference/checkpoints/uae-tiny-stages/pre-rl \
  --checkpoint g4u=uae_reference/checkpoints/uae-tiny-stages/g4u \
  --checkpoint u4g=uae_reference/checkpoints/uae-tiny \
  --curve g4u="$backup/uae-tiny-rl/g4u/train/curve.csv" --curve u4g="$backup/uae-tiny-rl/u4g/train/curve.csv"
