package sys

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// ReadProcFile and ReadDirNames give what os.ReadFile and os.ReadDir give,
// for a file and a directory larger than one read or getdents buffer, and
// the same error for a path that does not exist.
func TestReadProcFileAndDirNames(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 700) // 11,200 bytes
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 700 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("entry-with-a-long-name-%04d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadProcFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadProcFile: %d bytes, %v; want %d", len(got), err, len(data))
	}
	want, _ := os.ReadFile("/proc/self/cmdline")
	if got, err := ReadProcFile("/proc/self/cmdline"); err != nil || !bytes.Equal(got, want) {
		t.Errorf("ReadProcFile(/proc/self/cmdline): %q, %v; want %q", got, err, want)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wantNames []string
	for _, e := range ents {
		wantNames = append(wantNames, e.Name())
	}
	names, err := ReadDirNames(dir)
	slices.Sort(names)
	if err != nil || !slices.Equal(names, wantNames) {
		t.Errorf("ReadDirNames: %d names, %v; want %d", len(names), err, len(wantNames))
	}
	missing := filepath.Join(dir, "missing")
	if _, err := ReadProcFile(missing); !os.IsNotExist(err) {
		t.Errorf("ReadProcFile of a missing file: %v, want not exist", err)
	}
	if _, err := ReadDirNames(missing); !os.IsNotExist(err) {
		t.Errorf("ReadDirNames of a missing directory: %v, want not exist", err)
	}
}

// Children lists a child this process started.
func TestChildren(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if got := Children(os.Getpid()); !slices.Contains(got, cmd.Process.Pid) {
		t.Errorf("Children: %v, want %d among them", got, cmd.Process.Pid)
	}
}
