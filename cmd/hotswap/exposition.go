package main

import (
	"bufio"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// The Prometheus text exposition format (version 0.0.4), written here
// rather than with client_golang: hotswap exports a few families, and the
// library with its protobuf dependency was about 2 MB of hotswap's RSS
// (its package initialisation touches the pages whether --metrics is on
// or not).

// metricsContentType is what a scrape's response says it is.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// family is one metric family of a scrape.
type family struct {
	name, help, typ string // typ: gauge, counter, histogram, summary
	samples         []sample
}

// sample is one line of a family: name plus suffix (_bucket, _sum, ...),
// label pairs, value.
type sample struct {
	suffix string
	labels []string // name, value, name, value, ...
	value  float64
}

func (f *family) add(v float64, labels ...string) {
	f.samples = append(f.samples, sample{labels: labels, value: v})
}

// writeFamilies writes fs in the text format: HELP and TYPE, then each
// sample with its labels sorted by name and a bucket's le (a quantile)
// last, as client_golang does.
func writeFamilies(w io.Writer, fs []family) error {
	b := bufio.NewWriter(w)
	for _, f := range fs {
		if len(f.samples) == 0 {
			continue // as client_golang: a family without series is left out
		}
		b.WriteString("# HELP " + f.name + " " + escapeHelp(f.help) + "\n")
		b.WriteString("# TYPE " + f.name + " " + f.typ + "\n")
		for _, s := range f.samples {
			b.WriteString(f.name + s.suffix)
			writeLabels(b, s.labels)
			b.WriteString(" " + formatValue(s.value) + "\n")
		}
	}
	return b.Flush()
}

func writeLabels(b *bufio.Writer, kv []string) {
	if len(kv) == 0 {
		return
	}
	idx := make([]int, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		idx = append(idx, i)
	}
	last := func(name string) bool { return name == "le" || name == "quantile" } // a bucket's bound goes last
	slices.SortFunc(idx, func(a, c int) int {
		if la, lc := last(kv[a]), last(kv[c]); la != lc {
			if la {
				return 1
			}
			return -1
		}
		return strings.Compare(kv[a], kv[c])
	})
	b.WriteByte('{')
	for n, i := range idx {
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i] + `="` + escapeLabel(kv[i+1]) + `"`)
	}
	b.WriteByte('}')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, +1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// histogram is a Prometheus histogram with fixed buckets, by label value
// (one label, or none when label is "").
type histogram struct {
	name, help, label string
	buckets           []float64

	mu     sync.Mutex
	series map[string]*histSeries
	order  []string
}

type histSeries struct {
	counts []uint64 // per bucket, not cumulative
	count  uint64
	sum    float64
}

// newHistogram returns a histogram; without a label its one series is
// there, all zero, before the first observation.
func newHistogram(name, help, label string, buckets []float64) *histogram {
	h := &histogram{name: name, help: help, label: label, buckets: buckets, series: map[string]*histSeries{}}
	if label == "" {
		h.series[""] = &histSeries{counts: make([]uint64, len(buckets))}
		h.order = []string{""}
	}
	return h
}

// observe records v in the series of label value lv.
func (h *histogram) observe(lv string, v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.series[lv]
	if s == nil {
		s = &histSeries{counts: make([]uint64, len(h.buckets))}
		h.series[lv] = s
		h.order = append(h.order, lv)
	}
	if i, _ := slices.BinarySearch(h.buckets, v); i < len(h.buckets) {
		s.counts[i]++
	}
	s.count++
	s.sum += v
}

// family returns the histogram as a family of cumulative buckets, sum and
// count per series.
func (h *histogram) family() family {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := family{name: h.name, help: h.help, typ: "histogram"}
	for _, lv := range h.order {
		s := h.series[lv]
		var base []string
		if h.label != "" {
			base = []string{h.label, lv}
		}
		var cum uint64
		for i, ub := range h.buckets {
			cum += s.counts[i]
			f.samples = append(f.samples, sample{suffix: "_bucket", labels: append(slices.Clone(base), "le", formatValue(ub)), value: float64(cum)})
		}
		f.samples = append(f.samples,
			sample{suffix: "_bucket", labels: append(slices.Clone(base), "le", "+Inf"), value: float64(s.count)},
			sample{suffix: "_sum", labels: base, value: s.sum},
			sample{suffix: "_count", labels: base, value: float64(s.count)})
	}
	return f
}
