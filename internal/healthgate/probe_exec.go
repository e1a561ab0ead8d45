package healthgate

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// maxExecOutput is how much of an exec probe's output its error keeps.
const maxExecOutput = 1024

// execWaitDelay bounds how long an exec probe's output is read after the
// command was killed or exited, if a descendant still holds the pipe.
const execWaitDelay = 100 * time.Millisecond

// execProbe is ready when the command exits 0. It runs without a shell, in
// its own process group, which is killed when the attempt times out or
// ctx is cancelled.
type execProbe struct{ args, env []string }

func (p execProbe) attempt(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, p.args[0], p.args[1:]...)
	out := &tailBuffer{max: maxExecOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(probeEnv(os.Environ()), p.env...)
	cmd.WaitDelay = execWaitDelay
	ownProcessGroup(cmd)
	err := cmd.Run()
	if err != nil {
		return fmt.Errorf("exec %q: %w%s", strings.Join(p.args, " "), err, out.suffix())
	}
	return nil
}

// probeEnv drops the variables that belong to the generation, so that the
// probe does not claim its sockets or notify as it.
func probeEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		key, _, _ := strings.Cut(kv, "=")
		switch key {
		case "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "TABLEFLIP_HAS_PARENT_7DIU3":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// tailBuffer keeps the last max bytes written to it. os/exec writes to it
// from one goroutine when Stdout and Stderr are the same writer.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

// suffix returns the output as one line for an error message, or "".
func (t *tailBuffer) suffix() string {
	s := strings.TrimSpace(strings.ToValidUTF8(string(t.b), "?"))
	if s == "" {
		return ""
	}
	return ": " + strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ; ")), " ")
}
