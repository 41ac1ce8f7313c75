build build/tests/test_rmsnorm build/tests/test_golden && suite test_rmsnorm && suite test_golden
