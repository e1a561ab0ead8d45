package supervisor

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// The stderr tee: a generation's stderr is a pipe that a small process of
// its own copies to hotswap's stderr, watching for "address already in
// use" (see hint.go). A process, not a goroutine of hotswap: when hotswap
// is killed, a generation that outlives it must still be able to write to
// its stderr, where a pipe read by hotswap alone would give it EPIPE (and
// a Go server SIGPIPE). The tee runs in a process group of its own, copies
// until every writer has closed the pipe, then exits.

// teeEnv marks a hotswap process started as a stderr tee.
const teeEnv = "HOTSWAP_TEE"

// IsTee reports whether this process was started as a stderr tee; main
// then calls [RunTee] and exits with its status.
func IsTee() bool { return os.Getenv(teeEnv) == "1" }

// RunTee copies stdin to stdout until EOF. The first time the copy shows
// one of inUseWords it writes one byte to fd 3, the report pipe, which it
// closes at EOF.
func RunTee() int {
	report := os.NewFile(3, "report")
	scan := scanner{}
	buf := make([]byte, 32<<10)
	reported := false
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			os.Stdout.Write(buf[:n]) // a closed stdout loses the line, as a direct write would
			if !reported && scan.add(buf[:n]) {
				reported = true
				report.Write([]byte{1}) // hotswap may be gone: EPIPE, not a signal (fd 3)
			}
		}
		if err != nil {
			break
		}
	}
	report.Close()
	return 0
}

// scanner finds inUseWords in a stream, across reads, in its first
// watchLimit bytes.
type scanner struct {
	tail []byte
	seen int
}

func (sc *scanner) add(b []byte) bool {
	if sc.seen >= watchLimit {
		return false
	}
	sc.seen += len(b)
	text := bytes.ToLower(append(sc.tail, b...))
	for _, w := range inUseWords {
		if bytes.Contains(text, w) {
			return true
		}
	}
	sc.tail = append(sc.tail[:0], text[max(0, len(text)-32):]...)
	return false
}

// startTee starts the tee process for ow, reading r and writing to dst;
// it reports on ow.inUse and closes ow.done when the tee has finished.
func (ow *outputWatch) startTee(exe string, r *os.File, dst *os.File) error {
	rr, rw, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        []string{"hotswap-stderr-tee"},
		Env:         []string{teeEnv + "=1"},
		Stdin:       r,
		Stdout:      dst,
		ExtraFiles:  []*os.File{rw},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = cmd.Start()
	r.Close()
	rw.Close()
	if err != nil {
		rr.Close()
		return err
	}
	go func() {
		defer close(ow.done)
		b := make([]byte, 1)
		if n, _ := rr.Read(b); n == 1 {
			ow.inUse.Store(true)
		}
		io.Copy(io.Discard, rr) // until the tee closes it at EOF
		rr.Close()
		cmd.Wait()
	}()
	return nil
}
