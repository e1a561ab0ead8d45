package supervisor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hotswap-dev/hotswap/fdpass"
)

// podmanHook makes every generation of a `podman run` command a container
// hotswap knows (podmanargs.go says what is refused and why):
//
//   - HOTSWAP_GENERATION is passed into the container (--env NAME takes
//     podman's value);
//   - the listeners need nothing: the exec shim sets LISTEN_PID to the pid
//     of podman, which then preserves LISTEN_FDS descriptors by itself
//     and sets LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID=1 inside;
//   - it adds --cidfile, --conmon-pidfile and --pidfile in the run
//     directory: the container id is shown in status; conmon, whose
//     children are the container's processes, is what a drain looks at
//     for open connections (container_linux.go);
//   - with --ready notify it adds --sdnotify=container: podman forwards
//     the server's READY=1 from conmon after naming it with MAINPID=,
//     which the notify socket credits;
//   - a stop signal goes to podman, whose signal proxy hands it to the
//     server; after the drain timeout the container's init is SIGKILLed;
//     once podman has exited, a container it left behind (podman itself
//     was killed) is SIGKILLed too, and conmon's cleanup removes it;
//   - a generation has exited only once conmon has: conmon keeps a copy
//     of the listeners for the container's life and then runs podman's
//     cleanup, 1.5-2s after podman run exits on this machine kind, and a
//     reuseport socket leaves its group only with its last copy.
type podmanHook struct {
	s   *Supervisor
	run podmanRun
}

func newPodmanHook(s *Supervisor, run podmanRun) *podmanHook {
	return &podmanHook{s: s, run: run}
}

// paths are generation id's --cidfile, --conmon-pidfile and --pidfile.
func (h *podmanHook) paths(id int) (cid, conmon, pid string) {
	base := filepath.Join(h.s.runDir, "container-"+strconv.Itoa(id))
	return base + ".cid", base + ".conmon", base + ".pid"
}

// args inserts hotswap's flags after "run" in generation id's argv.
func (h *podmanHook) args(id int, argv []string) []string {
	cid, conmon, pid := h.paths(id)
	extra := []string{"--cidfile", cid, "--conmon-pidfile", conmon, "--pidfile", pid, "--env", fdpass.Generation}
	if h.s.cfg.Ready.NeedsNotify() && !h.run.has("sdnotify") {
		extra = append(extra, "--sdnotify=container")
	}
	at := h.run.run + 1
	out := append([]string{}, argv[:at]...)
	out = append(out, extra...)
	return append(out, argv[at:]...)
}

func (h *podmanHook) before(int, *exec.Cmd) error { return nil }

func (h *podmanHook) after(g *gen) {
	extra := len(g.argv) - len(h.s.cfg.Command)
	c := &container{image: g.argv[h.run.image+extra]}
	c.cidfile, c.conmonfile, c.pidfile = h.paths(g.id)
	if name, ok := h.run.flags["name"]; ok {
		c.name = nameOf(g.argv[h.run.run+1:h.run.image+extra], name)
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
