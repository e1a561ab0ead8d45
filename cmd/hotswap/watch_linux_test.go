package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hotswap-dev/hotswap/internal/load"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"github.com/hotswap-dev/hotswap/internal/proctest/ctltest"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// watchSettle is how long after a reload no other may come: three times
// the default --watch-debounce.
const watchSettle = time.Second

// watchCase is one way real tools change files: layout lays out dir with
// version v1 and returns the file each generation reads its version from,
// the --watch paths and the binary to run; change makes the change, which
// must lead to exactly one reload, answered by version want.
type watchCase struct {
	name   string
	layout func(t *testing.T, dir, goapp string) (verFile string, watched []string, bin string)
	change func(t *testing.T, dir string)
	want   string
	binary bool // the change is a new dir/bin/server
}

// plainLayout is a version file in dir, watched, and goapp itself.
func plainLayout(t *testing.T, dir, goapp string) (string, []string, string) {
	f := filepath.Join(dir, "version")
	writeFile(t, f, "v1")
	return f, []string{f}, goapp
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// renameOver writes s to a temporary file beside path and renames it over
// path, as most config management and deploy tools do.
func renameOver(t *testing.T, path, s string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	writeFile(t, tmp, s)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// certbotKinds are the files of a certbot lineage, in the order certbot
// updates their live/ links (storage.py, RenewableCert.update_all_links_to).
var certbotKinds = []string{"cert", "privkey", "chain", "fullchain"}

// certbotLayout is certbot's: live/NAME/KIND.pem symlinks to
// ../../archive/NAME/KINDn.pem. The version is in fullchain.pem; both
// fullchain.pem and privkey.pem are watched, as a TLS server's would be.
func certbotLayout(t *testing.T, dir, goapp string) (string, []string, string) {
	for _, d := range []string{"archive/example.org", "live/example.org"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range certbotKinds {
		writeFile(t, filepath.Join(dir, "archive/example.org", k+"1.pem"), "v1")
		if err := os.Symlink("../../archive/example.org/"+k+"1.pem", filepath.Join(dir, "live/example.org", k+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	live := filepath.Join(dir, "live/example.org")
	return filepath.Join(live, "fullchain.pem"), []string{filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem")}, goapp
}

// certbotRenew is a renewal as certbot 2.x writes it: the new files in
// archive/, then each live/ link unlinked and made again (not renamed).
func certbotRenew(t *testing.T, dir string) {
	for _, k := range certbotKinds {
		writeFile(t, filepath.Join(dir, "archive/example.org", k+"2.pem"), "v2")
	}
	for _, k := range certbotKinds {
		link := filepath.Join(dir, "live/example.org", k+".pem")
		if err := os.Remove(link); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../archive/example.org/"+k+"2.pem", link); err != nil {
			t.Fatal(err)
		}
	}
}

// kubeTimestamp names a payload directory as the kubelet's AtomicWriter
// does: "..2006_01_02_15_04_05." and nanoseconds.
func kubeTimestamp(n int) string {
	return time.Date(2026, 12, 1, 21, 0, 0, n, time.UTC).Format("..2006_01_02_15_04_05.000000000")
}

// kubeLayout is a Secret or ConfigMap volume as the kubelet writes it:
// the payload in a timestamped directory, ..data a symlink to it, and each
// key a symlink through ..data.
func kubeLayout(t *testing.T, dir string) string {
	vol := filepath.Join(dir, "config")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	kubePayload(t, vol, 1, "v1")
	for link, target := range map[string]string{"..data": kubeTimestamp(1), "version": "..data/version", "other.conf": "..data/other.conf"} {
		if err := os.Symlink(target, filepath.Join(vol, link)); err != nil {
			t.Fatal(err)
		}
	}
	return vol
}

// kubePayload writes payload directory n of vol, with keys version and
// other.conf.
func kubePayload(t *testing.T, vol string, n int, version string) {
	t.Helper()
	payload := filepath.Join(vol, kubeTimestamp(n))
	if err := os.Mkdir(payload, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(payload, "version"), version)
	writeFile(t, filepath.Join(payload, "other.conf"), "x")
}

// kubeUpdate is the kubelet's update: a new timestamped directory, a
// ..data_tmp symlink to it renamed over ..data, the old directory removed.
func kubeUpdate(t *testing.T, dir string) {
	vol := filepath.Join(dir, "config")
	kubePayload(t, vol, 2, "v2")
	if err := os.Symlink(kubeTimestamp(2), filepath.Join(vol, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(vol, kubeTimestamp(1))); err != nil {
		t.Fatal(err)
	}
}

// binaryLayout runs a copy of goapp at dir/bin/server and watches it.
func binaryLayout(t *testing.T, dir, goapp string) (string, []string, string) {
	f := filepath.Join(dir, "version")
	writeFile(t, f, "v1")
	bin := filepath.Join(dir, "bin", "server")
	if err := os.Mkdir(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "install", "-m", "0755", goapp, bin)
	return f, []string{bin}, bin
}

// newBuild writes dir/server.new: goapp with bytes appended, a binary
// that runs the same but is another file with another SHA-256.
func newBuild(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "bin", "server"))
	if err != nil {
		t.Fatal(err)
	}
	nb := filepath.Join(dir, "server.new")
	if err := os.WriteFile(nb, append(b, "new build"...), 0o755); err != nil {
		t.Fatal(err)
	}
	return nb
}

// TestWatch: hotswap --watch under load, for each way real tools change
// files: one reload per change, the new version answering, no request
// failed.
func TestWatch(t *testing.T) {
	vim := ""
	cases := []watchCase{
		{name: "write-then-rename", layout: plainLayout, want: "v2",
			change: func(t *testing.T, dir string) { renameOver(t, filepath.Join(dir, "version"), "v2") }},
		{name: "write-in-place", layout: plainLayout, want: "v2",
			change: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "version"), "v2") }},
		{name: "editor-save", layout: func(t *testing.T, dir, goapp string) (string, []string, string) {
			vim = proctest.Command(t, "vim", "vim")
			return plainLayout(t, dir, goapp)
		}, want: "v2", change: func(t *testing.T, dir string) {
			// vim's own save: writebackup (a backup made and
			// removed), its 4913 probe file, the new text written.
			mustRun(t, vim, "-Es", "-u", "NONE", "-N", "-i", "NONE", "-c", "%s/v1/v2/", "-c", "wq", filepath.Join(dir, "version"))
		}},
		{name: "certbot-renewal", layout: certbotLayout, change: certbotRenew, want: "v2"},
		{name: "kubernetes-configmap-key", layout: func(t *testing.T, dir, goapp string) (string, []string, string) {
			f := filepath.Join(kubeLayout(t, dir), "version")
			return f, []string{f}, goapp
		}, change: kubeUpdate, want: "v2"},
		{name: "kubernetes-configmap-dir", layout: func(t *testing.T, dir, goapp string) (string, []string, string) {
			vol := kubeLayout(t, dir)
			return filepath.Join(vol, "version"), []string{vol}, goapp
		}, change: kubeUpdate, want: "v2"},
		{name: "binary-install", layout: binaryLayout, want: "v1", binary: true, change: func(t *testing.T, dir string) {
			mustRun(t, "install", "-m", "0755", newBuild(t, dir), filepath.Join(dir, "bin", "server"))
		}},
		{name: "binary-mv", layout: binaryLayout, want: "v1", binary: true, change: func(t *testing.T, dir string) {
			mustRun(t, "mv", newBuild(t, dir), filepath.Join(dir, "bin", "server"))
		}},
		{name: "appears-later", layout: func(t *testing.T, dir, goapp string) (string, []string, string) {
			f, _, bin := plainLayout(t, dir, goapp)
			return f, []string{filepath.Join(dir, "later", "conf.d", "app.conf")}, bin
		}, want: "v2", change: func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "version"), "v2")
			if err := os.MkdirAll(filepath.Join(dir, "later", "conf.d"), 0o755); err != nil {
				t.Fatal(err)
			}
			renameOver(t, filepath.Join(dir, "later", "conf.d", "app.conf"), "x")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := startWatched(t, dir, tc.layout)
			if st, ok := ctltest.Reload(w.a.hs, 2, 30*time.Second, func() { tc.change(t, dir) }); !ok {
				t.Fatalf("after the change: the reload failed: %s", st.LastFailure)
			}
			proctest.WaitVersion(t, w.a.addr, tc.want, 5*time.Second)
			st := w.settle(t, 1, 1)
			if tc.binary {
				checkExe(t, st, filepath.Join(dir, "bin", "server"))
			}
		})
	}
}

// TestWatchBurst: 50 changes within a second are one or two reloads, and
// the last version answers.
func TestWatchBurst(t *testing.T) {
	dir := t.TempDir()
	w := startWatched(t, dir, plainLayout)
	start := time.Now()
	for i := 2; i <= 51; i++ {
		renameOver(t, filepath.Join(dir, "version"), fmt.Sprintf("v%d", i))
		time.Sleep(time.Until(start.Add(time.Duration(i-1) * 20 * time.Millisecond)))
	}
	t.Logf("50 changes in %v", time.Since(start))
	ctltest.Wait(w.a.hs, 30*time.Second, "done with a reload", func(st supervisor.Status) bool { return st.Reloads.OK > 0 })
	proctest.WaitVersion(t, w.a.addr, "v51", 10*time.Second)
	w.settle(t, 1, 2)
}

// watched is hotswap --watch running goapp under load.
type watched struct {
	a    *app
	sock string
	run  *load.Run
}

func startWatched(t *testing.T, dir string, layout func(t *testing.T, dir, goapp string) (string, []string, string)) *watched {
	t.Helper()
	verFile, paths, bin := layout(t, dir, proctest.Build(t, goappPkg))
	w := &watched{sock: filepath.Join(dir, "hotswap.sock")}
	w.a = &app{t: t, verFile: verFile, flags: filepath.Join(dir, "flags"), gen: 1}
	writeFile(t, w.a.flags, "")
	flags := []string{"--ready", "200ms", "--control", w.sock}
	for _, p := range paths {
		flags = append(flags, "--watch", p)
	}
	w.a.start("127.0.0.1:0", bin, flags)
	w.run = load.Start(t.Context(), load.Config{Addr: w.a.addr, Concurrency: 8, Duration: time.Minute})
	waitOK(t, w.run, 100)
	return w
}

// settle waits watchSettle, then checks that between lo and hi reloads
// happened, all succeeded, and no request failed.
func (w *watched) settle(t *testing.T, lo, hi int) statusJSON {
	t.Helper()
	time.Sleep(watchSettle)
	waitOK(t, w.run, 100)
	st := statusOf(t, w.sock)
	res := w.run.Stop()
	t.Logf("load: %v; reloads: %+v; versions seen: %v", res, st.Reloads, res.Versions)
	if st.Reloads.OK < lo || st.Reloads.OK > hi || st.Reloads.Failed != 0 {
		t.Errorf("reloads %+v, want %d to %d, none failed", st.Reloads, lo, hi)
	}
	if res.Failed != 0 {
		t.Errorf("%d failed requests, want 0: %v", res.Failed, res.Errors)
	}
	return st
}

// checkExe checks that the current generation runs the file now at path.
func checkExe(t *testing.T, st statusJSON, path string) {
	t.Helper()
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid := st.Generations[len(st.Generations)-1].PID
	got, err := os.ReadFile(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("generation %d (pid %d) does not run the new %s", st.Current, pid, path)
	}
}
