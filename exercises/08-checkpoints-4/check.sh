build build/notebooks/expert_load && NOTEBOOK_DATA=/dev/null build/notebooks/expert_load | head -1
