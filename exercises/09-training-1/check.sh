build build/tests/test_grad_components build/tests/test_grad_fd && suite test_grad_components && suite test_grad_fd
