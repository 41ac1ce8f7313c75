build build/dsv2 && rm -rf build/ex-lite && mkdir -p build/ex-lite && cp "$EX/config.json" build/ex-lite/ &&
    build/dsv2 info -m build/ex-lite; echo "exit status $?"
