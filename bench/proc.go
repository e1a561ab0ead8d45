package main

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

// line is one line of a child's output and when the benchmark read it.
type line struct {
	at   time.Time
	text string
	ev   map[string]any // the line as hclog JSON, or nil
}

func (l line) msg() string { s, _ := l.ev["@message"].(string); return s }

func (l line) gen() int {
	if f, ok := l.ev["gen"].(float64); ok {
		return int(f)
	}
	return -1
}

// proc is a child process whose stdout and stderr lines are kept with the
// time they arrived. It is signalled by pid only.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex // guards the fields below
	lines []line
	cond  *sync.Cond
}

// startProc starts cmd with its output captured. The child gets SIGKILL if
// the benchmark dies first.
func startProc(cmd *exec.Cmd) (*proc, error) {
	p := &proc{cmd: cmd, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = w, w
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go p.read(r)
	go func() {
		cmd.Wait()
		p.mu.Lock()
		close(p.done)
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) read(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := line{at: time.Now(), text: sc.Text()}
		var ev map[string]any
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			l.ev = ev
		}
		p.mu.Lock()
		p.lines = append(p.lines, l)
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// waitLine waits up to d for a line from index from on that match accepts.
func (p *proc) waitLine(d time.Duration, from int, match func(line) bool) (line, error) {
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
			return line{}, fmt.Errorf("pid %d exited: %s", p.pid(), p.tailLocked())
		default:
		}
		if time.Now().After(deadline) {
			return line{}, fmt.Errorf("pid %d: no such line within %v: %s", p.pid(), d, p.tailLocked())
		}
		p.cond.Wait()
	}
}

// mark returns the number of lines so far, for waitLine's from.
func (p *proc) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

func (p *proc) tailLocked() string {
	var b []string
	for _, l := range p.lines[max(0, len(p.lines)-5):] {
		b = append(b, l.text)
	}
	return strings.Join(b, " | ")
}

// event waits for hotswap's JSON event msg of generation gen.
func (p *proc) event(d time.Duration, from int, msg string, gen int) (line, error) {
	return p.waitLine(d, from, func(l line) bool { return l.msg() == msg && (gen < 0 || l.gen() == gen) })
}

func (p *proc) signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// wait waits up to d for the process to exit.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop sends sig, waits up to d, then SIGKILLs.
func (p *proc) stop(sig syscall.Signal, d time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.signal(sig)
	if !p.wait(d) {
		p.cmd.Process.Kill()
		<-p.done
	}
}
