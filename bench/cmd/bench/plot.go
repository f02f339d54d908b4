package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// writePlot draws the latency distributions of (a), (b), (c), (c2) and, when
// measured, (d)'s warm Acquire, as empirical CDFs on a log time axis, and
// saves them as a PNG.
func writePlot(path string, r *report) error {
	p := plot.New()
	p.Title.Text = "dockerpool: where the time goes (empirical CDF)"
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of samples ≤ x"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = logTicks{}
	// Headroom above 1 for the legend, so that it never hides a curve.
	p.Y.Min, p.Y.Max = 0, 1.4
	p.Y.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"},
		{Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 0.9, Label: "0.9"}, {Value: 1, Label: "1"}})
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)

	series := []struct {
		name   string
		legend string
		color  color.Color
		dash   []vg.Length
	}{
		{"d.acquire", "warm Acquire alone", color.RGBA{R: 120, G: 120, B: 120, A: 255}, []vg.Length{vg.Points(2), vg.Points(2)}},
		{"h", "pool Acquire + Exec + Return, agent path", color.RGBA{R: 148, G: 103, B: 189, A: 255}, nil},
		{"a", "bare Docker exec round trip (the floor)", color.RGBA{R: 31, G: 119, B: 180, A: 255}, nil},
		{"b", "pool Acquire + Exec + Return", color.RGBA{R: 44, G: 160, B: 44, A: 255}, nil},
		{"c", "cold API create + start + exec + remove", color.RGBA{R: 214, G: 39, B: 40, A: 255}, nil},
		{"c2", "docker run --rm (CLI)", color.RGBA{R: 255, G: 127, B: 14, A: 255}, nil},
	}
	for _, s := range series {
		sum := r.find(s.name)
		if sum == nil || len(sum.samples) == 0 {
			continue
		}
		line, err := plotter.NewLine(cdf(sum.samples))
		if err != nil {
			return err
		}
		line.Color = s.color
		line.Width = vg.Points(2)
		line.Dashes = s.dash
		line.StepStyle = plotter.PostStep
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("(%s) %s: p50 %s, p99 %s, n=%d", s.name, s.legend, fmtDur(sum.P50), fmtDur(sum.P99), sum.N), legendThumb{line})
	}
	// Some room on both sides, so that no curve sits on the frame.
	p.X.Min, p.X.Max = p.X.Min/1.5, p.X.Max*1.5
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(10*vg.Inch, 6*vg.Inch, path)
}

// cdf turns sorted samples into the points of an empirical CDF, in ms.
func cdf(sorted []time.Duration) plotter.XYs {
	pts := make(plotter.XYs, len(sorted))
	for i, d := range sorted {
		pts[i].X = max(float64(d)/float64(time.Millisecond), 1e-4)
		pts[i].Y = float64(i+1) / float64(len(sorted))
	}
	return pts
}

// legendThumb draws a line's thumbnail in the legend.
type legendThumb struct{ l *plotter.Line }

func (t legendThumb) Thumbnail(c *draw.Canvas) { t.l.Thumbnail(c) }

// logTicks labels 1, 2 and 5 times each power of ten, and marks the others
// with minor ticks.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		base := math.Pow(10, e)
		for m := 1; m <= 9; m++ {
			v := float64(m) * base
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}
