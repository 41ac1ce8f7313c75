make -s check-kernel COMPONENT=rope SRC=my_rope.cu RACECHECK=1 2>&1 |
    sed -n -e 's/^\(PASS\|FAIL\)\( *[^:]*\): \([^;]*\).*/\1\2: \3/p' -e '/^check-kernel:/p'
