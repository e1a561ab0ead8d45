package supervisor

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/sys"
)

// containerPoll is how often a starting container's cidfile and conmon
// pidfile are looked for; podman writes both within its first 100ms.
const containerPoll = 10 * time.Millisecond

// containerExitWait bounds how long podman may take to remove a container
// that was killed and exit, before its own process group is killed.
const containerExitWait = 10 * time.Second

// podmanHook makes every generation of a `podman run` command a container
// hotswap knows (podmanargs.go says what is refused and why):
//
//   - HOTSWAP_GENERATION is passed into the container (--env NAME takes
//     podman's value);
//   - the listeners need nothing: the exec shim sets LISTEN_PID to the pid
//     of podman, which then preserves LISTEN_FDS descriptors by itself
//     and sets LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID=1 inside;
//   - it adds --cidfile, --conmon-pidfile and --pidfile in the run
//     directory: the
//     container id is shown in status, and conmon, whose children are the
//     container's processes, is what a drain looks at for open
//     connections and what a stop that times out kills below;
//   - with --ready notify it adds --sdnotify=container: podman forwards
//     the server's READY=1 from conmon after naming it with MAINPID=,
//     which the notify socket credits;
//   - a stop signal goes to podman, whose signal proxy hands it to the
//     server; after the drain timeout the container's init is SIGKILLed;
//     once podman has exited, a container it left behind (podman itself
//     was killed) is SIGKILLed too, and conmon's cleanup removes it.
type podmanHook struct {
	s   *Supervisor
	run podmanRun
}

// container is what hotswap knows of a generation's container. The
// discovery goroutine fills id and conmon; the run loop reads them.
type container struct {
	image, name string
	cidfile     string
	conmonfile  string
	pidfile     string

	mu     sync.Mutex
	id     string
	conmon int // conmon's pid, 0 until known
	init   int // the container's first process (host pid), 0 until known
}

func newPodmanHook(s *Supervisor, run podmanRun) *podmanHook {
	return &podmanHook{s: s, run: run}
}

// paths are generation id's --cidfile, --conmon-pidfile and --pidfile.
func (h *podmanHook) paths(id int) (cid, conmon, pid string) {
	base := filepath.Join(h.s.runDir, "container-"+strconv.Itoa(id))
	return base + ".cid", base + ".conmon", base + ".pid"
}

// before inserts hotswap's flags after "run" (cmd.Args[0] is the shim's).
func (h *podmanHook) before(id int, cmd *exec.Cmd) error {
	cid, conmon, pid := h.paths(id)
	extra := []string{"--cidfile", cid, "--conmon-pidfile", conmon, "--pidfile", pid, "--env", fdpass.Generation}
	if h.s.cfg.Ready.NeedsNotify() && !h.run.has("sdnotify") {
		extra = append(extra, "--sdnotify=container")
	}
	at := 1 + h.run.run + 1
	args := append([]string{}, cmd.Args[:at]...)
	args = append(args, extra...)
	cmd.Args = append(args, cmd.Args[at:]...)
	return nil
}

func (h *podmanHook) after(g *gen) {
	argv := g.cmd.Args[1:]
	extra := len(g.cmd.Args) - 1 - len(h.s.cfg.Command)
	c := &container{image: argv[h.run.image+extra]}
	c.cidfile, c.conmonfile, c.pidfile = h.paths(g.id)
	if name, ok := h.run.flags["name"]; ok {
		c.name = nameOf(argv[h.run.run+1:h.run.image+extra], name)
	}
	g.ctr = c
	h.s.wg.Go(func() { c.discover(g.exited) })
}

func (h *podmanHook) abort(id int) {
	cid, conmon, pid := h.paths(id)
	os.Remove(cid)
	os.Remove(conmon)
	os.Remove(pid)
}

// nameOf returns the value of --name in the expanded run flags (it may
// hold {gen}); raw is the unexpanded value, the answer when not found.
func nameOf(flags []string, raw string) string {
	for i, a := range flags {
		if v, ok := strings.CutPrefix(a, "--name="); ok {
			raw = v
		} else if a == "--name" && i+1 < len(flags) {
			raw = flags[i+1]
		}
	}
	return raw
}

// discover reads the container id, conmon's pid and the container's pid
// once podman has written them, or gives up when the generation exits.
func (c *container) discover(exited <-chan struct{}) {
	t := time.NewTicker(containerPoll)
	defer t.Stop()
	for {
		id, _ := os.ReadFile(c.cidfile)
		conmon, init := readPID(c.conmonfile), readPID(c.pidfile)
		if len(id) > 0 && conmon > 0 && init > 0 {
			c.mu.Lock()
			c.id, c.conmon, c.init = strings.TrimSpace(string(id)), conmon, init
			c.mu.Unlock()
			return
		}
		select {
		case <-exited:
			return
		case <-t.C:
		}
	}
}

func readPID(path string) int {
	b, _ := os.ReadFile(path)
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0
	}
	return n
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
// was still running. It checks that the pid is still conmon's child, not
// a pid reused since the container exited.
func (c *container) kill() bool {
	c.mu.Lock()
	conmon, init := c.conmon, c.init
	c.mu.Unlock()
	if init == 0 || !slices.Contains(sys.Children(conmon), init) {
		return false
	}
	return syscall.Kill(init, syscall.SIGKILL) == nil
}

// cleanup runs once podman has exited: a container still running (podman
// was killed) is killed, and hotswap's files are removed.
func (c *container) cleanup() bool {
	killed := c.kill()
	os.Remove(c.cidfile)
	os.Remove(c.conmonfile)
	os.Remove(c.pidfile)
	return killed
}

// roots are the pids whose process trees hold g's connections: g itself
// and, for a container, conmon (the container's processes are its).
func (g *gen) roots() []int {
	if _, conmon := g.ctr.known(); conmon != 0 {
		return []int{g.pid, conmon}
	}
	return []int{g.pid}
}
