build build/dsv2 && build/dsv2 info -m tests/golden/lite | grep "MLA "
