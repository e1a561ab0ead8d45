package supervisor

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

// Reaper timing.
const (
	// reapInterval is how often the reaper looks for zombies. A zombie
	// costs a pid slot and a few hundred bytes until then.
	reapInterval = 100 * time.Millisecond
	// ownerGrace is how long a zombie in hotswap's own process group (a
	// child that another part of hotswap started and will wait for) is
	// left to its owner before the reaper takes it.
	ownerGrace = 2 * time.Second
)

// reaper adopts and reaps orphaned descendants when hotswap is a
// subreaper (PR_SET_CHILD_SUBREAPER) or pid 1.
//
// os/exec reaps each generation itself (cmd.Wait on its pidfd), and other
// parts of hotswap reap the children they start (exec: readiness probes,
// the new hotswap of a self-upgrade). A wait4(-1) loop would steal their
// exit statuses: cmd.Wait would fail with ECHILD. So the reaper peeks with
// waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT), which names a zombie without
// reaping it, and reaps that pid alone only when nobody else will:
//
//   - a live generation (known from after): left to its cmd.Wait;
//   - any zombie while a generation is being started (between before and
//     after, when its pid is not known yet): left until the start ends;
//   - a zombie in hotswap's own process group: every generation has a
//     group of its own (Setpgid), so this is a child some other part of
//     hotswap started; left to its owner for ownerGrace;
//   - anything else is an orphan, reaped at once.
//
// waitid(P_ALL) reports one zombie at a time and returns at once while one
// is pending, so the reaper polls on a timer rather than blocking in
// waitid: a blocking waitid could not be interrupted when Run returns, and
// trapping SIGCHLD is for cmd/hotswap, not a library.
type reaper struct {
	s      *Supervisor
	pgid   int       // hotswap's own process group
	pidfds bool      // os/exec holds a pidfd for every child it started
	set    bool      // PR_SET_CHILD_SUBREAPER done; run loop only
	runs   sync.Once // starts the polling goroutine
	reaped int       // orphans reaped; reaper goroutine only

	mu       sync.Mutex // guards the fields below
	live     map[int]*gen
	starting int // generations between before and after/abort
}

func newReaper(s *Supervisor) (*reaper, error) {
	return &reaper{s: s, pgid: syscall.Getpgrp(), pidfds: pidfdsWork(), live: map[int]*gen{}}, nil
}

func (r *reaper) before(id int, cmd *exec.Cmd) error {
	if !r.set {
		err := sys.Retry(func() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
		if err != nil {
			return fmt.Errorf("become subreaper: %w", os.NewSyscallError("prctl", err))
		}
		r.set = true
	}
	r.mu.Lock()
	r.starting++
	r.mu.Unlock()
	return nil
}

func (r *reaper) after(g *gen) {
	r.mu.Lock()
	r.starting--
	r.live[g.pid] = g
	r.mu.Unlock()
	r.runs.Do(func() { r.s.wg.Go(r.run) })
}

func (r *reaper) abort(id int) {
	r.mu.Lock()
	r.starting--
	r.mu.Unlock()
}

// run reaps orphans until the supervisor is done and its last generation
// has exited, then sweeps once more.
func (r *reaper) run() {
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	seen := map[int]time.Time{} // own-group zombies, when first seen
	for {
		r.sweep(seen)
		select {
		case <-t.C:
			continue
		case <-r.s.done:
		}
		if r.idle() {
			r.sweep(seen)
			r.s.log.Debug("reaper stopped", "reaped", r.reaped)
			return
		}
		<-t.C
	}
}

// idle reports whether no generation is live or starting.
func (r *reaper) idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruneLocked()
	return len(r.live) == 0 && r.starting == 0
}

// sweep reaps orphan zombies until the next pending one is not an orphan.
// It is bounded: every round either reaps a process or returns.
func (r *reaper) sweep(seen map[int]time.Time) {
	for {
		pid, ok := peekZombie()
		if !ok || !r.orphan(pid, seen) {
			return
		}
		delete(seen, pid)
		if ws, ok := reapPid(pid); ok {
			r.reaped++
			r.s.log.Debug("reaped orphan", "pid", pid, "status", describeWait(ws))
		}
	}
}

// orphan decides whether the zombie pid belongs to nobody else. Where
// os/exec holds a pidfd per child (Linux 5.4 and later), that decides
// exactly: every process hotswap started and will wait for (a generation,
// an exec: probe, a self-upgrade's new hotswap) has one from the moment of
// its clone until it is reaped, and an orphan never has. An exec: probe
// runs in a process group of its own, so without this the group rule below
// took it for an orphan and stole its exit status (issue 15, item 14).
func (r *reaper) orphan(pid int, seen map[int]time.Time) bool {
	if r.pidfds {
		if held, err := heldPidfds(); err == nil {
			return !held[pid]
		}
	}
	r.mu.Lock()
	r.pruneLocked()
	_, isGen := r.live[pid]
	starting := r.starting > 0
	r.mu.Unlock()
	if isGen || starting {
		return false
	}
	pg, err := unix.Getpgid(pid)
	if err != nil || pg != r.pgid {
		return true
	}
	first, ok := seen[pid]
	if !ok {
		seen[pid] = time.Now()
		return false
	}
	if time.Since(first) < ownerGrace {
		return false
	}
	r.s.log.Warn("reaping a child of hotswap nobody waited for", "pid", pid, "after", ownerGrace)
	return true
}

// pruneLocked forgets generations that have been reaped by their cmd.Wait.
func (r *reaper) pruneLocked() {
	for pid, g := range r.live {
		select {
		case <-g.exited:
			delete(r.live, pid)
		default:
		}
	}
}

// siginfoChild is the SIGCHLD view of Linux's 128-byte siginfo_t: si_pid
// is the first field of the union after signo, errno and code, and the
// union is pointer-aligned, so it starts at byte 16 on 64-bit systems and
// at byte 12 on 32-bit ones.
type siginfoChild struct {
	Signo, Errno, Code int32
	_                  [siginfoPad]byte
	Pid                int32
	UID                uint32
	Status             int32
	_                  [siginfoSize - 24 - siginfoPad]byte
}

const (
	siginfoSize = 128
	siginfoPad  = unsafe.Alignof(uintptr(0)) - 4 // 4 on 64-bit, 0 on 32-bit
)

// siginfoChild is exactly as large as unix.Siginfo, which waitid fills:
// either difference below would be a negative constant otherwise.
const (
	_ = unsafe.Sizeof(unix.Siginfo{}) - unsafe.Sizeof(siginfoChild{})
	_ = unsafe.Sizeof(siginfoChild{}) - unsafe.Sizeof(unix.Siginfo{})
)

// peekZombie names one exited child without reaping it.
func peekZombie() (int, bool) {
	var si siginfoChild
	err := sys.Retry(func() error {
		return unix.Waitid(unix.P_ALL, 0, (*unix.Siginfo)(unsafe.Pointer(&si)), unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	})
	if err != nil || si.Pid == 0 {
		return 0, false // ECHILD (no children) or none has exited
	}
	return int(si.Pid), true
}

// reapPid reaps pid alone, never blocking.
func reapPid(pid int) (syscall.WaitStatus, bool) {
	var ws syscall.WaitStatus
	got, err := sys.RetryInt(func() (int, error) { return syscall.Wait4(pid, &ws, syscall.WNOHANG, nil) })
	if err != nil && !errors.Is(err, syscall.ECHILD) {
		return ws, false
	}
	return ws, got == pid
}

func describeWait(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + signalName(ws.Signal())
	}
	return fmt.Sprintf("status %d", ws.ExitStatus())
}

// pidfdsWork reports whether this kernel gives pidfds, which os/exec then
// holds for every child it starts (it checks the same way).
func pidfdsWork() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// heldPidfds returns the pids this process holds a pidfd for, from the
// fdinfo of each anon_inode:[pidfd] descriptor, as waitid names them: in
// hotswap's own pid namespace, which is not /proc's when hotswap is pid 1
// of a namespace under the host's /proc (sys.ProcPids). Compared with
// /proc's pids, no generation's zombie matched, and the reaper took it
// from its cmd.Wait.
func heldPidfds() (map[int]bool, error) {
	pids, err := sys.NewProcPids()
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	held := map[int]bool{}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || l != "anon_inode:[pidfd]" {
			continue
		}
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pid, _, ok := pids.Pidfd(fd); ok {
			held[pid] = true
		}
	}
	return held, nil
}
