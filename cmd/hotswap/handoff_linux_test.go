package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"golang.org/x/sys/unix"
)

// handoffReport is what a generation saw, sent back over a FIFO.
type handoffReport struct {
	PID   int               `json:"pid"`
	Env   map[string]string `json:"env"`
	FDs   []int             `json:"fds"`
	Links []string          `json:"links"`
	Socks map[int]string    `json:"socks"` // fd -> local address
	// First is the first entry of its environment: LISTEN_PID when
	// hotswap exec'd it without a shim and wrote the pid in place.
	First string `json:"first"`
}

const reportEnv = "TEST_REPORT_FIFO"

// handoffHelper lists its descriptors before anything opens one, reports
// them with the hand-off variables, then waits for SIGTERM.
func handoffHelper() int {
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM)
	r := handoffReport{PID: os.Getpid(), Env: map[string]string{}, Socks: map[int]string{}}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		// Whatever crossed the exec lacks close-on-exec; what this
		// process opened itself since (the Go runtime's poller and cgroup
		// files, a dependency hashing the binary, this directory) has it.
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue
		}
		r.FDs = append(r.FDs, fd)
		r.Links = append(r.Links, target)
		if sa, err := unix.Getsockname(fd); err == nil {
			if in, ok := sa.(*unix.SockaddrInet4); ok {
				r.Socks[fd] = fmt.Sprintf("%d.%d.%d.%d:%d", in.Addr[0], in.Addr[1], in.Addr[2], in.Addr[3], in.Port)
			}
		}
	}
	if env := os.Environ(); len(env) > 0 {
		r.First = env[0]
	}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "EINHORN_") || strings.HasPrefix(k, "HOTSWAP_") || k == "NGINX" || k == "NOTIFY_SOCKET" {
			r.Env[k] = v
		}
	}
	f, err := os.OpenFile(os.Getenv(reportEnv), os.O_WRONLY, 0)
	if err != nil {
		return 1
	}
	json.NewEncoder(f).Encode(r)
	f.Close()
	<-sigc
	return 0
}

// TestHandoffProtocols checks every variable of every protocol as a real
// child sees it, LISTEN_PID included, and that no descriptor of hotswap's
// leaks into the child: hotswap itself inherits two stray descriptors and
// stale protocol variables here. The child is exec'd directly, hotswap
// writing LISTEN_PID into it; where ptrace is refused (a seccomp filter
// on hotswap here) it starts through the exec shim, with the same view.
func TestHandoffProtocols(t *testing.T) {
	hotswap := proctest.Build(t, hotswapPkg)
	t.Run("direct", func(t *testing.T) { testHandoffProtocols(t, hotswap, false) })
	t.Run("ptrace denied", func(t *testing.T) {
		// hotswap is forked from this thread, which keeps the filter and
		// exits with the subtest (never unlocked).
		runtime.LockOSThread()
		if err := proctest.DenyPtrace(); err != nil {
			t.Fatal(err)
		}
		testHandoffProtocols(t, hotswap, true)
	})
}

func testHandoffProtocols(t *testing.T, hotswap string, denied bool) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "report")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	stray1, _ := os.Open("/dev/null")
	stray2, _ := os.Open("/dev/null")
	defer stray1.Close()
	defer stray2.Close()

	cmd := exec.Command(hotswap, "--log-format", "json", "--ready", "100ms",
		"-l", "http=tcp://127.0.0.1:0", "-l", "admin=tcp4://127.0.0.1:0", "--", self, "-test.run=^$")
	cmd.Env = append(os.Environ(), proctest.UseChildHelper("handoff"), reportEnv+"="+fifo,
		"LISTEN_FDS=9", "LISTEN_PID=1", "LISTEN_FDNAMES=stale", "NOTIFY_SOCKET=/nonexistent",
		"NGINX=9;", "EINHORN_FD_COUNT=9", "EINHORN_FD_0=9", "HOTSWAP_STALE=1")
	cmd.ExtraFiles = []*os.File{stray1, stray2}
	p := proctest.StartCmd(t, cmd)
	var addrs []string
	read := func(gen int) handoffReport {
		t.Helper()
		f, err := os.Open(fifo)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var r handoffReport
		if err := json.NewDecoder(f).Decode(&r); err != nil {
			t.Fatalf("generation %d report: %v", gen, err)
		}
		return r
	}
	for gen := 1; gen <= 2; gen++ {
		r := read(gen)
		if gen == 1 {
			for _, l := range ctltest.WaitServing(p, 1, 10*time.Second).Listeners {
				addrs = append(addrs, l.Address)
			}
			p.Signal(syscall.SIGHUP) // the same checks for the second generation
		}
		want := map[string]string{
			"LISTEN_FDS":         "2",
			"LISTEN_PID":         strconv.Itoa(r.PID),
			"LISTEN_FDNAMES":     "http:admin",
			"NGINX":              "3;4;",
			"EINHORN_FD_COUNT":   "2",
			"EINHORN_FD_0":       "3",
			"EINHORN_FD_1":       "4",
			"HOTSWAP_GENERATION": strconv.Itoa(gen),
		}
		if !reflect.DeepEqual(r.Env, want) {
			t.Errorf("generation %d saw\n%v\nwant\n%v", gen, r.Env, want)
		}
		if first := "LISTEN_PID=" + strconv.Itoa(r.PID); !denied && r.First != first {
			t.Errorf("generation %d: first environment entry %q, want %q (exec'd without a shim)", gen, r.First, first)
		}
		if !reflect.DeepEqual(r.FDs, []int{0, 1, 2, 3, 4}) {
			t.Errorf("generation %d holds fds %v (%v), want only stdio and the listeners 3 and 4", gen, r.FDs, r.Links)
		}
		if r.Socks[3] != addrs[0] || r.Socks[4] != addrs[1] {
			t.Errorf("generation %d: fd 3 %s, fd 4 %s; want %v in listener order", gen, r.Socks[3], r.Socks[4], addrs)
		}
	}
	ctltest.WaitGone(p, 1, 10*time.Second)
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(10 * time.Second); code != 0 {
		t.Errorf("hotswap exited %d, want 0", code)
	}
}
