//go:build linux

package fdpass_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/proctest"
)

const reportFDEnv = "HOTSWAP_TEST_REPORT_FD"

// helpers are the mains a test can run in a child.
var helpers = proctest.Helpers{
	"listeners": exitStatus(helperListeners),
}

// exitStatus turns a helper that returns an error into a main.
func exitStatus(h func() error) func() int {
	return func() int {
		if err := h(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
}

func TestMain(m *testing.M) { proctest.HelperMain(m, helpers) }

// childReport is what the "listeners" helper found.
type childReport struct {
	Listeners  map[string]string // name: address
	Packets    map[string]string
	Err        string
	Served     []string // listeners that accepted a connection of the child's own
	SameTwice  bool     // a second call returned the same sockets
	Listen     string   // address of Listen("http", "tcp", "127.0.0.1:0")
	ListenErr  string
	NotInherit bool     // ListenErr wraps ErrNotInherited
	EnvAfter   []string // LISTEN_* still set after the calls
	NotCloexec []int    // descriptors other than 0-2 and the report pipe without FD_CLOEXEC
}

func helperListeners() error {
	fd, err := strconv.Atoi(os.Getenv(reportFDEnv))
	if err != nil {
		return err
	}
	out := os.NewFile(uintptr(fd), "report")
	var r childReport
	n, _ := strconv.Atoi(os.Getenv(fdpass.ListenFDs))
	before := slices.DeleteFunc(notCloexec(fd), func(x int) bool { return x < fdpass.FirstFD+n })
	lns, err := fdpass.Listeners()
	if err != nil {
		r.Err = err.Error()
	}
	pcs, _ := fdpass.PacketConns()
	r.Listeners, r.Packets = addrs(lns), addrs(pcs)
	lns2, _ := fdpass.Listeners()
	r.SameTwice = sameValues(lns, lns2)
	for name, ln := range lns {
		if selfServe(ln) == nil {
			r.Served = append(r.Served, name)
		}
	}
	slices.Sort(r.Served)
	if ln, err := fdpass.Listen("http", "tcp", "127.0.0.1:0"); err != nil {
		r.ListenErr, r.NotInherit = err.Error(), errors.Is(err, fdpass.ErrNotInherited)
	} else {
		r.Listen = ln.Addr().String()
	}
	for _, k := range []string{fdpass.ListenPID, fdpass.ListenFDs, fdpass.ListenFDNames} {
		if _, ok := os.LookupEnv(k); ok {
			r.EnvAfter = append(r.EnvAfter, k)
		}
	}
	r.NotCloexec = slices.DeleteFunc(notCloexec(fd), func(x int) bool { return slices.Contains(before, x) })
	return json.NewEncoder(out).Encode(r)
}

func addrs[V any](m map[string]V) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		switch x := any(v).(type) {
		case net.Listener:
			out[k] = x.Addr().String()
		case net.PacketConn:
			out[k] = x.LocalAddr().String()
		}
	}
	return out
}

func sameValues(a, b map[string]net.Listener) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// selfServe connects to ln and accepts that connection.
func selfServe(ln net.Listener) error {
	c, err := net.DialTimeout(ln.Addr().Network(), ln.Addr().String(), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		return err
	}
	return a.Close()
}

// notCloexec lists open descriptors above 2, except skip, whose flags in
// /proc/self/fdinfo lack O_CLOEXEC.
func notCloexec(skip int) []int {
	ents, _ := os.ReadDir("/proc/self/fd")
	var bad []int
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		if fd <= 2 || fd == skip {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
		if err != nil {
			continue // the descriptor ReadDir itself used
		}
		for line := range strings.Lines(string(info)) {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if flags&0o2000000 == 0 {
					bad = append(bad, fd)
				}
			}
		}
	}
	return bad
}

// runChild starts the helper with files as fds 3.. and env, and LISTEN_PID
// set by a shell shim to the child's own pid (or to pid if not empty).
func runChild(t *testing.T, files []*os.File, pid string, env ...string) childReport {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	setPID := `LISTEN_PID=$$`
	if pid != "" {
		setPID = "LISTEN_PID=" + pid
	}
	cmd := exec.Command("/bin/sh", "-c", setPID+` exec "$0" "$@"`, exe, "-test.run=^$")
	cmd.ExtraFiles = append(slices.Clone(files), pw)
	cmd.Env = append(os.Environ(), proctest.UseHelper("listeners"), reportFDEnv+"="+strconv.Itoa(fdpass.FirstFD+len(files)))
	cmd.Env = append(cmd.Env, env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	var r childReport
	derr := json.NewDecoder(pr).Decode(&r)
	werr := cmd.Wait()
	for line := range strings.Lines(stderr.String()) {
		t.Logf("child: %s", strings.TrimRight(line, "\n"))
	}
	if derr != nil || werr != nil {
		t.Fatalf("child: report %v, exit %v", derr, werr)
	}
	return r
}

type sockets struct {
	files []*os.File
	addrs map[string]string // by test name
}

// newSockets creates the sockets a test hands over: "tcp", "unix" or "udp".
func newSockets(t *testing.T, kinds ...string) sockets {
	t.Helper()
	s := sockets{addrs: map[string]string{}}
	for i, k := range kinds {
		var f *os.File
		var addr string
		switch k {
		case "tcp":
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, addr = fileOf(t, ln.(*net.TCPListener)), ln.Addr().String()
			ln.Close()
		case "unix":
			path := filepath.Join(t.TempDir(), strconv.Itoa(i)+".sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			f, addr = fileOf(t, ln.(*net.UnixListener)), path
			ln.Close()
		case "udp":
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			f, addr = fileOf(t, pc.(*net.UDPConn)), pc.LocalAddr().String()
			pc.Close()
		}
		t.Cleanup(func() { f.Close() })
		s.files = append(s.files, f)
		s.addrs[strconv.Itoa(i)] = addr
	}
	return s
}

func fileOf(t *testing.T, c interface{ File() (*os.File, error) }) *os.File {
	t.Helper()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestListenersInChild(t *testing.T) {
	tests := []struct {
		name      string
		kinds     []string
		pid       string // "" for the child's own pid
		env       []string
		listeners map[string]string // name: socket index
		packets   map[string]string
		listen    string // "inherited 0", "fallback" or "error"
		err       string
	}{
		{
			name: "named tcp and unix", kinds: []string{"tcp", "unix"},
			env:       []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin"},
			listeners: map[string]string{"http": "0", "admin": "1"}, listen: "inherited 0",
		},
		{
			name: "no names is unknown", kinds: []string{"tcp", "tcp"},
			env:       []string{"LISTEN_FDS=2"},
			listeners: map[string]string{"unknown": "0", "unknown:4": "1"}, listen: "missing",
		},
		{
			name: "datagram apart", kinds: []string{"udp", "tcp"},
			env:       []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=dns:http"},
			listeners: map[string]string{"http": "1"}, packets: map[string]string{"dns": "0"}, listen: "inherited 1",
		},
		{
			name: "pid mismatch", kinds: []string{"tcp"}, pid: "1",
			env:    []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http"},
			listen: "fallback",
		},
		{
			name: "no hand-off", listen: "fallback",
		},
		{
			name: "names do not match count", kinds: []string{"tcp"},
			env: []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=http:admin"},
			err: "2 names for LISTEN_FDS=1", listen: "error",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSockets(t, tc.kinds...)
			r := runChild(t, s.files, tc.pid, tc.env...)
			if !strings.Contains(r.Err, tc.err) || (tc.err == "") != (r.Err == "") {
				t.Errorf("got error %q, want one containing %q", r.Err, tc.err)
			}
			checkAddrs(t, "listeners", r.Listeners, tc.listeners, s.addrs)
			checkAddrs(t, "packet conns", r.Packets, tc.packets, s.addrs)
			if got, want := r.Served, slices.Sorted(maps.Keys(tc.listeners)); !slices.Equal(got, want) {
				t.Errorf("got listeners that accepted %v, want %v", got, want)
			}
			if !r.SameTwice {
				t.Error("a second Listeners call returned other sockets")
			}
			checkListen(t, r, tc.listen, s.addrs)
			if len(r.EnvAfter) > 0 {
				t.Errorf("got %v still set, want none", r.EnvAfter)
			}
			if tc.pid == "" && tc.err == "" && len(r.NotCloexec) > 0 {
				t.Errorf("got descriptors %v without FD_CLOEXEC, want none", r.NotCloexec)
			}
		})
	}
}

func checkAddrs(t *testing.T, what string, got, want, addrs map[string]string) {
	t.Helper()
	w := map[string]string{}
	for name, idx := range want {
		w[name] = addrs[idx]
	}
	if fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("got %s %v, want %v", what, got, w)
	}
}

func checkListen(t *testing.T, r childReport, want string, addrs map[string]string) {
	t.Helper()
	switch idx, inherited := strings.CutPrefix(want, "inherited "); {
	case inherited:
		if r.Listen != addrs[idx] {
			t.Errorf("got Listen %q (%s), want inherited %q", r.Listen, r.ListenErr, addrs[idx])
		}
	case want == "fallback":
		if r.Listen == "" || slices.Contains(slices.Collect(maps.Values(addrs)), r.Listen) {
			t.Errorf("got Listen %q (%s), want a fresh 127.0.0.1 listener", r.Listen, r.ListenErr)
		}
	case want == "missing":
		if !r.NotInherit || !strings.Contains(r.ListenErr, `"unknown (stream)"`) && !strings.Contains(r.ListenErr, "unknown (stream), unknown:4 (stream)") {
			t.Errorf("got Listen error %q (ErrNotInherited %v), want ErrNotInherited listing what was inherited", r.ListenErr, r.NotInherit)
		}
	case want == "error":
		if r.ListenErr == "" {
			t.Errorf("got Listen %q, want an error", r.Listen)
		}
	}
}
