# notebooks-c/plots/yarn_ramp.gp: YaRN's blend per rotary pair for the released DeepSeek-V2
# config, from the data notebooks-c/yarn_ramp.c writes (block 0: per pair, block 1: the ramp's
# ends low and high). Drawn into figures/yarn-ramp.svg by figures/render.sh; also by
# `make notebooks` as a PNG:  gnuplot -e "data='IN.dat'; out='OUT.png'" yarn_ramp.gp
if (strstrt(out, ".svg") > 0) {
    set terminal svg size 1100,450 font "DejaVu Sans,13" background "white"
} else {
    set terminal png size 1100,450
}
set output out
stats data index 1 using 1 nooutput
low = STATS_min
stats data index 1 using 2 nooutput
high = STATS_min
set multiplot layout 1,2 title "YaRN on DeepSeek-V2's decoupled RoPE (θ = 10000, s = 40, L_0 = 4096, d@^R_h = 64)"
set xlabel "rotary pair i"
set xrange [-0.5:31.5]
set grid
set arrow 1 from low, graph 0 to low, graph 1 nohead dashtype 2 lc rgb "#1b7837" lw 2
set arrow 2 from high, graph 0 to high, graph 1 nohead dashtype 2 lc rgb "#762a83" lw 2
set label 1 sprintf("low = %d\n(β_{fast} = 32 turns in L_0)", low) at low, graph 0.55 right offset -0.5, 0
set label 2 sprintf("high = %d\n(β_{slow} = 1 turn)", high) at high, graph 0.45 left offset 0.5, 0
set title "blend γ_i: share of the interpolated θ_i / s"
set ylabel "γ_i"
set yrange [-0.05:1.05]
set key top left Left reverse
plot data index 0 using 1:2 with linespoints pt 7 lc rgb "#2166ac" title "γ_i = (θ_i − θ'_i) / (θ_i − θ_i / s)"
set title "frequencies (radians per position)"
set ylabel "θ"
set logscale y
set format y "10^{%L}"
set yrange [*:*]
unset label 1
unset label 2
set key bottom left Left reverse
plot data index 0 using 1:3 with lines lw 2 lc rgb "#999999" title "original θ_i = θ^{−2i/d}", \
     data index 0 using 1:5 with lines lw 2 dashtype 3 lc rgb "#999999" title "interpolated θ_i / s", \
     data index 0 using 1:4 with linespoints pt 7 lc rgb "#b2182b" title "YaRN θ'_i"
unset multiplot
