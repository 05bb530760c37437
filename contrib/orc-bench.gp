# gnuplot script of contrib/orc-bench: the size sweep as four panels (one
# host / two hosts x latency / bandwidth), orc against its peers. Between orc
# and its first peer the area is green where orc is better and red where it
# is worse.
#
#   gnuplot -e "dir='DIR'; term='svg|png'; twohosts=0|1" contrib/orc-bench.gp
#
# DIR holds the data files orc-bench wrote (first line a "#" header naming
# the columns: size, orc, peers...; "-" marks a figure that failed) and
# receives curves.svg or curves.png.

if (!exists("dir")) dir = "."
if (!exists("term")) term = "svg"
if (term eq "png") {
    set terminal pngcairo size 1400,1000 font ",11"
    set output dir."/curves.png"
} else {
    set terminal svg size 1400,1000 dynamic font ",11"
    set output dir."/curves.svg"
}

set termoption noenhanced
set datafile missing "-"
set logscale xy
set grid xtics ytics mxtics mytics lc rgb "#dddddd"
set xtics ("8" 8, "64" 64, "512" 512, "4K" 4096, "32K" 32768, \
           "256K" 262144, "1M" 1048576, "4M" 4194304)
set xlabel "message size (bytes)"
set key top left box opaque
win  = "#b0e8b0"
lose = "#f4b0b0"

set multiplot layout 2,2 title "orc (softnic) against UCX's own transports, ucx_perftest, same run\n" . \
    "green: orc better than its first peer, red: orc worse"

# latency: orc above its peer is worse
set title "one host: put latency (us, lower is better)"
set ylabel "us"
file = dir."/onehost-lat.dat"
plot file using 1:2:3 with filledcurves above fc rgb lose notitle, \
     file using 1:2:3 with filledcurves below fc rgb win notitle, \
     file using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f5fbf" title "orc", \
     file using 1:3 with linespoints lw 2 pt 5 lc rgb "#333333" title "cma", \
     file using 1:4 with linespoints lw 1 dt 2 pt 4 lc rgb "#888888" title "posix (copy)"

if (!exists("twohosts")) twohosts = 1
set title "two hosts: put latency (us, lower is better)"
file = dir."/twohosts-lat.dat"
if (!twohosts) {
    set label 1 "not measured (needs root)" at graph 0.5, 0.5 center
    unset key
    plot [8:4194304] [1:10] NaN notitle
    unset label 1
    set key
} else {
plot file using 1:2:3 with filledcurves above fc rgb lose notitle, \
     file using 1:2:3 with filledcurves below fc rgb win notitle, \
     file using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f5fbf" title "orc", \
     file using 1:3 with linespoints lw 2 pt 5 lc rgb "#333333" title "tcp"
}

# bandwidth: orc above its peer is better
set title "one host: put bandwidth (MB/s, higher is better)"
set ylabel "MB/s"
file = dir."/onehost-bw.dat"
plot file using 1:2:3 with filledcurves above fc rgb win notitle, \
     file using 1:2:3 with filledcurves below fc rgb lose notitle, \
     file using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f5fbf" title "orc", \
     file using 1:3 with linespoints lw 2 pt 5 lc rgb "#333333" title "cma", \
     file using 1:4 with linespoints lw 1 dt 2 pt 4 lc rgb "#888888" title "posix (copy)"

set title "two hosts: put bandwidth (MB/s, higher is better)"
file = dir."/twohosts-bw.dat"
if (!twohosts) {
    set label 1 "not measured (needs root)" at graph 0.5, 0.5 center
    unset key
    plot [8:4194304] [1:10] NaN notitle
    unset label 1
} else {
plot file using 1:2:3 with filledcurves above fc rgb win notitle, \
     file using 1:2:3 with filledcurves below fc rgb lose notitle, \
     file using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f5fbf" title "orc", \
     file using 1:3 with linespoints lw 2 pt 5 lc rgb "#333333" title "tcp"
}

unset multiplot
