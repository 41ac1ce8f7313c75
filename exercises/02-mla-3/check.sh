build build/tests/test_mla build/tests/test_golden && suite test_mla && suite test_golden
