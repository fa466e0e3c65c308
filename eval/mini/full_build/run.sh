#!/usr/bin/env bash
# Issue 16, full build: train score fusion (96 steps), stage random (48) and align (48) ->
# random_aligned (48) on the FULL offline training split and evaluate each on the full test
# split (local + global pools). Work folder /tmp/fb (data copy, features, runs, evals); wall
# seconds of every step in /tmp/fb/times.tsv. Run from the repository root:
#   cp -r FULLBUILD /tmp/fb/data; cp -r /tmp/fullsplit/features /tmp/fb/features  # if present
#   bash eval/mini/full_build/run.sh                              # seed 0, every system
#   SEED=1 STEPS="aligned random" bash eval/mini/full_build/run.sh  # another training seed
# SEED sets the training seed (the evaluation seed stays 0); a seed other than 0 writes its
# runs and evaluations as NAME_sSEED.
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
F=/tmp/fb
M="python3 -m mmembed --feature-cache $F/features"
SEED=${SEED:-0}
SFX=$([ "$SEED" = 0 ] || echo "_s$SEED")
step() { # step NAME COMMAND...: run, log its wall time
  local name=$1 s
  shift
  s=$(date +%s)
  echo "== $(date -u +%T) $name: $*" >&2
  "$@"
  printf '%s\t%s\n' "$name" "$(($(date +%s) - s))" >>"$F/times.tsv"
}
fit() { # fit NAME CONFIG [OVERRIDES...]: train CONFIG with this seed into runs/NAME$SFX
  local name=$1 config=$2
  shift 2
  step "train_$name$SFX" $M train "$config" seed="$SEED" output_dir="$F/runs/$name$SFX" "$@"
}
ev() { # ev NAME: M-BEIR evaluation of runs/NAME$SFX/final on the full test split
  step "eval_$1$SFX" $M eval mbeir --data $F/data --model "$F/runs/$1$SFX/final" --pool both \
    --instructions on --seed 0 --k 50 --out "$F/eval/$1$SFX" --no-progress
}
for s in ${STEPS:-score_fusion96 random aligned}; do
  case $s in
  score_fusion96 | random)
    fit $s configs/mini/full/$s.yaml
    ev $s
    ;;
  aligned)
    [ -f $F/align_pairs/query/train/mbeir_align_task3_train.jsonl ] ||
      step align_pairs python3 scripts/mini_tools.py align-pairs --data $F/data --out $F/align_pairs
    fit align configs/mini/full/align.yaml
    fit random_aligned configs/mini/full/random_aligned.yaml model.name="$F/runs/align$SFX/final"
    ev random_aligned
    ;;
  esac
done
