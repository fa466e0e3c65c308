#!/usr/bin/env bash
# Issue 16, held-out sources: the full build with three sources held out of every training split
# (the gemojione art style, German names, gemojione's 'nature' category), then score fusion 96,
# stage random 48 and align 48 -> random_aligned 48 trained on it exactly as
# eval/mini/full_build/run.sh trains on the full build (same configs, seed 0, only the data root
# differs), each evaluated on the full test split, which is byte-identical to the full build's;
# then the transfer table of these models beside the full-build models on the same test queries.
# Work folder /tmp/fbh; features shared with /tmp/fb (keyed by image content). Needs the
# full-build evaluations of run.sh in /tmp/fb/eval. Run from the repository root:
#   bash eval/mini/held_out/run.sh
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$PWD
F=/tmp/fbh
M="python3 -m mmembed --feature-cache /tmp/fb/features"
mkdir -p $F
TIMES=$F/times.tsv
source scripts/steps.sh # step NAME COMMAND...: run, log its wall time to $TIMES
fit() { # fit NAME CONFIG [OVERRIDES...]: train CONFIG on the held-out build into runs/NAME
  local name=$1 config=$2
  shift 2
  step "train_$name" $M train "$config" output_dir="$F/runs/$name" model.feature_cache_dir=/tmp/fb/features "$@"
}
ev() { # ev NAME: M-BEIR evaluation of runs/NAME/final on the full test split
  step "eval_$1" $M eval mbeir --data $F/data --model "$F/runs/$1/final" --pool both \
    --instructions on --seed 0 --k 50 --out "$F/eval/$1" --no-progress
}
step data python3 -m mmembed data build-offline --out $F/data --seed 0 -q \
  --hold-out style:gemojione --hold-out lang:de --hold-out category:nature
ROOT=data.sources.0.root=$F/data
for s in ${STEPS:-score_fusion96 random aligned}; do
  case $s in
  score_fusion96 | random)
    fit $s configs/mini/full/$s.yaml $ROOT
    ev $s
    ;;
  aligned)
    step align_pairs python3 scripts/mini_tools.py align-pairs --data $F/data --out $F/align_pairs
    fit align configs/mini/full/align.yaml data.sources.0.root=$F/align_pairs
    fit random_aligned configs/mini/full/random_aligned.yaml $ROOT model.name=$F/runs/align/final
    ev random_aligned
    ;;
  esac
done
E=()
for s in score_fusion96 random random_aligned; do
  E+=(--eval "$s (full build)=/tmp/fb/eval/$s" --eval "$s (held out)=$F/eval/$s")
done
python3 -m mmembed eval transfer --data $F/data "${E[@]}" --out eval/mini/held_out
python3 eval/mini/held_out/bootstrap.py $F/eval /tmp/fb/eval $F/data eval/mini/held_out/bootstrap.json
cp $F/times.tsv eval/mini/held_out/times.tsv
