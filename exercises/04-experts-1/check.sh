build build/tests/test_moe && suite test_moe &&
    if grep -q '^\[       OK \] shared_expert_is_two_experts' "$scratch/suite.log"; then
        echo "shared_expert_is_two_experts: passed"
    else
        echo "shared_expert_is_two_experts: not run"
    fi
