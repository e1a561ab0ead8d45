// Package proc runs a child process and keeps every line it writes, with
// the time each arrived and, for hclog JSON lines, the parsed event; a
// caller waits for a line instead of sleeping. It is the process core of
// the end-to-end tests (internal/proctest wraps it for testing.TB) and of
// bench, and so does not import testing.
package proc

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Event is one JSON log line of hotswap.
type Event map[string]any

// Msg returns the message of the event.
func (e Event) Msg() string { s, _ := e["@message"].(string); return s }

// Int returns the integer field k, or -1.
func (e Event) Int(k string) int {
	if f, ok := e[k].(float64); ok {
		return int(f)
	}
	return -1
}

// Str returns the field k as a string.
func (e Event) Str(k string) string {
	if v, ok := e[k]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// Line is one line of output and when it was read.
type Line struct {
	At    time.Time
	Text  string
	Event Event // the line as hclog JSON, or nil
}

// Options say what [Start] captures.
type Options struct {
	// Stdout captures stdout lines too; otherwise stdout goes to
	// cmd.Stdout as set (nil discards it).
	Stdout bool
	// OnLine, if set, sees every captured line as it arrives.
	OnLine func(string)
}

// Proc is a running child process and the lines it wrote so far.
type Proc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	r       *os.File
	reading sync.WaitGroup

	mu    sync.Mutex // guards the fields below
	lines []Line
	cond  *sync.Cond
}

// Start starts cmd with its stderr (and with o.Stdout its stdout)
// captured through a pipe of its own: a grandchild that outlives the
// process may hold the pipe, and Wait does not depend on it.
func Start(cmd *exec.Cmd, o Options) (*Proc, error) {
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = w
	if o.Stdout {
		cmd.Stdout = w
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p.r = r
	p.reading.Go(func() { p.read(r, o.OnLine) })
	go func() { // ends when the process does
		cmd.Wait()
		p.mu.Lock()
		close(p.done)
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	return p, nil
}

func (p *Proc) read(r io.ReadCloser, onLine func(string)) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := Line{At: time.Now(), Text: sc.Text()}
		var e Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			l.Event = e
		}
		if onLine != nil {
			onLine(l.Text)
		}
		p.mu.Lock()
		p.lines = append(p.lines, l)
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// Cmd returns the command.
func (p *Proc) Cmd() *exec.Cmd { return p.cmd }

// Pid returns the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been waited for.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Lines returns every captured line so far.
func (p *Proc) Lines() []Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Line(nil), p.lines...)
}

// Mark returns the number of lines so far, for WaitLine's from.
func (p *Proc) Mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// WaitLine waits up to d for a line, from index from on, that match
// accepts. It fails early once the process has exited.
func (p *Proc) WaitLine(d time.Duration, from int, match func(Line) bool) (Line, error) {
	deadline := time.Now().Add(d)
	t := time.AfterFunc(d, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := from; ; {
		for ; i < len(p.lines); i++ {
			if match(p.lines[i]) {
				return p.lines[i], nil
			}
		}
		select {
		case <-p.done:
			return Line{}, fmt.Errorf("pid %d exited: %s", p.Pid(), p.tailLocked())
		default:
		}
		if time.Now().After(deadline) {
			return Line{}, fmt.Errorf("pid %d: no such line within %v: %s", p.Pid(), d, p.tailLocked())
		}
		p.cond.Wait()
	}
}

// WaitEvent waits for hotswap's event msg that match accepts (nil
// accepts any).
func (p *Proc) WaitEvent(d time.Duration, from int, msg string, match func(Event) bool) (Line, error) {
	return p.WaitLine(d, from, func(l Line) bool {
		return l.Event != nil && l.Event.Msg() == msg && (match == nil || match(l.Event))
	})
}

func (p *Proc) tailLocked() string {
	var b []string
	for _, l := range p.lines[max(0, len(p.lines)-5):] {
		b = append(b, l.Text)
	}
	return strings.Join(b, " | ")
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits up to d for the process to exit; false if it still runs.
func (p *Proc) Wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// ExitCode is, once the process has exited, its exit status, 128+N when
// signal N killed it.
func (p *Proc) ExitCode() int {
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Stop sends sig unless the process has exited, waits up to d, then
// SIGKILLs it and waits.
func (p *Proc) Stop(sig syscall.Signal, d time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.Signal(sig)
	if !p.Wait(d) {
		p.cmd.Process.Kill()
		<-p.done
	}
}

// StopReading stops reading output within d even while a straggler holds
// the pipe open, and waits for the reader: no line is seen after it.
func (p *Proc) StopReading(d time.Duration) {
	p.r.SetReadDeadline(time.Now().Add(d))
	p.reading.Wait()
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
