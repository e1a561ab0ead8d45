package supervisor

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"sync"
)

// maxOutputLine bounds the unfinished line a prefixWriter holds: a longer
// line is written in pieces of this size, each on a line of its own with
// the prefix, so a generation that writes without newlines cannot make
// hotswap's memory grow.
const maxOutputLine = 64 << 10

// prefixWriter writes each line of a generation's output to w with a
// prefix, whole lines at a time, so that lines of generations that run at
// once do not interleave mid-line.
//
// It never fails: when w does (hotswap's stderr is a pipe whose reader
// went away), the output is dropped and the generation goes on writing,
// as it would to its own stderr without --output-prefix. An error here
// would make os/exec close the pipe, and the generation's next write
// would end it with SIGPIPE.
type prefixWriter struct {
	w      io.Writer
	prefix []byte

	mu  sync.Mutex // guards buf
	buf []byte     // an unfinished line, at most maxOutputLine bytes
}

// outputPrefix expands the --output-prefix template for generation id.
func outputPrefix(tmpl string, id int) string {
	return strings.ReplaceAll(tmpl, "{gen}", strconv.Itoa(id))
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for rest := b; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			n := min(len(rest), maxOutputLine-len(p.buf))
			p.buf, rest = append(p.buf, rest[:n]...), rest[n:]
			if len(p.buf) == maxOutputLine {
				out = p.line(out, nil)
			}
			continue
		}
		out = p.line(out, rest[:i+1])
		rest = rest[i+1:]
	}
	if len(out) > 0 {
		_, _ = p.w.Write(out) // see the type's comment
	}
	return len(b), nil
}

// line appends to out the prefix, the unfinished line and tail, ending in
// a newline, and empties the unfinished line.
func (p *prefixWriter) line(out, tail []byte) []byte {
	out = append(append(append(out, p.prefix...), p.buf...), tail...)
	if len(tail) == 0 {
		out = append(out, '\n')
	}
	p.buf = p.buf[:0]
	return out
}

// Flush writes an unfinished last line.
func (p *prefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		_, _ = p.w.Write(p.line(nil, nil))
	}
}
