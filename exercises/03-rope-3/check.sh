build build/tests/test_rope build/tests/test_golden && suite test_rope && suite test_golden
