build build/tests/test_balance && suite test_balance
