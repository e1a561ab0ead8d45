package main

import (
	"image/color"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	blue   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	orange = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	green  = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	red    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
)

// plotFailures draws failed requests per restart by method, one bar per
// load (none where a method did not run under that load).
func plotFailures(r *report, path string) error {
	var names []string
	loads := []loadKind{newConnLoad, keepAliveLoad, noRetryLoad}
	vals := make([]plotter.Values, len(loads))
	row := map[string]int{}
	for _, run := range r.Runs {
		if run.Skipped != "" {
			continue
		}
		i, ok := row[run.Method]
		if !ok {
			i = len(names)
			row[run.Method] = i
			names = append(names, shortName(run.Method))
			for k := range vals {
				vals[k] = append(vals[k], 0)
			}
		}
		for k, l := range loads {
			if l == (loadKind{run.KeepAlive, run.NoRetry}) {
				vals[k][i] = run.perRestart()
			}
		}
	}
	if len(names) == 0 {
		names = []string{"(none)"}
		for k := range vals {
			vals[k] = plotter.Values{0}
		}
	}
	p := plot.New()
	p.Title.Text = "Failed requests per restart (same load, one run)"
	p.X.Label.Text = "failed requests per restart"
	w := vg.Points(7)
	for k, c := range []color.Color{orange, blue, green} {
		b, err := plotter.NewBarChart(vals[k], w)
		if err != nil {
			return err
		}
		b.Horizontal, b.Color, b.LineStyle.Width = true, c, 0
		b.Offset = w * vg.Length(1-k)
		p.Add(b)
		p.Legend.Add(loads[k].String(), b)
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.NominalY(names...)
	p.X.Min = 0
	return p.Save(9*vg.Inch, vg.Length(1.2+0.6*float64(len(names)))*vg.Inch, path)
}

func shortName(method string) string {
	for _, m := range allMethods(config{}, &bins{}) {
		if m.name == method {
			return m.short
		}
	}
	return method
}

// plotTimeline draws one reload under load, in 10 ms bins: requests/s
// answered by the old and the new version, and failures/s, for the naive
// stop-then-start and for hotswap. It returns false when neither ran.
func plotTimeline(r *report, path string) (bool, error) {
	var rows [][]*plot.Plot
	for _, run := range r.Runs {
		if run.KeepAlive || len(run.t0) == 0 || (run.Method != allMethods(config{}, &bins{})[0].name && run.Method != "hotswap, shared mode") {
			continue
		}
		rows = append(rows, []*plot.Plot{timeline(run)})
	}
	if len(rows) == 0 {
		return false, nil
	}
	width, height := 9*vg.Inch, vg.Length(len(rows))*3*vg.Inch
	img := vgimg.New(width, height)
	dc := draw.New(img)
	t := draw.Tiles{Rows: len(rows), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4), PadY: vg.Points(16), PadLeft: vg.Points(4), PadRight: vg.Points(8)}
	canvases := plot.Align(rows, t, dc)
	for i := range rows {
		rows[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return false, err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return false, err
	}
	return true, f.Close()
}

const (
	binWidth = 10 * time.Millisecond
	before   = 300 * time.Millisecond
	after    = 900 * time.Millisecond
)

// timeline plots the middle restart of run.
func timeline(run restartRun) *plot.Plot {
	k := len(run.t0) / 2
	t0 := run.t0[k]
	oldV, newV := version(k+1), version(k+2)
	n := int((before + after) / binWidth)
	oldC, newC, failC := make([]float64, n), make([]float64, n), make([]float64, n)
	for _, s := range run.samples {
		end := s.Start.Add(s.Dur)
		i := int((end.Sub(t0) + before) / binWidth)
		if end.Before(t0.Add(-before)) || i >= n {
			continue
		}
		switch {
		case s.Err != "":
			failC[i]++
		case s.Version == oldV:
			oldC[i]++
		case s.Version == newV:
			newC[i]++
		}
	}
	p := plot.New()
	p.Title.Text = run.Method + ": restart " + newV + " under load (new connection per request)"
	p.X.Label.Text = "ms since the restart was asked for"
	p.Y.Label.Text = "per second (10 ms bins)"
	for _, s := range []struct {
		label string
		c     []float64
		col   color.Color
	}{{"answered by " + oldV, oldC, blue}, {"answered by " + newV, newC, green}, {"failed", failC, red}} {
		xy := make(plotter.XYs, n)
		for i := range n {
			xy[i].X = float64(time.Duration(i)*binWidth-before) / float64(time.Millisecond)
			xy[i].Y = s.c[i] * float64(time.Second/binWidth)
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			continue
		}
		l.Color = s.col
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.label, l)
	}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Y.Min = 0
	return p
}
