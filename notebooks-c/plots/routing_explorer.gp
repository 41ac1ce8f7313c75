# notebooks-c/plots/routing_explorer.gp: routing agreement with greedy top-K and bytes
# dispatched per token against the device limit M, from build/notebooks/routing_explorer.dat
# (block 0: random logits at DeepSeek-V2's shapes; block 1: the bundled model's last MoE layer).
# Run by `make notebooks` (PNG) and figures/render.sh (SVG, by the name's ending):
#   gnuplot -e "data='IN.dat'; out='OUT.png'" routing_explorer.gp
if (strstrt(out, ".svg") > 0) {
    set terminal svg size 1100,450 font "DejaVu Sans,13" background "white"
} else {
    set terminal png size 1100,450
}
set output out
set multiplot layout 1,2 title "Device-limited routing: what the limit M changes"
set xlabel "device limit M (groups a token may reach)"
set ylabel "tokens routed exactly as greedy top-K (%)"
set y2label "bytes dispatched per token (bf16 hidden vectors)"
set ytics nomirror
set y2tics
set yrange [0:105]
set y2range [0:*]
set grid
set key bottom right
set title "random logits, V2 shapes (E 160, 8 groups, K 6, d 5120)"
plot data index 0 using 1:2 axes x1y1 with linespoints title "agreement", \
     data index 0 using 1:5 axes x1y2 with linespoints title "bytes/token"
set title "models/tiny-kjv, last MoE layer (E 16, 8 groups, K 4, d 256)"
plot data index 1 using 1:2 axes x1y1 with linespoints title "agreement", \
     data index 1 using 1:5 axes x1y2 with linespoints title "bytes/token"
unset multiplot
