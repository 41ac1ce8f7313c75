make -s check-kernel COMPONENT=rmsnorm SRC=kernels/examples/rmsnorm_missing_barrier.cu RACECHECK=1 2>&1 |
    sed -n 's/^\(PASS\|FAIL\)\( *[^:]*\): \([^;]*\).*/\1\2: \3/p'
