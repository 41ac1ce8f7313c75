#!/bin/sh
# tools/train_ablations.sh DSV2 OUT [RUN...]: the ablation runs of chapter 9, each a dsv2 train run
# of models/train-demo/config.json on models/train-ablations/genesis.txt (the book of Genesis,
# KJV) from the same seed, differing in one option; the attention-* runs (a) replace the config
# with models/train-ablations/<run>/config.json (MHA, GQA, MQA; `all` is their MLA), and the
# attention-*-s2 and -s3 runs repeat the four from two more seeds (weights and window order). Writes
# OUT/<run>/ (checkpoint and train_log.jsonl). With no RUN, all of them.
# notebooks-c/train_ablation.c reads the logs.
set -e
dsv2=$1; out=$2; shift 2
common="--data models/train-ablations/genesis.txt --steps ${STEPS:-300}
        --batch 8 --seq 64 --lr 3e-3 --warmup 50 --eval-every 100 --seed 1611"
opts() {
    case $1 in
    all)       echo "--alpha 0.003,0.05,0.02" ;;   # (b) the paper's three losses; also M = 2, CF = inf
    none)      echo "--alpha 0,0,0" ;;
    expbal)    echo "--alpha 0.003,0,0" ;;
    devbal)    echo "--alpha 0,0.05,0" ;;
    commbal)   echo "--alpha 0,0,0.02" ;;
    m1)        echo "--device-limit 1 --devices 4" ;;  # (c) device-limited routing
    m4)        echo "--device-limit 4 --devices 4" ;;
    cf1)       echo "--capacity 1.0" ;;               # (d) token dropping
    cf1.25)    echo "--capacity 1.25" ;;
    attention-mha|attention-gqa|attention-mqa)      # (a) standard attention, same options as all
               echo "-c models/train-ablations/$1/config.json" ;;
    attention-mla-s2) echo "-c models/train-demo/config.json --seed 2718" ;;  # (a) two more seeds
    attention-*-s2)   echo "-c models/train-ablations/${1%-s2}/config.json --seed 2718" ;;
    attention-mla-s3) echo "-c models/train-demo/config.json --seed 31415" ;;
    attention-*-s3)   echo "-c models/train-ablations/${1%-s3}/config.json --seed 31415" ;;
    *)         echo "train_ablations.sh: unknown run $1" >&2; exit 2 ;;
    esac
}
[ $# -gt 0 ] || set -- all none expbal devbal commbal m1 m4 cf1 cf1.25 attention-mha attention-gqa attention-mqa \
    attention-mla-s2 attention-mha-s2 attention-gqa-s2 attention-mqa-s2 \
    attention-mla-s3 attention-mha-s3 attention-gqa-s3 attention-mqa-s3
for run in "$@"; do
    o=$(opts "$run")
    case $run in attention-*) ;; *) o="-c models/train-demo/config.json $o" ;; esac
    $dsv2 train $common $o -o "$out/$run" 2> "$out/$run.log" || { cat "$out/$run.log"; exit 1; }
    echo "$run: $(tail -1 "$out/$run.log")"
done
