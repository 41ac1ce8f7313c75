build build/tests/test_router build/tests/test_moe build/tests/test_golden && suite test_router && suite test_moe && suite test_golden
