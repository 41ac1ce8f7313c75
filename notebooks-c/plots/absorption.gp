# notebooks-c/plots/absorption.gp: FLOPs and bytes per decoded token against context length,
# expanded vs absorbed MLA (DeepSeek-V2-Lite shapes), from build/notebooks/absorption.dat.
# Run by `make notebooks` (PNG) and figures/render.sh (SVG, by the name's ending):
#   gnuplot -e "data='IN.dat'; out='OUT.png'" absorption.gp
if (strstrt(out, ".svg") > 0) {
    set terminal svg size 1100,450 font "DejaVu Sans,13" background "white"
} else {
    set terminal png size 1100,450
}
set output out
set multiplot layout 1,2 title "One decoded token through one MLA layer (V2-Lite shapes), the part the two forms differ in"
set logscale xy
set xlabel "context length n (cached tokens)"
set grid
set key top left
set format y "10^{%L}"
set ylabel "FLOPs"
set title "arithmetic"
plot data using 1:2 with linespoints title "expanded (decompress k, v)", \
     data using 1:3 with linespoints title "absorbed (attend over latents)"
set ylabel "bytes (bf16)"
set title "memory traffic"
plot data using 1:4 with linespoints title "expanded", \
     data using 1:5 with linespoints title "absorbed"
unset multiplot
