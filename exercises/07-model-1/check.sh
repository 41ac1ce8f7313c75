build build/tests/test_golden && suite test_golden
