package supervisor

import (
	"bytes"
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

// RunTee copies stdin to stdout until EOF. Each time the copy shows a
// sign (signWords) not seen before, it writes the sign, one byte, to fd 3,
// the report pipe, which it closes at EOF.
func RunTee() int {
	report := os.NewFile(3, "report")
	scan := scanner{}
	buf := make([]byte, 32<<10)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			os.Stdout.Write(buf[:n]) // a closed stdout loses the line, as a direct write would
			if s := scan.add(buf[:n]); s != 0 {
				report.Write([]byte{byte(s)}) // hotswap may be gone: EPIPE, not a signal (fd 3)
			}
		}
		if err != nil {
			break
		}
	}
	report.Close()
	return 0
}

// scanner finds signWords in a stream, across reads, in its first
// watchLimit bytes.
type scanner struct {
	tail  []byte
	seen  int
	found sign
}

// add returns the signs that b shows for the first time.
func (sc *scanner) add(b []byte) sign {
	if sc.seen >= watchLimit {
		return 0
	}
	sc.seen += len(b)
	text := bytes.ToLower(append(sc.tail, b...))
	var s sign
	for _, w := range signWords() {
		if sc.found&w.sign == 0 && bytes.Contains(text, w.words) {
			s |= w.sign
		}
	}
	sc.found |= s
	sc.tail = append(sc.tail[:0], text[max(0, len(text)-32):]...)
	return s
}

// startTee starts the tee process for ow, reading r and writing to dst;
// it records the signs the tee reports and closes ow.done when it has
// finished.
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
		b := make([]byte, 8)
		for {
			n, err := rr.Read(b) // until the tee closes it at EOF
			for _, s := range b[:n] {
				ow.saw(sign(s))
			}
			if err != nil {
				break
			}
		}
		rr.Close()
		cmd.Wait()
	}()
	return nil
}
