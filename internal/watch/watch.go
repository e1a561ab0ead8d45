// Package watch reports changes to files and directories the way the
// tools that change them actually work: a rename over the file
// (write-then-rename, editors, install and mv), a symlink moved to a new
// target (certbot's live/ links into archive/, Kubernetes' ..data swap in
// a mounted Secret or ConfigMap), a write in place, and a path that does
// not exist yet.
//
// inotify watches inodes, not names: a watch on a file is lost when the
// file is renamed over, and a watch on a symlink follows its target of the
// moment. So a Watcher watches directories: the one holding each path and
// every directory a symlink on the way to its file passes through, and,
// for a watched directory, the directory itself. Any event there makes it
// compare each path's fingerprint (what it resolves to and that file's
// identity, size, mode and modification time) with the last one; a change
// starts a quiet period, and once nothing has changed for the debounce
// duration one Change is sent, naming every path that changed. The set of
// directories is recomputed after every event, so a new ..data target or
// a path that appears is followed.
package watch

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is the quiet period after the last change before a
// Change is sent: certbot's four links or a Kubernetes volume update
// arrive well within it and become one Change.
const DefaultDebounce = 300 * time.Millisecond

// Change names the watched paths whose content changed.
type Change struct {
	Paths []string
}

// Watcher watches a set of paths.
type Watcher struct {
	paths    []string
	debounce time.Duration
	fs       *fsnotify.Watcher
	dirs     map[string]bool   // directories watched now
	prints   map[string]string // path -> fingerprint at the last look
}

// New watches paths (made absolute) and sends a Change after each burst of
// changes, debounced by debounce. A path that does not exist is watched
// for its appearance.
func New(paths []string, debounce time.Duration) (*Watcher, error) {
	if debounce <= 0 {
		return nil, fmt.Errorf("watch: debounce %v: must be positive", debounce)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w := &Watcher{debounce: debounce, fs: fw, dirs: map[string]bool{}, prints: map[string]string{}}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			fw.Close()
			return nil, fmt.Errorf("watch %s: %w", p, err)
		}
		if !slices.Contains(w.paths, abs) {
			w.paths = append(w.paths, abs)
		}
	}
	if err := w.rewatch(); err != nil {
		fw.Close()
		return nil, err
	}
	for _, p := range w.paths {
		w.prints[p] = fingerprint(p)
	}
	return w, nil
}

// Paths returns the watched paths, absolute.
func (w *Watcher) Paths() []string { return slices.Clone(w.paths) }

// Dirs returns the directories watched now, sorted.
func (w *Watcher) Dirs() []string {
	var d []string
	for dir := range w.dirs {
		d = append(d, dir)
	}
	sort.Strings(d)
	return d
}

// Run sends a Change on out after each debounced burst of changes until
// ctx is done, then closes the watcher. A watch that cannot be added (a
// directory removed meanwhile) is retried at the next event; errors of the
// event queue (an overflow) make it look at every path again.
func (w *Watcher) Run(ctx context.Context, out chan<- Change) error {
	defer w.fs.Close()
	var (
		timer   *time.Timer
		fire    <-chan time.Time
		changed = map[string]bool{}
	)
	look := func() {
		// Watch first, then compare: a change made before a new
		// directory is watched shows in its fingerprint, one made
		// after sends an event.
		_ = w.rewatch()
		for _, p := range w.paths {
			fp := fingerprint(p)
			if fp != w.prints[p] {
				w.prints[p] = fp
				changed[p] = true
				if timer == nil {
					timer = time.NewTimer(w.debounce)
				} else {
					timer.Reset(w.debounce)
				}
				fire = timer.C
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.fs.Events:
			if !ok {
				return nil
			}
			look()
		case err, ok := <-w.fs.Errors:
			if !ok {
				return nil
			}
			_ = err // fsnotify.ErrEventOverflow and the like: look again
			look()
		case <-fire:
			fire = nil
			// A change that is still going on (a long copy) restarts
			// the quiet period instead.
			look()
			if fire != nil {
				continue
			}
			c := Change{}
			for _, p := range w.paths {
				if changed[p] {
					c.Paths = append(c.Paths, p)
				}
			}
			clear(changed)
			select {
			case out <- c:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// rewatch watches the directories the paths need now and drops the rest.
// Which directories those are is read from the file system before their
// watches are added, and a directory made in between (mkdir -p a/b/c seen
// as a alone) gets no event from a watch added after it was made: so
// rewatch looks again after adding, until the set it needs is the set it
// watches. Then every directory made later is made under a watch. A tree
// that keeps changing past maxRewatch rounds sends events of its own, and
// the next one looks again.
func (w *Watcher) rewatch() error {
	var err error
	want := w.wanted()
	for range maxRewatch {
		err = w.sync(want)
		now := w.wanted()
		if maps.Equal(want, now) {
			break
		}
		want = now
	}
	return err
}

// maxRewatch bounds the rounds of one rewatch.
const maxRewatch = 64

// wanted returns the directories the paths need now.
func (w *Watcher) wanted() map[string]bool {
	want := map[string]bool{}
	for _, p := range w.paths {
		for _, d := range dirsOf(p) {
			want[d] = true
		}
	}
	return want
}

// sync watches the directories in want and drops the rest.
func (w *Watcher) sync(want map[string]bool) error {
	var firstErr error
	for d := range want {
		if w.dirs[d] {
			continue
		}
		if err := w.fs.Add(d); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("watch %s: %w", d, err)
			}
			continue
		}
		w.dirs[d] = true
	}
	for d := range w.dirs {
		if !want[d] {
			_ = w.fs.Remove(d) // fails when the directory is gone, and then is unwatched already
			delete(w.dirs, d)
		}
	}
	return firstErr
}

// maxLinks bounds the symlinks followed from one path, as the kernel does.
const maxLinks = 40

// dirsOf returns the directories whose events can change what p is: the
// nearest existing ancestor when p does not exist, the directory holding
// p and every symlink met while resolving it, and p itself when it is a
// directory.
func dirsOf(p string) []string {
	var dirs []string
	add := func(d string) {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	cur := p
	for range maxLinks {
		dir := filepath.Dir(cur)
		fi, err := os.Lstat(cur)
		if err != nil {
			add(existingAncestor(dir))
			return dirs
		}
		// inotify follows a symlinked directory to its target, so the
		// real directory is watched (one watch per inode), and so is
		// the directory of each symlink among dir's own components:
		// /etc/config sees the ..data of /etc/config/..data/app.conf
		// swapped.
		for _, d := range linkDirs(dir) {
			add(d)
		}
		add(realDir(dir))
		if fi.Mode()&os.ModeSymlink == 0 {
			if fi.IsDir() {
				add(realDir(cur))
			}
			return dirs
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return dirs
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		cur = target
	}
	return dirs
}

// realDir is dir with its symlinks resolved, or dir when that fails.
func realDir(dir string) string {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		return real
	}
	return dir
}

// linkDirs returns the directories holding the symlinks among the
// components of path.
func linkDirs(path string) []string {
	var dirs []string
	parts := strings.Split(filepath.Clean(path), string(filepath.Separator))
	cur := string(filepath.Separator)
	for _, part := range parts {
		if part == "" {
			continue
		}
		next := filepath.Join(cur, part)
		if fi, err := os.Lstat(next); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			dirs = append(dirs, cur)
		}
		if real, err := filepath.EvalSymlinks(next); err == nil {
			cur = real
		} else {
			cur = next
		}
	}
	return dirs
}

// existingAncestor returns the nearest ancestor of dir that exists.
func existingAncestor(dir string) string {
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}

// fingerprint is what p is now: missing, or the file it resolves to and
// that file's identity, size, mode and modification time; for a directory,
// that of each entry (following symlinks), so a new file, a replaced one
// or a new ..data target changes it.
func fingerprint(p string) string {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "missing"
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "missing"
	}
	if !fi.IsDir() {
		return real + " " + statPrint(fi)
	}
	// A directory's own mtime moves with every entry made in it, even
	// one removed again (..data_tmp): its entries say what changed.
	s := real + " " + identity(fi)
	entries, err := os.ReadDir(real)
	if err != nil {
		return s + " unreadable"
	}
	var b strings.Builder
	b.WriteString(real)
	for _, e := range entries {
		b.WriteString("\n" + e.Name() + " ")
		efi, err := os.Stat(filepath.Join(real, e.Name()))
		if err != nil {
			b.WriteString("dangling")
			continue
		}
		if efi.IsDir() {
			// A subdirectory counts by its identity, not its content:
			// the watch is not recursive.
			b.WriteString(identity(efi))
			continue
		}
		b.WriteString(statPrint(efi))
	}
	return b.String()
}

// identity is a file's device and inode.
func identity(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "?"
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// statPrint is a file's identity, size, mode and modification time: a
// rename over it, a write in place or a chmod changes it.
func statPrint(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("%d %v %d", fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
	}
	return fmt.Sprintf("%d:%d %d %o %d", st.Dev, st.Ino, st.Size, st.Mode, fi.ModTime().UnixNano())
}
