build build/tests/test_grad_model && suite test_grad_model
