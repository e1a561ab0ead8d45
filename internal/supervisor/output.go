package supervisor

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"sync"
)

// prefixWriter writes each line of a generation's output to w with a
// prefix, whole lines at a time, so that lines of generations that run at
// once do not interleave mid-line.
type prefixWriter struct {
	w      io.Writer
	prefix []byte

	mu  sync.Mutex // guards buf
	buf []byte     // an unfinished line
}

// outputPrefix expands the --output-prefix template for generation id.
func outputPrefix(tmpl string, id int) string {
	return strings.ReplaceAll(tmpl, "{gen}", strconv.Itoa(id))
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	var out []byte
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		out = append(append(out, p.prefix...), p.buf[:i+1]...)
		p.buf = p.buf[i+1:]
	}
	if len(out) > 0 {
		if _, err := p.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// Flush writes an unfinished last line.
func (p *prefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		p.w.Write(append(append(append([]byte(nil), p.prefix...), p.buf...), '\n'))
		p.buf = nil
	}
}
