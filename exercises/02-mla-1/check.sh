build build/notebooks/absorption && NOTEBOOK_DATA=/dev/null build/notebooks/absorption | awk 'NF >= 10 && $1 ~ /^[0-9]+$/ {print "context", $1, "expanded", $2, "absorbed", $3}'
