#!/usr/bin/env bash
# Second training seed (seed 1; evaluation seed stays 0) of the early-fusion rows of run.sh on the
# full build: align -> random_aligned, and stage random without align. Same configs, with
# seed=1 and outputs *_s1 under /tmp/fb. Run after run.sh, from the repository root:
#   bash eval/mini/full_build/run_seed1.sh
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
F=/tmp/fb
M="python3 -m mmembed --feature-cache $F/features"
step() { # step NAME COMMAND...: run, log its wall time
  local name=$1 s
  shift
  s=$(date +%s)
  echo "== $(date -u +%T) $name: $*" >&2
  "$@"
  printf '%s\t%s\n' "$name" "$(($(date +%s) - s))" >>"$F/times.tsv"
}
ev() { # ev NAME: M-BEIR evaluation of runs/NAME/final on the full test split
  step "eval_$1" $M eval mbeir --data $F/data --model $F/runs/$1/final --pool both \
    --instructions on --seed 0 --k 50 --out $F/eval/$1 --no-progress
}
step train_align_s1 $M train configs/mini/full/align.yaml seed=1 output_dir=$F/runs/align_s1
step train_random_aligned_s1 $M train configs/mini/full/random_aligned.yaml seed=1 \
  model.name=$F/runs/align_s1/final output_dir=$F/runs/random_aligned_s1
ev random_aligned_s1
step train_random_s1 $M train configs/mini/full/random.yaml seed=1 output_dir=$F/runs/random_s1
ev random_s1
