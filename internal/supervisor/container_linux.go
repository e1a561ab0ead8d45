package supervisor

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/sys"
	"golang.org/x/sys/unix"
)

const (
	// containerPoll is how often a starting container's files are looked
	// for; podman writes them within its first 100ms.
	containerPoll = 10 * time.Millisecond
	// containerExitWait bounds how long podman may take to remove a
	// container that was killed and exit, and conmon to exit after it.
	containerExitWait = 10 * time.Second
)

// container is what hotswap knows of a `podman run` generation's
// container (podman.go). The discovery goroutine fills in what podman
// writes; the run loop and the stopping goroutines read it.
type container struct {
	image, name string
	cidfile     string
	conmonfile  string
	pidfile     string

	mu     sync.Mutex // guards the fields below
	id     string
	conmon int // conmon's pid, 0 until known
	pidfd  int // conmon's pidfd, valid once conmon is known
	init   int // the container's first process (host pid)
	done   bool
}

// discover reads the container id, conmon's pid and the container's pid
// once podman has written them, or gives up when the generation exits.
func (c *container) discover(exited <-chan struct{}) {
	t := time.NewTicker(containerPoll)
	defer t.Stop()
	for !c.look() {
		select {
		case <-exited:
			return
		case <-t.C:
		}
	}
}

// look reads podman's files once and reports whether there is nothing
// more to look for: all is known, or the container was cleaned up.
func (c *container) look() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done || c.conmon != 0 {
		return true
	}
	id, _ := os.ReadFile(c.cidfile)
	conmon, init := readPID(c.conmonfile), readPID(c.pidfile)
	if len(id) == 0 || conmon == 0 || init == 0 {
		return false
	}
	// A pidfd names this conmon even once its pid is reused; it is opened
	// while the pidfile is fresh and checked to be a conmon after.
	fd, err := unix.PidfdOpen(conmon, 0)
	if err == nil && !isConmon(conmon) {
		unix.Close(fd)
		err = unix.ESRCH
	}
	if err != nil {
		return false
	}
	c.id, c.conmon, c.init, c.pidfd = strings.TrimSpace(string(id)), conmon, init, fd
	return true
}

func readPID(path string) int {
	b, _ := os.ReadFile(path)
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// isConmon reports whether pid is a conmon.
func isConmon(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return err == nil && strings.TrimSpace(string(b)) == "conmon"
}

// known returns the container id and conmon's pid, empty until known.
func (c *container) known() (string, int) {
	if c == nil {
		return "", 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id, c.conmon
}

// kill SIGKILLs the container's first process (the rest of the container
// dies with it: it is pid 1 of its pid namespace) and reports whether it
// was still running. The pid must still be conmon's child, not a pid
// reused since the container exited.
func (c *container) kill() bool {
	c.mu.Lock()
	conmon, init := c.conmon, c.init
	c.mu.Unlock()
	if init == 0 || !slices.Contains(sys.Children(conmon), init) {
		return false
	}
	return unix.Kill(init, unix.SIGKILL) == nil
}

// cleanup runs once podman has exited: a container still running (podman
// was killed) is killed; then it waits up to containerExitWait for conmon
// to exit, since conmon holds a copy of the listeners until then, and
// removes hotswap's files. It reports whether it killed the container and
// whether conmon outlived the wait.
func (c *container) cleanup() (killed, lingered bool) {
	c.look()
	killed = c.kill()
	c.mu.Lock()
	c.done = true
	fd, known := c.pidfd, c.conmon != 0
	c.mu.Unlock()
	if known {
		lingered = !waitExit(fd, containerExitWait)
	}
	os.Remove(c.cidfile)
	os.Remove(c.conmonfile)
	os.Remove(c.pidfile)
	return killed, lingered
}

// snapshot is [reuse.Snapshot] of the process trees that hold g's
// connections: g's own and, for a container, conmon's (the container's
// processes are conmon's descendants, not podman's).
func (g *gen) snapshot(ports []reuse.Port, skip map[uint64]bool) (*reuse.ConnSet, error) {
	roots := []int{g.pid}
	if _, conmon := g.ctr.known(); conmon != 0 {
		roots = append(roots, conmon)
	}
	set := &reuse.ConnSet{}
	for _, pid := range roots {
		s, err := reuse.Snapshot(pid, ports, skip)
		if err != nil {
			return nil, err
		}
		set.Conns = append(set.Conns, s.Conns...)
	}
	return set, nil
}
