package main

import (
	"strings"
	"testing"
)

// The histogram's buckets are cumulative, le last among the labels, and
// label values are escaped as the text format wants.
func TestExpositionHistogram(t *testing.T) {
	h := newHistogram("x_seconds", "An x.", "outcome", []float64{.1, 1})
	for _, v := range []float64{.05, .1, .5, 2} {
		h.observe("ok", v)
	}
	h.observe(`a"b\c`, 1)
	var b strings.Builder
	if err := writeFamilies(&b, []family{h.family()}); err != nil {
		t.Fatal(err)
	}
	want := `# HELP x_seconds An x.
# TYPE x_seconds histogram
x_seconds_bucket{outcome="ok",le="0.1"} 2
x_seconds_bucket{outcome="ok",le="1"} 3
x_seconds_bucket{outcome="ok",le="+Inf"} 4
x_seconds_sum{outcome="ok"} 2.65
x_seconds_count{outcome="ok"} 4
x_seconds_bucket{outcome="a\"b\\c",le="0.1"} 0
x_seconds_bucket{outcome="a\"b\\c",le="1"} 1
x_seconds_bucket{outcome="a\"b\\c",le="+Inf"} 1
x_seconds_sum{outcome="a\"b\\c"} 1
x_seconds_count{outcome="a\"b\\c"} 1
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
