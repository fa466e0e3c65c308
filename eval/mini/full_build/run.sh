#!/usr/bin/env bash
# Issue 16, full build: train score fusion (96 steps), stage random (48) and align (48) ->
# random_aligned (48) on the FULL offline training split and evaluate each on the full test
# split (local + global pools). One seed (0). Work folder /tmp/fb (data copy, features, runs,
# evals); wall seconds of every step in /tmp/fb/times.tsv. Run from the repository root:
#   cp -r FULLBUILD /tmp/fb/data; cp -r /tmp/fullsplit/features /tmp/fb/features  # if present
#   bash eval/mini/full_build/run.sh
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
for s in ${STEPS:-score_fusion96 random aligned}; do
  case $s in
  score_fusion96 | random)
    step "train_$s" $M train configs/mini/full/$s.yaml
    ev $s
    ;;
  aligned)
    step align_pairs python3 scripts/mini_tools.py align-pairs --data $F/data --out $F/align_pairs
    step train_align $M train configs/mini/full/align.yaml
    step train_random_aligned $M train configs/mini/full/random_aligned.yaml
    ev random_aligned
    ;;
  esac
done
