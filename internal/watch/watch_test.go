package watch

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const testDebounce = 50 * time.Millisecond

// start watches paths and returns the channel of its changes.
func start(t *testing.T, paths ...string) <-chan Change {
	t.Helper()
	w, err := New(paths, testDebounce)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Change, 16)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

// expect waits for one Change naming want, then checks none follows
// within ten debounce periods.
func expect(t *testing.T, c <-chan Change, want ...string) {
	t.Helper()
	select {
	case got := <-c:
		if !slices.Equal(got.Paths, want) {
			t.Errorf("change %v, want %v", got.Paths, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no change for %v within 5s", want)
	}
	quiet(t, c)
}

// quiet checks that no Change comes within ten debounce periods.
func quiet(t *testing.T, c <-chan Change) {
	t.Helper()
	select {
	case got := <-c:
		t.Errorf("unexpected change %v", got.Paths)
	case <-time.After(10 * testDebounce):
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestNoiseIsNoChange: files created, written and removed beside a
// watched file (an editor's swap file, another lineage) change nothing;
// the watched file renamed over is one change.
func TestNoiseIsNoChange(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.conf")
	write(t, f, "a")
	c := start(t, f)
	for i := range 20 {
		noise := filepath.Join(dir, ".app.conf.swp")
		write(t, noise, string(rune('a'+i)))
		if i%2 == 1 {
			os.Remove(noise)
		}
	}
	quiet(t, c)
	write(t, f+".tmp", "b")
	if err := os.Rename(f+".tmp", f); err != nil {
		t.Fatal(err)
	}
	expect(t, c, f)
}

// TestMissingPathIsWaitedFor: a path under directories that do not exist
// yet is a change when it appears, and followed after that.
func TestMissingPathIsWaitedFor(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "a", "b", "cert.pem")
	c := start(t, f)
	if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
		t.Fatal(err)
	}
	quiet(t, c) // directories alone are no change of f
	write(t, f, "1")
	expect(t, c, f)
	write(t, f, "22")
	expect(t, c, f)
	if err := os.RemoveAll(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	expect(t, c, f) // gone is a change too
}

// TestTwoPathsOneChange: two watched paths changed together are one
// Change naming both, in the order they were given.
func TestTwoPathsOneChange(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "privkey.pem")
	write(t, a, "1")
	write(t, b, "1")
	c := start(t, b, a)
	write(t, a, "2")
	write(t, b, "2")
	expect(t, c, b, a)
}

func TestDebounceMustBePositive(t *testing.T) {
	if _, err := New([]string{"x"}, 0); err == nil {
		t.Error("New with debounce 0: no error")
	}
}

// TestPathAppearsAtOnce: directories and the file made in one go, faster
// than the watcher can add a watch on each new directory, are still one
// change: a change made before a directory is watched shows in the
// fingerprint taken after the watch is added.
func TestPathAppearsAtOnce(t *testing.T) {
	for i := range 20 {
		dir := t.TempDir()
		f := filepath.Join(dir, "a", "b", "c", "app.conf")
		c := start(t, f)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, f, "x")
		select {
		case got := <-c:
			if !slices.Equal(got.Paths, []string{f}) {
				t.Errorf("round %d: change %v, want %v", i, got.Paths, f)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: no change within 5s after %s appeared", i, f)
		}
	}
}
