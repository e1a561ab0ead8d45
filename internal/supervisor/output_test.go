package supervisor

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

type failWriter struct{ n int }

func (f *failWriter) Write(b []byte) (int, error) { f.n++; return 0, errors.New("broken pipe") }

// TestPrefixWriter: lines get the prefix whole; a line without a newline
// is held only up to maxOutputLine, then written in pieces (issue 15, item
// 13: it was held without bound); a failing destination is never the
// generation's error (item 4: os/exec would close the pipe and the
// generation die of SIGPIPE).
func TestPrefixWriter(t *testing.T) {
	var out bytes.Buffer
	p := &prefixWriter{w: &out, prefix: []byte("[1] ")}
	p.Write([]byte("a\nb"))
	p.Write([]byte("c\n\nd"))
	p.Flush()
	if got, want := out.String(), "[1] a\n[1] bc\n[1] \n[1] d\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	out.Reset()
	chunk := bytes.Repeat([]byte("x"), 1000)
	for range 10_000 { // 10 MB without a newline
		if n, err := p.Write(chunk); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if cap(p.buf) > 2*maxOutputLine {
		t.Errorf("unfinished line buffer grew to %d bytes, want at most about %d", cap(p.buf), maxOutputLine)
	}
	p.Flush()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != (10_000_000+maxOutputLine-1)/maxOutputLine {
		t.Errorf("10 MB in %d lines, want pieces of %d bytes", len(lines), maxOutputLine)
	}
	total := 0
	for _, l := range lines {
		if !strings.HasPrefix(l, "[1] ") || len(l) > len("[1] ")+maxOutputLine {
			t.Fatalf("line of %d bytes starting %q", len(l), l[:10])
		}
		total += len(l) - len("[1] ")
	}
	if total != 10_000_000 {
		t.Errorf("%d bytes written, want every one of 10000000", total)
	}

	f := &failWriter{}
	p = &prefixWriter{w: f, prefix: []byte("[2] ")}
	if n, err := p.Write([]byte("lost\n")); n != 5 || err != nil || f.n != 1 {
		t.Errorf("Write to a broken destination = %d, %v (%d tries), want 5, nil", n, err, f.n)
	}
}
