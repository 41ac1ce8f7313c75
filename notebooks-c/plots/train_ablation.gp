# notebooks-c/plots/train_ablation.gp: the training ablations of chapter 9: (a) held-out loss
# against the KV cache per token and layer of each attention variant, then (b), (c), (d) step
# by step (20-step trailing means), from build/notebooks/train_ablation.dat.
# Run by `make notebooks` (PNG) and figures/render.sh (SVG, by the name's ending):
#   gnuplot -e "data='IN.dat'; out='OUT.png'" train_ablation.gp
if (strstrt(out, ".svg") > 0) {
    set terminal svg size 1600,400 font "DejaVu Sans,12" background "white"
} else {
    set terminal png size 1600,400
}
set output out
set multiplot layout 1,4 title "dsv2 train ablations on Genesis (0.5M parameters, 300 steps of 512 tokens)"
set grid
set title "(a) held-out loss vs KV cache"
set xlabel "KV bytes per token and layer (bf16)"
set ylabel "held-out cross-entropy"
set xrange [0:180]
set xtics 40
set yrange [4.04:4.22]
set key bottom right
plot data index 3 using 2:3 with points pt 7 ps 1 title "seed 1611", \
     '' index 3 using 2:4 with points pt 5 ps 1 title "seed 2718", \
     '' index 3 using 2:5 with points pt 9 ps 1 title "seed 31415", \
     '' index 3 using 2:6 with points pt 2 ps 1.5 lc "black" title "mean", \
     '' index 3 using 2:6:1 with labels left offset 1.2,0 notitle
unset ylabel
set key top right
set xlabel "step"
set xrange [0:300]
set xtics autofreq
set title "(b) busiest expert / mean"
set yrange [1:*]
plot for [col = 2:6] data index 0 using 1:col with lines lw 2 title columnheader(col)
set title "(c) busiest device / mean"
plot for [col = 2:4] data index 1 using 1:col with lines lw 2 title columnheader(col)
set title "(d) share of (token, expert) pairs dropped"
set yrange [0:*]
plot for [col = 2:4] data index 2 using 1:col with lines lw 2 title columnheader(col)
unset multiplot
