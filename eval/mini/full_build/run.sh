#!/usr/bin/env bash
# Issue 16, full build: train score fusion (96 steps), stage random (48) and align (48) ->
# random_aligned (48) on the FULL offline training split and evaluate each on the full test
# split (local + global pools). STEPS="recipe recipe_aligned score_fusion144" then runs the rest
# of the recipe from those (mine -> hard -> continual, without and with align) and the score-
# fusion baseline at the whole aligned recipe's budget (144 steps), each also scored on 1,000
# WordNet test definitions (nDCG@10). Work folder /tmp/fb (the full build, made on the first
# run; features, runs, evals); wall seconds of every step in /tmp/fb/times.tsv. Run from the
# repository root:
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
TIMES=$F/times.tsv
source scripts/steps.sh # step NAME COMMAND...: run, log its wall time to $TIMES
fit() { # fit NAME CONFIG [OVERRIDES...]: train CONFIG with this seed into runs/NAME$SFX
  local name=$1 config=$2
  shift 2
  step "train_$name$SFX" $M train "$config" seed="$SEED" output_dir="$F/runs/$name$SFX" "$@"
}
ev() { # ev NAME: M-BEIR evaluation of runs/NAME$SFX/final on the full test split
  step "eval_$1$SFX" $M eval mbeir --data $F/data --model "$F/runs/$1$SFX/final" --pool both \
    --instructions on --seed 0 --k 50 --out "$F/eval/$1$SFX" --no-progress
}
WN_INSTR="Retrieve the dictionary entry for the given definition."
bev() { # bev NAME: nDCG@10 of runs/NAME$SFX/final on 1,000 WordNet test definitions
  [ -f $F/wordnet_test/corpus.jsonl ] ||
    python3 scripts/mini_tools.py wordnet --split test -n 1000 --out $F/wordnet_test
  step "beir_$1$SFX" $M eval beir --data $F/wordnet_test --model "$F/runs/$1$SFX/final" \
    --split test --instruction "$WN_INSTR" --out "$F/eval/$1$SFX/beir" --no-progress
}
recipe() { # recipe FROM SUFFIX: mine with runs/FROM, hard (from the config's start), continual
  local from=$1 x=$2
  [ -f $F/wordnet_train/corpus.jsonl ] ||
    python3 scripts/mini_tools.py wordnet --split train -n 2000 --out $F/wordnet_train
  step "mine$x$SFX" $M mine --data $F/data --model "$F/runs/$from$SFX/final" \
    --queries 'query/train/*.jsonl' --pool cand_pool/global/mbeir_union_train_cand_pool.jsonl \
    --out "$F/mined$x$SFX" --top-k 50 --rank-threshold 45 --positive-ratio 0.95 \
    --max-negatives 10 --seed "$SEED"
  local q="data.sources.0.queries=[../mined$x$SFX/*.jsonl]"
  local start=()
  [ -z "$x" ] || start=(model.name="$F/runs/align$SFX/final")
  fit "hard$x" "configs/mini/full/hard$x.yaml" "$q" "${start[@]}"
  fit "continual$x" "configs/mini/full/continual$x.yaml" "$q" model.name="$F/runs/hard$x$SFX/final"
  ev "continual$x"
  bev "continual$x"
}
mkdir -p $F
[ -f $F/data/manifest.json ] || step data python3 -m mmembed data build-offline --out $F/data --seed 0 -q
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
  beir_*) bev "${s#beir_}" ;; # WordNet nDCG@10 of an already trained system
  recipe) recipe random "" ;;
  recipe_aligned) recipe random_aligned _aligned ;;
  score_fusion144)
    fit score_fusion144 configs/mini/full/score_fusion96.yaml max_steps=144 epochs=6
    ev score_fusion144
    bev score_fusion144
    ;;
  esac
done
