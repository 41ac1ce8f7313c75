# notebooks-c/plots/balance_ablation.gp: each ablation model's expert shares, busiest expert
# first, on both MoE layers, from build/notebooks/balance_ablation.dat.
# Run by `make notebooks` (PNG) and figures/render.sh (SVG, by the name's ending):
#   gnuplot -e "data='IN.dat'; out='OUT.png'" balance_ablation.gp
if (strstrt(out, ".svg") > 0) {
    set terminal svg size 1100,450 font "DejaVu Sans,13" background "white"
} else {
    set terminal png size 1100,450
}
set output out
set multiplot layout 1,2 title "Expert load with and without each balance loss (models/ablation/, Genesis 50:1-8)"
set xlabel "expert, busiest first"
set ylabel "share of the token-to-expert assignments"
set xrange [0.5:16.5]
set yrange [0:*]
set grid
set key top right
do for [layer = 0:1] {
    set title sprintf("MoE layer %d (even = 1/16)", layer + 1)
    plot for [col = 2:6] data index layer using 1:col with linespoints title columnheader(col), \
         1.0/16 with lines dashtype 2 lc rgb "black" title "even"
}
unset multiplot
