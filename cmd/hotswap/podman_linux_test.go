package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
)

// podmanRuntime is the OCI runtime of the container tests: crun fails on
// this machine kind's hybrid cgroup layout, runc works.
const podmanRuntime = "/usr/sbin/runc"

// podman makes images from a rootfs directory (there is no registry) and
// runs containers with a label of its own, and removes every container
// and image it made when the test ends.
type podman struct {
	t      *testing.T
	label  string // hotswap-test=<unique>
	repo   string // localhost/hotswap-test-<unique>
	images []string
}

func newPodman(t *testing.T) *podman {
	t.Helper()
	_, err := exec.LookPath("podman")
	_, rerr := os.Stat(podmanRuntime)
	proctest.RequireCI(t, proctest.IsRoot() && err == nil && rerr == nil, "root, podman and runc (scripts/deps.sh installs them)")
	id := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1_000_000)
	p := &podman{t: t, label: "hotswap-test=" + id, repo: "localhost/hotswap-test-" + id}
	t.Cleanup(p.cleanup)
	return p
}

// cmd is podman with the global flags of every call.
func (p *podman) cmd(args ...string) *exec.Cmd {
	return exec.Command("podman", append([]string{"--runtime", podmanRuntime}, args...)...)
}

// must runs podman and returns its stdout; a failure fails the test.
func (p *podman) must(args ...string) string {
	p.t.Helper()
	cmd := p.cmd(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("podman %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// run is the command line of a container: foreground, removed at exit,
// on the host's network (here: the test's), labelled, with the explicit
// ulimits this machine kind needs (podman's defaults are refused).
func (p *podman) run(extra ...string) []string {
	args := []string{"podman", "--runtime", podmanRuntime, "run", "--rm", "--network", "host",
		"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--label", p.label}
	return append(args, extra...)
}

// image makes repo:tag from files (destination path in the image: source
// path or, prefixed with "=", the content) with entrypoint.
func (p *podman) image(tag string, files map[string]string, entrypoint ...string) string {
	p.t.Helper()
	root := p.t.TempDir()
	for dst, src := range files {
		b, err := []byte(strings.TrimPrefix(src, "=")), error(nil)
		mode := os.FileMode(0o644)
		if !strings.HasPrefix(src, "=") {
			b, err = os.ReadFile(src)
			mode = 0o755
		}
		if err != nil {
			p.t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(dst)), 0o755); err != nil {
			p.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dst), b, mode); err != nil {
			p.t.Fatal(err)
		}
	}
	ep, _ := json.Marshal(entrypoint)
	name := p.repo + ":" + tag
	tar := exec.Command("tar", "-C", root, "-c", ".")
	imp := p.cmd("import", "--change", "ENTRYPOINT "+string(ep), "-", name)
	pipe, err := tar.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	imp.Stdin = pipe
	if err := tar.Start(); err != nil {
		p.t.Fatal(err)
	}
	out, err := imp.CombinedOutput()
	if werr := tar.Wait(); err != nil || werr != nil {
		p.t.Fatalf("podman import %s: %v %v: %s", name, err, werr, out)
	}
	p.images = append(p.images, name)
	return name
}

// containers lists the ids of every container of the test, stopped ones
// included.
func (p *podman) containers() []string {
	p.t.Helper()
	return strings.Fields(p.must("ps", "-a", "-q", "--no-trunc", "--filter", "label="+p.label))
}

// hostPID is the host pid of a running container's first process.
func (p *podman) hostPID(ctr string) int {
	p.t.Helper()
	n, err := strconv.Atoi(p.must("inspect", "--format", "{{.State.Pid}}", ctr))
	if err != nil || n <= 0 {
		p.t.Fatalf("container %s: no pid (%v)", ctr, err)
	}
	return n
}

func (p *podman) cleanup() {
	if ids := p.containers(); len(ids) > 0 {
		p.t.Errorf("containers of the test left behind: %v", ids)
		p.cmd(append([]string{"rm", "-f", "-t", "0"}, ids...)...).Run()
	}
	if len(p.images) > 0 {
		if out, err := p.cmd(append([]string{"rmi", "-f"}, p.images...)...).CombinedOutput(); err != nil {
			p.t.Errorf("podman rmi: %v: %s", err, out)
		}
	}
}

// staticGoapp is examples/goapp built with CGO_ENABLED=0: it needs no
// base image.
func staticGoapp(t *testing.T) string {
	t.Helper()
	return proctest.Build(t, goappPkg, "CGO_ENABLED=0")
}
