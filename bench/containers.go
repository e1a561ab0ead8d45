package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// podmanRuntime is the OCI runtime of the container rows: crun fails on a
// hybrid cgroup layout, runc works.
const podmanRuntime = "/usr/sbin/runc"

// podmanBench makes the image of the container rows (a static goapp: no
// base image, no registry) and runs its containers with a label of the
// benchmark's own; close removes every container and the image.
type podmanBench struct {
	label, image string
}

func newPodmanBench(cfg config, b *bins) (_ *podmanBench, retErr error) {
	if _, err := exec.LookPath("podman"); err != nil {
		return nil, fmt.Errorf("podman not installed (make deps installs podman and runc): %w", err)
	}
	if _, err := os.Stat(podmanRuntime); err != nil {
		return nil, fmt.Errorf("runc not installed (make deps installs podman and runc): %w", err)
	}
	root, err := os.MkdirTemp(b.dir, "rootfs-")
	if err != nil {
		return nil, err
	}
	build := exec.Command("go", "build", "-o", filepath.Join(root, "goapp"), "./examples/goapp")
	build.Dir, build.Env = cfg.root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build static goapp: %w: %s", err, out)
	}
	id := fmt.Sprintf("hotswap-bench-%d", os.Getpid())
	p := &podmanBench{label: "hotswap-bench=" + id, image: "localhost/" + id + ":goapp"}
	imp := exec.Command("sh", "-c", `tar -C "$1" -c . | podman import --change 'ENTRYPOINT ["/goapp"]' - "$2"`, "sh", root, p.image)
	if out, err := imp.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("podman import %s: %w: %s", p.image, err, out)
	}
	return p, nil
}

// run is the command line of a container of the image with goapp's args:
// foreground, removed at exit, on the host's network, labelled, with
// explicit ulimits (podman's defaults are refused on some machines; no
// more open files than this process may have).
func (p *podmanBench) run(args ...string) []string {
	var nofile syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile)
	return append([]string{"podman", "--runtime", podmanRuntime, "run", "--rm", "--network", "host",
		"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile.Max, nofile.Max), "--ulimit", "nproc=4096:4096",
		"--label", p.label, p.image}, args...)
}

// startDirect runs goapp in a container alone, bound to addr by itself.
func (p *podmanBench) startDirect(v, addr string) (*proc, string, error) {
	argv := p.run("--version", v, "--listen", addr)
	c, err := startProc(exec.Command(argv[0], argv[1:]...))
	if err != nil {
		return nil, "", err
	}
	l, err := c.waitLine(30*time.Second, 0, func(l line) bool { return servingRE.MatchString(l.text) })
	if err != nil {
		c.stop(syscall.SIGTERM, 15*time.Second)
		return nil, "", fmt.Errorf("goapp container %s: %w", v, err)
	}
	return c, servingRE.FindStringSubmatch(l.text)[1], nil
}

// hotswap runs hotswap with each generation a container of the image.
func (p *podmanBench) hotswap(b *bins) *hotswapTarget {
	t := newHotswap(b, "")
	t.command = func(verFile string) []string {
		return p.run("--version", "{file:"+verFile+"}", "--notify")
	}
	return t
}

func (p *podmanBench) close() {
	out, _ := exec.Command("podman", "ps", "-a", "-q", "--filter", "label="+p.label).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		exec.Command("podman", append([]string{"rm", "-f", "-t", "0"}, ids...)...).Run()
	}
	exec.Command("podman", "rmi", "-f", p.image).Run()
}

// naivePodman is today's single-host container deploy: stop the old
// container (podman stop semantics: SIGTERM, goapp drains what it
// accepted), then run the new one on the same port. The port is closed in
// between.
type naivePodman struct {
	pm   *podmanBench
	addr string
	cur  *proc
}

func (t *naivePodman) start() (string, error) {
	p, addr, err := t.pm.startDirect("v1", "127.0.0.1:0")
	t.cur, t.addr = p, addr
	return addr, err
}

func (t *naivePodman) restart(n int) (time.Time, error) {
	t0 := time.Now()
	t.cur.stop(syscall.SIGTERM, 15*time.Second)
	p, _, err := t.pm.startDirect(version(n), t.addr)
	if err != nil {
		return t0, err
	}
	t.cur = p
	return t0, nil
}

func (t *naivePodman) close() {
	if t.cur != nil {
		t.cur.stop(syscall.SIGTERM, 15*time.Second)
	}
}
