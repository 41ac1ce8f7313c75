build build/tests/test_fast_ep_model && suite test_fast_ep_model &&
    sed -n 's/^\([a-z0-9]* N=[0-9]* M=[0-9]*\):.*, \(.*\) vs one device.*/\1: \2/p' "$scratch/suite.log"
