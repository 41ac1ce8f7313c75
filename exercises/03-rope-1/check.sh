program yarn_ramp.c | uniq -f 2 -c | awk '{n = $1; p = $3; $1 = $2 = $3 = ""; sub(/^ +/, ""); print "pairs " p "-" p + n - 1 ": " $0}'
