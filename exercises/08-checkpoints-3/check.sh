build build/dsv2 && rm -rf build/ex-v2 && cp -r tests/golden/v2 build/ex-v2 &&
    sed -i 's/model-00002-of-000002/model-00003-of-000002/' build/ex-v2/model.safetensors.index.json &&
    build/dsv2 info -m build/ex-v2; echo "exit status $?"
