build build/tests/test_fast_ep && suite test_fast_ep
