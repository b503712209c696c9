// Command waitcdf draws the wait times that BenchmarkContendedHandoff writes
// when BENCH_WAITS_DIR is set: for each shape, the cumulative distribution
// of the waits of every library, the wait on a log scale, in one PNG with a
// panel per shape, side by side.
//
//	cd bench
//	BENCH_WAITS_DIR=/tmp/waits go test -run '^$' -bench ContendedHandoff -benchtime=3000x .
//	go run ./cmd/waitcdf -dir /tmp/waits -o waits.png
//
// It reads every <shape>-<lib>.txt of the directory: one wait a line, in
// integer nanoseconds, lines starting with # ignored (make bench-plot does
// both steps).
package main

import (
	"bufio"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// shapeOrder and libOrder put the panels and the lines in the order of the
// benchmark's tables; names they do not know come after, sorted.
var (
	shapeOrder = []string{"shared", "clients8", "g64c8"}
	libOrder   = []string{"redislock", "redislock-1ms", "bsm", "redsync-goredis", "rueidislock-km1"}
	shapeTitle = map[string]string{
		"shared":   "shape=shared: 8 goroutines, 1 client",
		"clients8": "shape=clients8: 8 goroutines, 8 clients",
		"g64c8":    "shape=g64c8: 64 goroutines, 8 clients",
	}
)

// series is the waits of one library in one shape, sorted.
type series struct {
	shape, lib string
	waits      []time.Duration
}

func main() {
	dir := flag.String("dir", cmp.Or(os.Getenv("BENCH_WAITS_DIR"), "waits"), "directory of the <shape>-<lib>.txt files")
	out := flag.String("o", "waits.png", "the PNG to write")
	flag.Parse()
	if err := run(*dir, *out); err != nil {
		fmt.Fprintln(os.Stderr, "waitcdf:", err)
		os.Exit(1)
	}
}

func run(dir, out string) error {
	all, err := readDir(dir)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return fmt.Errorf("no <shape>-<lib>.txt files in %s", dir)
	}
	var shapes, libs []string
	for _, s := range all {
		if !slices.Contains(shapes, s.shape) {
			shapes = append(shapes, s.shape)
		}
		if !slices.Contains(libs, s.lib) {
			libs = append(libs, s.lib)
		}
	}
	sortBy(shapes, shapeOrder)
	sortBy(libs, libOrder)

	// One x range for every panel, so that they compare at a glance.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range all {
		lo = min(lo, max(micros(s.waits[0]), 1)) // 1µs at least: a log scale has no 0
		hi = max(hi, micros(s.waits[len(s.waits)-1]))
	}
	lo = math.Pow(10, math.Floor(math.Log10(lo)))
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))

	row := make([]*plot.Plot, len(shapes))
	for i, shape := range shapes {
		p := plot.New()
		p.Title.Text = cmp.Or(shapeTitle[shape], "shape="+shape)
		p.X.Label.Text = "wait, from the call to its return (log scale)"
		p.Y.Label.Text = "fraction of waits ≤ x"
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = durationTicks{}
		p.X.Min, p.X.Max = lo, hi
		p.Y.Min, p.Y.Max = 0, 1
		p.Add(plotter.NewGrid())
		for j, lib := range libs {
			k := slices.IndexFunc(all, func(s series) bool { return s.shape == shape && s.lib == lib })
			if k < 0 {
				continue
			}
			line, err := plotter.NewLine(cdf(all[k].waits, lo))
			if err != nil {
				return fmt.Errorf("%s-%s: %w", shape, lib, err)
			}
			line.Color = plotutil.Color(j) // a library has one color in every panel
			line.Width = vg.Points(1.5)
			line.StepStyle = plotter.PostStep
			p.Add(line)
			w := all[k].waits
			p.Legend.Add(fmt.Sprintf("%s  p50 %s  p99 %s", lib, short(quantile(w, 0.50)), short(quantile(w, 0.99))), line)
		}
		p.Legend.Padding = vg.Points(2)
		p.Legend.TextStyle.Font.Size = vg.Points(9)
		row[i] = p
	}

	const panelW, panelH = 6 * vg.Inch, 4.5 * vg.Inch
	img := vgimg.New(panelW*vg.Length(len(shapes)), panelH)
	tiles := draw.Tiles{Rows: 1, Cols: len(shapes), PadX: vg.Points(12), PadTop: vg.Points(4),
		PadBottom: vg.Points(4), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, draw.New(img))
	for i, p := range row {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(f)
	return errors.Join(err, f.Close())
}

// readDir reads every <shape>-<lib>.txt of dir (shape names have no dash).
func readDir(dir string) ([]series, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*-*.txt"))
	if err != nil {
		return nil, err
	}
	var all []series
	for _, path := range paths {
		shape, lib, _ := strings.Cut(strings.TrimSuffix(filepath.Base(path), ".txt"), "-")
		waits, err := readWaits(path)
		if err != nil {
			return nil, err
		}
		if len(waits) > 0 {
			all = append(all, series{shape: shape, lib: lib, waits: waits})
		}
	}
	return all, nil
}

// readWaits reads one file: a wait in integer nanoseconds a line; blank lines
// and lines starting with # are skipped. The waits come back sorted.
func readWaits(path string) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var waits []time.Duration
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ns, err := strconv.ParseInt(line, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		waits = append(waits, time.Duration(ns))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	slices.Sort(waits)
	return waits, nil
}

// maxPoints bounds the points of one line; a CDF of more samples keeps
// every k-th, and the last.
const maxPoints = 2000

// cdf returns the empirical CDF of sorted waits as points (µs, fraction ≤),
// starting at (floor, 0); x is kept at floor or above for the log scale.
func cdf(sorted []time.Duration, floor float64) plotter.XYs {
	n := len(sorted)
	step := max(1, n/maxPoints)
	pts := plotter.XYs{{X: floor, Y: 0}}
	for i := 0; i < n; i += step {
		pts = append(pts, plotter.XY{X: max(micros(sorted[i]), floor), Y: float64(i+1) / float64(n)})
	}
	if last := pts[len(pts)-1]; last.Y < 1 {
		pts = append(pts, plotter.XY{X: max(micros(sorted[n-1]), floor), Y: 1})
	}
	return pts
}

// quantile returns the q-quantile of sorted (nearest rank), as the benchmark
// reports its percentiles.
func quantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// short formats d with 3 significant digits: 58µs, 1.2ms, 572ms, 1.5s.
func short(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return strconv.FormatFloat(micros(d), 'g', 3, 64) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'g', 3, 64) + "ms"
	default:
		return strconv.FormatFloat(d.Seconds(), 'g', 3, 64) + "s"
	}
}

// durationTicks marks an axis in µs with a labelled tick at each power of
// ten (10µs, 100µs, 1ms, ...) and unlabelled ones at 2-9 times it.
type durationTicks struct{}

var _ plot.Ticker = durationTicks{}

func (durationTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); math.Pow(10, e) <= hi; e++ {
		decade := math.Pow(10, e)
		for m := 1.0; m < 10; m++ {
			v := m * decade
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 {
				t.Label = short(time.Duration(v * float64(time.Microsecond)))
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// sortBy sorts names in the order of known, the unknown ones last and sorted.
func sortBy(names, known []string) {
	rank := func(s string) int {
		if i := slices.Index(known, s); i >= 0 {
			return i
		}
		return len(known)
	}
	slices.SortStableFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a, b))
	})
}
