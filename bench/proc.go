package main

import (
	"os/exec"
	"syscall"
	"time"

	core "github.com/hotswap-dev/hotswap/internal/proc"
)

// line is one line of a child's output and when the benchmark read it.
type line struct {
	at   time.Time
	text string
	ev   core.Event // the line as hclog JSON, or nil
}

func (l line) msg() string { return l.ev.Msg() }

func (l line) gen() int { return l.ev.Int("gen") }

// proc is a child process whose stdout and stderr lines are kept with the
// time they arrived (internal/proc). It is signalled by pid only.
type proc struct{ p *core.Proc }

// startProc starts cmd with its output captured. The child gets SIGKILL if
// the benchmark dies first.
func startProc(cmd *exec.Cmd) (*proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = dieWithParent()
	}
	p, err := core.Start(cmd, core.Options{Stdout: true})
	if err != nil {
		return nil, err
	}
	return &proc{p}, nil
}

func (p *proc) pid() int { return p.p.Pid() }

// waitLine waits up to d for a line from index from on that match accepts.
func (p *proc) waitLine(d time.Duration, from int, match func(line) bool) (line, error) {
	l, err := p.p.WaitLine(d, from, func(l core.Line) bool { return match(line{l.At, l.Text, l.Event}) })
	return line{l.At, l.Text, l.Event}, err
}

// mark returns the number of lines so far, for waitLine's from.
func (p *proc) mark() int { return p.p.Mark() }

// event waits for hotswap's JSON event msg of generation gen.
func (p *proc) event(d time.Duration, from int, msg string, gen int) (line, error) {
	return p.waitLine(d, from, func(l line) bool { return l.msg() == msg && (gen < 0 || l.gen() == gen) })
}

func (p *proc) signal(sig syscall.Signal) error { return p.p.Signal(sig) }

// stop sends sig, waits up to d, then SIGKILLs.
func (p *proc) stop(sig syscall.Signal, d time.Duration) { p.p.Stop(sig, d) }
