# notebooks-c/plots/train_ablation.gp: the three training ablations of chapter 9 step by step
# (20-step trailing means), from build/notebooks/train_ablation.dat.
# Run by `make notebooks` (PNG) and figures/render.sh (SVG, by the name's ending):
#   gnuplot -e "data='IN.dat'; out='OUT.png'" train_ablation.gp
if (strstrt(out, ".svg") > 0) {
    set terminal svg size 1200,400 font "DejaVu Sans,12" background "white"
} else {
    set terminal png size 1200,400
}
set output out
set multiplot layout 1,3 title "dsv2 train ablations on Genesis (0.5M parameters, 300 steps of 512 tokens)"
set xlabel "step"
set grid
set key top right
set xrange [0:300]
set title "(b) busiest expert / mean"
set yrange [1:*]
plot for [col = 2:6] data index 0 using 1:col with lines lw 2 title columnheader(col)
set title "(c) busiest device / mean"
plot for [col = 2:4] data index 1 using 1:col with lines lw 2 title columnheader(col)
set title "(d) share of (token, expert) pairs dropped"
set yrange [0:*]
plot for [col = 2:4] data index 2 using 1:col with lines lw 2 title columnheader(col)
unset multiplot
