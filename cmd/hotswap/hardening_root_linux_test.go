package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
)

// copyExecutable copies bin into dir with mode 0755.
func copyExecutable(t *testing.T, bin, dir string) string {
	t.Helper()
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, filepath.Base(bin))
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// publicDir is a directory every user can read and search, removed at
// the end of the test (t.TempDir is 0700).
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hotswap-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// procStatus returns the fields of /proc/pid/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// TestHardeningUserGroup: as root, hotswap binds, then runs every
// generation as --user nobody with --group, no capabilities, and --ready
// notify still works through the run directory; a hotswap binary the user
// cannot execute is refused at startup with one line.
func TestHardeningUserGroup(t *testing.T) {
	proctest.RequireCI(t, proctest.IsRoot(), "root (to switch users)")
	hotswap := proctest.Build(t, hotswapPkg)
	requireHardening(t, hotswap)
	goapp := proctest.Build(t, goappPkg)

	out, err := exec.Command(hotswap, "--user", "nobody", "-l", "tcp://127.0.0.1:0", "--", goapp).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot run hotswap's own binary") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("hotswap in a 0700 directory with --user nobody: got %v %q, want one line naming the binary", err, out)
	}

	dir := publicDir(t)
	hs := copyExecutable(t, hotswap, dir)
	app := copyExecutable(t, goapp, dir)
	p := proctest.Start(t, hs, "--log-format", "json", "--user", "nobody", "--group", "65534", "--ready", "notify",
		"-l", "http=tcp://127.0.0.1:0", "--", app, "--notify")
	serving := ctltest.WaitServing(p, 1, 10*time.Second)
	addr := serving.Listeners[0].Address
	g, _ := ctltest.Gen(serving, 1)
	st := procStatus(t, g.PID)
	for k, want := range map[string]string{"Uid": "65534\t65534\t65534\t65534", "Gid": "65534\t65534\t65534\t65534", "CapEff": "0000000000000000", "CapAmb": "0000000000000000", "CapPrm": "0000000000000000"} {
		if st[k] != want {
			t.Errorf("generation %s %q, want %q", k, st[k], want)
		}
	}
	if g := st["Groups"]; strings.Contains(" "+g+" ", " 0 ") {
		t.Errorf("generation keeps root's group: Groups %q", g)
	}
	if get(t, addr) == "" {
		t.Error("no X-Version from the generation")
	}
	if st, ok := ctltest.Reload(p, 2, 15*time.Second, func() { p.Signal(syscall.SIGHUP) }); !ok {
		t.Fatalf("reload: %s", st.LastFailure)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

// TestHardeningPid1: hotswap as pid 1 of a new pid namespace adopts the
// grandchild its generation leaves behind, reaps it when it dies, and
// exits with the generation's status on SIGTERM.
func TestHardeningPid1(t *testing.T) {
	proctest.RequireCI(t, proctest.IsRoot(), "root (for unshare --pid)")
	_, err := exec.LookPath("unshare")
	proctest.RequireCI(t, err == nil, "unshare (util-linux)")
	hotswap := proctest.Build(t, hotswapPkg)
	requireHardening(t, hotswap)
	goapp := proctest.Build(t, goappPkg)
	// --kill-child: if the test ends early, killing unshare ends the
	// namespace's pid 1 too, instead of leaving a hotswap behind. The
	// control socket goes in the test's directory: the default,
	// /run/hotswap/PID.sock, is 1.sock for every pid-1 hotswap sharing /run.
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", hotswap, "--log-format", "json", "--log-level", "debug",
		"--control", filepath.Join(t.TempDir(), "ctl.sock"), "--ready", "200ms", "-l", "http=tcp://127.0.0.1:0", "--", goapp, "--spawn-grandchild")
	p := proctest.StartCmd(t, cmd)
	ctltest.WaitServing(p, 1, 10*time.Second)
	inner := grandchildPid(t, p)
	hsPid := childOf(t, cmd.Process.Pid)
	syscall.Kill(hsPid, syscall.SIGHUP)
	ctltest.WaitGone(p, 1, 15*time.Second)
	outer := outerPid(t, inner, hsPid)
	syscall.Kill(outer, syscall.SIGKILL)
	waitReaped(t, outer, 5*time.Second) // by hotswap, pid 1 of the namespace
	syscall.Kill(hsPid, syscall.SIGTERM)
	if code := p.Wait(15 * time.Second); code != 0 {
		t.Errorf("exit status %d, want 0 (goapp drains and exits 0)", code)
	}
}

// childOf returns the first child of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	for range 200 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d has no child", pid)
	return 0
}

// outerPid finds, among the descendants of root, the process whose pid in
// its own namespace is inner.
func outerPid(t *testing.T, inner, root int) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(strings.TrimPrefix(l, "NSpid:")); strings.HasPrefix(l, "NSpid:") && len(f) == 2 && f[1] == strconv.Itoa(inner) && ppid(pid) == root {
				return pid
			}
		}
	}
	t.Fatalf("no process with pid %d in the namespace of %d", inner, root)
	return 0
}

// TestHardeningUserFromNSS: a user and a group that only NSS knows
// (libnss-extrausers, listed in an nsswitch.conf mounted over the host's
// in a mount namespace of the test's own), in neither /etc/passwd nor
// /etc/group, the only files the pure-Go os/user of a hotswap built
// without cgo reads: --user finds the user through getent and runs the
// generation with the supplementary group NSS gives it, --group finds the
// group; without getent in PATH, one line says why the name is unknown.
func TestHardeningUserFromNSS(t *testing.T) {
	if !proctest.InMountNamespace(t) {
		return
	}
	libs, _ := filepath.Glob("/usr/lib/*/libnss_extrausers.so.2")
	libs2, _ := filepath.Glob("/usr/lib/libnss_extrausers.so.2")
	proctest.RequireCI(t, len(libs)+len(libs2) > 0, "libnss-extrausers (Debian package; scripts/deps.sh installs it)")
	const name, extra = "hotswap-nss-user", "hotswap-nss-extra"
	for _, f := range []string{"/etc/passwd", "/etc/group"} {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), name) {
			t.Fatalf("%s already has %s", f, name)
		}
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "extrausers")
	nss := filepath.Join(dir, "nsswitch.conf")
	if err := os.Mkdir(db, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, text := range map[string]string{
		filepath.Join(db, "passwd"): name + ":x:64123:64123::/:/bin/sh\n",
		filepath.Join(db, "group"):  name + ":x:64123:\n" + extra + ":x:64124:" + name + "\n",
		filepath.Join(db, "shadow"): "",
		nss:                         "passwd: files extrausers\ngroup: files extrausers\n",
	} {
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for src, dst := range map[string]string{nss: "/etc/nsswitch.conf", db: "/var/lib/extrausers"} {
		if err := syscall.Mount(src, dst, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("mount --bind %s %s: %v", src, dst, err)
		}
	}
	if out, err := exec.Command("getent", "passwd", name).Output(); err != nil || !strings.HasPrefix(string(out), name+":") {
		t.Fatalf("getent passwd %s in the test's namespace: %v %q", name, err, out)
	}

	hotswap := proctest.Build(t, hotswapPkg)
	requireHardening(t, hotswap)
	pub := publicDir(t)
	hs := copyExecutable(t, hotswap, pub)
	app := copyExecutable(t, proctest.Build(t, goappPkg), pub)
	for _, tc := range []struct {
		group    []string
		gid      string
		groupsOK string
	}{
		{nil, "64123", "64123 64124"},
		{[]string{"--group", extra}, "64124", "64123 64124"},
	} {
		args := append([]string{"--log-format", "json", "--user", name}, tc.group...)
		p := proctest.Start(t, hs, append(args, "--ready", "notify", "-l", "http=tcp://127.0.0.1:0", "--", app, "--notify")...)
		g, _ := ctltest.Gen(ctltest.WaitServing(p, 1, 10*time.Second), 1)
		st := procStatus(t, g.PID)
		if want := "64123\t64123\t64123\t64123"; st["Uid"] != want {
			t.Errorf("%v: generation Uid %q, want %q", tc.group, st["Uid"], want)
		}
		if want := strings.Repeat(tc.gid+"\t", 3) + tc.gid; st["Gid"] != want {
			t.Errorf("%v: generation Gid %q, want %q", tc.group, st["Gid"], want)
		}
		if st["Groups"] != tc.groupsOK {
			t.Errorf("%v: generation Groups %q, want %q (the user's own and the one NSS lists it in)", tc.group, st["Groups"], tc.groupsOK)
		}
		p.Signal(syscall.SIGTERM)
		if code := p.Wait(15 * time.Second); code != 0 {
			t.Errorf("%v: exit status %d, want 0", tc.group, code)
		}
	}

	cmd := exec.Command(hs, "--user", name, "-l", "tcp://127.0.0.1:0", "--", app)
	cmd.Env = []string{"PATH=" + pub} // no getent there
	out, err := cmd.CombinedOutput()
	want := "hotswap: --user " + name + ": not in /etc/passwd, and getent, which asks NSS (LDAP, sssd, systemd), is not installed\n"
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitUsage || string(out) != want {
		t.Errorf("without getent: %v %q, want exit %d and %q", err, out, exitUsage, want)
	}
}
