package healthgate

import (
	"context"
	"errors"
	"fmt"
	"github.com/hotswap-dev/hotswap/fdpass"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var notifyCheck = mustParse("notify")

// listenNotify opens a NotifySocket in t.TempDir and closes it at cleanup.
func listenNotify(t *testing.T) *NotifySocket {
	t.Helper()
	ns, err := ListenNotify(filepath.Join(t.TempDir(), "notify.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// recorder collects the messages a NotifySocket hands to OnMessage.
type recorder struct {
	mu   sync.Mutex
	msgs []Message
}

func (r *recorder) add(m Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
}

func (r *recorder) all() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.msgs...)
}

func TestNotifyReadyFromGeneration(t *testing.T) {
	ns := listenNotify(t)
	fi, err := os.Stat(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != NotifySocketMode {
		t.Errorf("socket file mode %v, want socket %v", fi.Mode(), NotifySocketMode)
	}
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"=STATUS=starting|READY=1\nSTATUS=serving")
	var rec recorder
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = Wait(ctx, notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns, OnMessage: rec.add})
	if err != nil {
		t.Fatal(err)
	}
	st := ns.State()
	if !st.Ready || st.Status != "serving" || st.PID != h.cmd.Process.Pid || st.Ignored != 0 {
		t.Errorf("state %+v", st)
	}
	msgs := rec.all()
	if len(msgs) != 2 || msgs[0].Status != "starting" || msgs[0].PID != h.cmd.Process.Pid {
		t.Errorf("messages %+v, want STATUS=starting then READY=1 from pid %d", msgs, h.cmd.Process.Pid)
	}
}

func TestNotifyGrandchildNotCredited(t *testing.T) {
	ns := listenNotify(t)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"=STATUS=waiting", envChildSend+"=READY=1")
	if err := ns.Attach(h.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	gpid := h.waitSent(t)
	err := Wait(t.Context(), notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns, Options: Options{Timeout: 300 * time.Millisecond}})
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, ErrUncredited) {
		t.Fatalf("got %v, want ErrNotReady wrapping ErrUncredited", err)
	}
	if want := fmt.Sprintf("datagram from pid %d", gpid); !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want it to name %q", err, want)
	}
	if st := ns.State(); st.Ready || st.Status != "waiting" || st.Ignored != 1 {
		t.Errorf("state %+v, want not ready, STATUS waiting, 1 ignored", st)
	}
}

func TestNotifyOtherProcessNotCredited(t *testing.T) {
	ns := listenNotify(t)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"=STATUS=booting")
	h.waitSent(t)
	// The test process plays the old generation, which may still hold a
	// NOTIFY_SOCKET of its own and send READY=1 to the wrong socket.
	t.Setenv(fdpass.NotifySocket, ns.Path())
	if err := fdpass.Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	err := Wait(t.Context(), notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns, Options: Options{Timeout: 300 * time.Millisecond}})
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, ErrUncredited) {
		t.Fatalf("got %v, want ErrNotReady wrapping ErrUncredited", err)
	}
	for _, want := range []string{fmt.Sprintf("datagram from pid %d", os.Getpid()), `STATUS="booting"`, "not ready after 300ms:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to contain %q", err, want)
		}
	}
}

func TestNotifyMainPID(t *testing.T) {
	ns := listenNotify(t)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"=MAINPID={child}", envChildSend+"=READY=1")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := Wait(ctx, notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns}); err != nil {
		t.Fatal(err)
	}
	gpid := h.waitSent(t)
	if st := ns.State(); st.MainPID != gpid || gpid == 0 || st.Ignored != 0 {
		t.Errorf("state %+v, want MainPID %d", st, gpid)
	}
}

// TestNotifyMainPIDAfterReady: READY=1 from a pid that the generation
// names with MAINPID= only afterwards counts (podman --sdnotify=container:
// conmon forwards the server's READY=1 in a race with podman's MAINPID=).
func TestNotifyMainPIDAfterReady(t *testing.T) {
	ns := listenNotify(t)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"=MAINPID={child}", envChildSend+"=READY=1", envChildFirst+"=1")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := Wait(ctx, notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns}); err != nil {
		t.Fatal(err)
	}
	gpid := h.waitSent(t)
	if st := ns.State(); st.MainPID != gpid || gpid == 0 || !st.Ready || st.Ignored != 0 {
		t.Errorf("state %+v, want ready from MainPID %d", st, gpid)
	}
}

// TestNotifyHeldNotCredited: a datagram from a pid never named stays
// uncredited.
func TestNotifyHeldNotCredited(t *testing.T) {
	ns := listenNotify(t)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"=MAINPID=1", envChildSend+"=READY=1", envChildFirst+"=1")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := Wait(ctx, notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns, Options: Options{Timeout: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "not credited") {
		t.Fatalf("got %v, want not ready with an uncredited datagram", err)
	}
}

func TestNotifyMalformedIgnored(t *testing.T) {
	ns := listenNotify(t)
	big := "STATUS=" + strings.Repeat("x", MaxMessageSize)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(),
		envSend+"=READY=0|garbage|STATUS=\xff|"+big+"|STATUS=fine|READY=1")
	var rec recorder
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := Wait(ctx, notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns, OnMessage: rec.add}); err != nil {
		t.Fatal(err)
	}
	st := ns.State()
	if st.Ignored != 4 || st.Status != "fine" {
		t.Errorf("state %+v, want 4 ignored and STATUS fine", st)
	}
	var errs []string
	for _, m := range rec.all() {
		if m.Err != nil {
			errs = append(errs, m.Err.Error())
		}
	}
	want := []string{"READY=0: want 1", "want KEY=VALUE", "invalid UTF-8", "over 4096 bytes"}
	if len(errs) != len(want) {
		t.Fatalf("got errors %q, want %q", errs, want)
	}
	for i := range want {
		if !strings.Contains(errs[i], want[i]) {
			t.Errorf("error %d = %q, want %q", i, errs[i], want[i])
		}
	}
}

func TestNotifyStoppingBeforeReady(t *testing.T) {
	ns := listenNotify(t)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"=STOPPING=1")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := Wait(ctx, notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns})
	if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "STOPPING=1 before READY=1") || ctx.Err() != nil {
		t.Fatalf("got %v, want an early STOPPING=1 failure", err)
	}
}

func TestNotifyExtendTimeout(t *testing.T) {
	for _, extend := range []bool{true, false} {
		t.Run(fmt.Sprint("extend=", extend), func(t *testing.T) {
			ns := listenNotify(t)
			send := "STATUS=slow|@sleep 500ms|READY=1"
			if extend {
				send = "EXTEND_TIMEOUT_USEC=3000000|" + send
			}
			h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path(), envSend+"="+send)
			if err := ns.Attach(h.cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			// Start the 250ms timeout once the helper runs, 500ms before READY=1.
			waitState(t, ns, func(st State) bool { return st.Status == "slow" })
			err := Wait(t.Context(), notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns, Options: Options{Timeout: 250 * time.Millisecond}})
			if extend && err != nil {
				t.Fatalf("got %v, want ready within the extended timeout", err)
			}
			if !extend && (!errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "not ready after 250ms:")) {
				t.Fatalf("got %v, want not ready after the 250ms timeout", err)
			}
		})
	}
}

func TestNotifyCancelIsPrompt(t *testing.T) {
	ns := listenNotify(t)
	h := startHelper(t, "notify", "NOTIFY_SOCKET="+ns.Path())
	exited := errors.New("generation 2 exited before ready: exit status 1")
	late, err := waitCancelled(t, notifyCheck, Target{PID: h.cmd.Process.Pid, Notify: ns}, exited)
	if !errors.Is(err, ErrNotReady) || !errors.Is(err, exited) || !strings.Contains(err.Error(), "no READY=1 from pid") {
		t.Fatalf("got %v, want ErrNotReady wrapping the cause", err)
	}
	if late > 100*time.Millisecond {
		t.Errorf("Wait returned %v after cancel, want < 100ms", late)
	}
}

func TestNotifySocketLifecycle(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		t.Run(fmt.Sprint("abstract=", abstract), func(t *testing.T) {
			goroutines, fds := runtime.NumGoroutine(), openFDs(t)
			path := filepath.Join(t.TempDir(), "n.sock")
			if abstract {
				path = fmt.Sprintf("@hotswap-test-%d-%d", os.Getpid(), time.Now().UnixNano())
			}
			ns, err := ListenNotify(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := ns.Attach(os.Getpid()); err != nil {
				t.Fatal(err)
			}
			if err := ns.Attach(os.Getpid() + 1); err == nil {
				t.Error("Attach to a second pid succeeded")
			}
			t.Setenv(fdpass.NotifySocket, ns.Path())
			if err := fdpass.Notify("READY=1\nSTATUS=up"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			if err := Wait(ctx, notifyCheck, Target{PID: os.Getpid(), Notify: ns}); err != nil {
				t.Fatal(err)
			}
			if ns.State().Status != "up" {
				t.Errorf("state %+v", ns.State())
			}
			if err := ns.Close(); err != nil {
				t.Fatal(err)
			}
			if err := ns.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if !errors.Is(ns.State().Err, errNotifyClosed) {
				t.Errorf("State().Err = %v after Close", ns.State().Err)
			}
			if _, err := os.Stat(path); !abstract && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket file left behind: %v", err)
			}
			if err := fdpass.Notify("READY=1"); err == nil {
				t.Error("Notify to a closed socket succeeded")
			}
			if n := runtime.NumGoroutine(); n > goroutines {
				t.Errorf("goroutines: %d after Close, %d before", n, goroutines)
			}
			if after := openFDs(t); after != fds {
				t.Errorf("open fds: %d after Close, %d before", after, fds)
			}
		})
	}
}

func TestNotifyClientUnset(t *testing.T) {
	t.Setenv(fdpass.NotifySocket, "")
	if err := fdpass.Notify("READY=1"); err != nil {
		t.Errorf("unset NOTIFY_SOCKET: %v", err)
	}
	t.Setenv(fdpass.NotifySocket, "vsock:2:999")
	if err := fdpass.Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "unsupported address") {
		t.Errorf("vsock address: got %v", err)
	}
}

// waitState waits up to 10 s until ok(ns.State()).
func waitState(t *testing.T, ns *NotifySocket, ok func(State) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, changed := ns.watch()
		if ok(st) {
			return
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("state %+v: timed out", st)
		}
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A datagram carrying descriptors (sd_notify's FDSTORE=1) is ignored and
// the descriptors are closed, not leaked into hotswap.
func TestNotifyClosesPassedFDs(t *testing.T) {
	ns := listenNotify(t)
	if err := ns.Attach(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	ns.OnMessage(rec.add)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "sender.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	rc.Control(func(fd uintptr) {
		_, _, werr = c.WriteMsgUnix([]byte("FDSTORE=1\nREADY=1"), unix.UnixRights(int(fd)), &net.UnixAddr{Name: ns.Path(), Net: "unixgram"})
	})
	if werr != nil {
		t.Fatal(werr)
	}
	w.Close()
	waitState(t, ns, func(st State) bool { return st.Ignored == 1 })
	if st := ns.State(); st.Ready || !strings.Contains(st.LastIgnored.Error(), "1 descriptors attached") {
		t.Errorf("state %+v, want the datagram ignored", st)
	}
	// The only write end was in the datagram: once closed, r reads EOF.
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("read %d, %v: want EOF, the passed descriptor is still open", n, err)
	}
}
