make -s check-kernel COMPONENT=mla_decode SRC=kernels/examples/mla_decode_split_off_by_one.cu 2>&1 |
    sed -n 's/^\(PASS\|FAIL\)\( *[^:]*\): \([^;]*\).*/\1\2: \3/p'
