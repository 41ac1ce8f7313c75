# Per configuration: is the fast EP model's difference from one device (its relative L2, printed to 9
# digits) zero or not, and (on the second run, with the patch) did the value change from the first
# run on the tree as it is.
# Only relations are printed, so a kernel that reorders its sums leaves the check unchanged.
build build/tests/test_fast_ep_model && suite test_fast_ep_model &&
    sed -n 's/^\([a-z0-9]* N=[0-9]* M=[0-9]*\):.* vs one device (relative L2 \([^)]*\)).*/\1: \2/p' \
        "$scratch/suite.log" > "$scratch/ep_now.txt" &&
    if [ -f "$scratch/ep_first.txt" ]; then
        paste -d '|' "$scratch/ep_first.txt" "$scratch/ep_now.txt" |
            awk -F '|' '{ split($2, a, ": "); print a[1] ": " (a[2] + 0 == 0 ? "zero" : "nonzero") \
                (($1 == $2) ? ", unchanged" : ", changed") }'
    else
        cp "$scratch/ep_now.txt" "$scratch/ep_first.txt"
        awk -F ': ' '{ print $1 ": " ($2 + 0 == 0 ? "zero" : "nonzero") }' "$scratch/ep_now.txt"
    fi
