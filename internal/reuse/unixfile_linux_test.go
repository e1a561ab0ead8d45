package reuse

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestListenUnix: the file has its mode and owner when clients can first
// connect, a live socket is not replaced, and Remove leaves a file put in
// its place alone.
func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	o := UnixOptions{Mode: 0o640}
	if os.Geteuid() == 0 {
		o.Owner = &Owner{UID: 65534, GID: 65534}
	}
	umask := syscall.Umask(0)
	syscall.Umask(umask)
	f, uf, err := ListenUnix(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("mode %v, want a socket with 0640", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); o.Owner != nil && (st.Uid != 65534 || st.Gid != 65534) {
		t.Errorf("owner %d:%d, want 65534:65534", st.Uid, st.Gid)
	}
	if now := syscall.Umask(umask); now != umask {
		t.Errorf("process umask changed from %#o to %#o", umask, now)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	c.Close()
	if _, _, err := ListenUnix(path, UnixOptions{}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second ListenUnix on a live socket: %v, want EADDRINUSE", err)
	}
	os.Remove(path)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	uf.Remove()
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Remove took a file that replaced the socket: %v", err)
	}
	if _, _, err := ListenUnix(path, UnixOptions{}); err == nil {
		t.Errorf("ListenUnix over a regular file: no error")
	}
}
