package healthgate

import (
	"bufio"
	"context"
	"fmt"
	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/hotswap-dev/hotswap/internal/proctest"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// helpers are the mains of helper subprocesses, by name.
var helpers = proctest.Helpers{
	"notify": helperNotify,
}

func TestMain(m *testing.M) { proctest.HelperMain(m, helpers) }

// Environment of the notify helper.
const (
	envSend       = "HOTSWAP_TEST_SEND"        // datagrams separated by "|"; "@sleep D" pauses
	envChildSend  = "HOTSWAP_TEST_CHILD_SEND"  // start a grandchild that sends these
	envChildFirst = "HOTSWAP_TEST_CHILD_FIRST" // the grandchild sends before the child
	envWaitGo     = "HOTSWAP_TEST_WAIT_GO"     // wait for a line on stdin before sending
)

// helperNotify sends the datagrams in $HOTSWAP_TEST_SEND to $NOTIFY_SOCKET
// with Notify, "{child}" replaced by the pid of a grandchild it starts if
// $HOTSWAP_TEST_CHILD_SEND is set. The grandchild sends after the child's
// datagrams. It then reports "sent <grandchild pid>" on fd 3 and waits for
// stdin to close.
func helperNotify() int {
	report := os.NewFile(3, "report")
	stdin := bufio.NewReader(os.Stdin)
	if os.Getenv(envWaitGo) != "" {
		stdin.ReadString('\n')
	}
	var gc *helperProc
	if cs := os.Getenv(envChildSend); cs != "" {
		var err error
		gc, err = startHelperProc("notify", os.Stderr, envChildSend+"=", envSend+"="+cs, envWaitGo+"=1")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	gpid := 0
	if gc != nil {
		gpid = gc.cmd.Process.Pid
	}
	childFirst := os.Getenv(envChildFirst) != ""
	if !childFirst {
		if err := sendAll(os.Getenv(envSend), gpid); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if gc != nil {
		io.WriteString(gc.stdin, "go\n")
		if _, err := gc.readReport(5 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if childFirst {
		if err := sendAll(os.Getenv(envSend), gpid); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Fprintf(report, "sent %d\n", gpid)
	io.Copy(io.Discard, stdin)
	if gc != nil {
		gc.stop()
	}
	return 0
}

func sendAll(send string, gpid int) error {
	if send == "" {
		return nil
	}
	for _, d := range strings.Split(send, "|") {
		if s, ok := strings.CutPrefix(d, "@sleep "); ok {
			dur, err := time.ParseDuration(s)
			if err != nil {
				return err
			}
			time.Sleep(dur)
			continue
		}
		if err := fdpass.Notify(strings.ReplaceAll(d, "{child}", strconv.Itoa(gpid))); err != nil {
			return err
		}
	}
	return nil
}

// helperProc is a running helper: the test binary re-executed.
type helperProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	report *os.File
	lines  *bufio.Reader
}

// startHelperProc starts helper name with env added, its output to out.
func startHelperProc(name string, out io.Writer, env ...string) (_ *helperProc, retErr error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), proctest.UseHelper(name)), env...)
	cmd.Stdout, cmd.Stderr = out, out
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	cmd.ExtraFiles = []*os.File{w}
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("start helper %s: %w", name, err)
	}
	return &helperProc{cmd: cmd, stdin: stdin, report: r, lines: bufio.NewReader(r)}, nil
}

// readReport reads the helper's next report line.
func (h *helperProc) readReport(timeout time.Duration) (string, error) {
	h.report.SetReadDeadline(time.Now().Add(timeout))
	line, err := h.lines.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read helper report: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// stop closes the helper's stdin and waits for it, killing it after 5 s.
func (h *helperProc) stop() error {
	h.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		err = <-done
	}
	h.report.Close()
	return err
}

// startHelper starts helper name for the test and stops it at cleanup.
func startHelper(t *testing.T, name string, env ...string) *helperProc {
	t.Helper()
	h, err := startHelperProc(name, logWriter{t, "child: "}, env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("helper %s: %v", name, err)
		}
	})
	return h
}

// waitSent waits for the notify helper's "sent" report and returns the
// grandchild's pid (0 without one).
func (h *helperProc) waitSent(t *testing.T) int {
	t.Helper()
	line, err := h.readReport(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "sent "))
	if err != nil {
		t.Fatalf("report %q: %v", line, err)
	}
	return pid
}

type logWriter struct {
	t      *testing.T
	prefix string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s%s", w.prefix, strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func mustParse(spec string) Check {
	c, err := Parse(spec)
	if err != nil {
		panic(err)
	}
	return c
}

// waitCancelled runs Wait and cancels its ctx with cause after 50ms. It
// returns Wait's error and how long after the cancel Wait returned.
func waitCancelled(t *testing.T, c Check, tgt Target, cause error) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	cancelled := make(chan time.Time, 1)
	timer := time.AfterFunc(50*time.Millisecond, func() {
		cancelled <- time.Now()
		cancel(cause)
	})
	defer timer.Stop()
	err := Wait(ctx, c, tgt)
	select {
	case at := <-cancelled:
		return time.Since(at), err
	default:
		t.Fatalf("Wait returned before the cancel: %v", err)
		return 0, nil
	}
}
