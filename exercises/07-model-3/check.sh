build build/dsv2 &&
    for seed in 1 1 2; do
        printf 'seed %s: ' "$seed"
        build/dsv2 generate -m tests/golden/lite --ids 1,2,3 -n 8 -t 0.8 --seed "$seed" 2> /dev/null
    done
