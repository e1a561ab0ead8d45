package supervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The stderr relay: a generation's stderr is a pipe that a process of
// hotswap's own copies to hotswap's stderr, watching for signs such as
// "address already in use" (hint.go). A process, not a goroutine of
// hotswap: when hotswap is killed, a generation that outlives it must
// still be able to write to its stderr, where a pipe read by hotswap alone
// would give it EPIPE (and a Go server SIGPIPE).
//
// One relay serves every generation of a hotswap run: it starts with the
// first generation, in a process group of its own, and receives each
// generation's pipe over a unix socket (SCM_RIGHTS) with the file to copy
// it to. Per reload that is a pipe and one sendmsg, where a tee process
// per generation cost a process start (a Go runtime's) and its memory.
// The relay copies each pipe until every writer has closed it; once
// hotswap is gone (the socket reads EOF) and the last pipe is done, it
// exits.
//
// Wire format, both ways one SOCK_SEQPACKET message: hotswap sends a
// pipe's id (4 bytes, little endian) with two descriptors, the pipe's
// read end and the destination; the relay answers id and one byte: the
// signs seen for the first time, or 0 once the pipe is done.

// teeEnv marks a hotswap process started as the stderr relay.
const teeEnv = "HOTSWAP_TEE"

// IsTee reports whether this process was started as the stderr relay;
// main then calls [RunTee] and exits with its status.
func IsTee() bool { return os.Getenv(teeEnv) == "1" }

// RunTee is the stderr relay: it copies every pipe it receives on fd 3,
// the socket to hotswap, to the destination received with it, and
// reports what it sees; it returns once hotswap has closed the socket and
// every pipe is done.
func RunTee() int {
	f := os.NewFile(3, "relay")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "hotswap: stderr relay: %v\n", err)
		return 1
	}
	conn := c.(*net.UnixConn)
	reports := make(chan []byte, 256)
	go func() {
		for m := range reports {
			conn.Write(m) // hotswap may be gone: EPIPE, never a signal (not fd 1 or 2)
		}
	}()
	report := func(id uint32, s sign) {
		m := binary.LittleEndian.AppendUint32(nil, id)
		select {
		case reports <- append(m, byte(s)):
		default: // never hold a copy up for a report
		}
	}
	var copies sync.WaitGroup
	for {
		id, fds, err := recvPipe(conn)
		if err != nil {
			break // hotswap is gone, or closed the socket
		}
		if len(fds) != 2 {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		r, dst := os.NewFile(uintptr(fds[0]), "stderr"), os.NewFile(uintptr(fds[1]), "dst")
		copies.Go(func() {
			copyScanning(dst, r, func(s sign) { report(id, s) })
			r.Close()
			dst.Close()
			report(id, 0)
		})
	}
	copies.Wait()
	return 0
}

// recvPipe reads one message of hotswap's: a pipe's id and descriptors.
func recvPipe(conn *net.UnixConn) (uint32, []int, error) {
	b := make([]byte, 4)
	oob := make([]byte, unix.CmsgSpace(2*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(b, oob)
	if err != nil {
		return 0, nil, err
	}
	if n == 0 && oobn == 0 {
		return 0, nil, errors.New("relay socket closed")
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if rights, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, rights...)
			}
		}
	}
	if n != 4 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return 0, nil, nil
	}
	return binary.LittleEndian.Uint32(b), fds, nil
}

// copyScanning copies r to dst until r's EOF, calling found with the
// signs each read shows for the first time. A failed write loses that
// write, as a direct one would, and the copy goes on.
func copyScanning(dst io.Writer, r *os.File, found func(sign)) {
	buf := make([]byte, 32<<10)
	scan := scanner{}
	for {
		n, err := r.Read(buf)
		if n > 0 {
			dst.Write(buf[:n])
			if s := scan.add(buf[:n]); s != 0 {
				found(s)
			}
		}
		if err != nil {
			return
		}
	}
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

// stderrRelay is hotswap's end of the relay process.
type stderrRelay struct {
	exe string

	mu      sync.Mutex
	conn    *net.UnixConn // nil until started, and once the relay is gone
	next    uint32
	watches map[uint32]*outputWatch
}

func newStderrRelay(exe string) *stderrRelay {
	return &stderrRelay{exe: exe, watches: map[uint32]*outputWatch{}}
}

// add hands r, a generation's stderr pipe, to the relay, which copies it
// to dst and reports to ow; it starts the relay first if none runs. r is
// closed either way.
func (sr *stderrRelay) add(ow *outputWatch, r, dst *os.File) error {
	defer r.Close()
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.conn == nil {
		if err := sr.startLocked(); err != nil {
			return err
		}
	}
	sr.next++
	id := sr.next
	sr.watches[id] = ow
	msg := binary.LittleEndian.AppendUint32(nil, id)
	oob := unix.UnixRights(int(r.Fd()), int(dst.Fd()))
	if _, _, err := sr.conn.WriteMsgUnix(msg, oob, nil); err != nil {
		delete(sr.watches, id)
		return fmt.Errorf("hand the pipe to the stderr relay: %w", err)
	}
	return nil
}

// startLocked starts the relay process and the goroutine that reads its
// reports.
func (sr *stderrRelay) startLocked() error {
	// Close-on-exec under ForkLock, as the net package does where
	// SOCK_CLOEXEC is missing: no child started meanwhile inherits them.
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return os.NewSyscallError("socketpair", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "relay"), os.NewFile(uintptr(fds[1]), "relay")
	defer theirs.Close()
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return err
	}
	cmd := &exec.Cmd{
		Path:        sr.exe,
		Args:        []string{"hotswap-stderr-relay"},
		Env:         []string{teeEnv + "=1"},
		ExtraFiles:  []*os.File{theirs},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		c.Close()
		return fmt.Errorf("start the stderr relay: %w", err)
	}
	conn := c.(*net.UnixConn)
	sr.conn = conn
	go sr.read(conn, cmd)
	return nil
}

// read records the relay's reports until it is gone; then every pipe it
// had is done, and the next add starts a new relay.
func (sr *stderrRelay) read(conn *net.UnixConn, cmd *exec.Cmd) {
	b := make([]byte, 16)
	for {
		n, err := conn.Read(b)
		if err != nil || n == 0 {
			break
		}
		if n != 5 {
			continue
		}
		id, s := binary.LittleEndian.Uint32(b), sign(b[4])
		sr.mu.Lock()
		ow := sr.watches[id]
		if s == 0 {
			delete(sr.watches, id)
		}
		sr.mu.Unlock()
		if ow == nil {
			continue
		}
		if s == 0 {
			close(ow.done)
		} else {
			ow.saw(s)
		}
	}
	conn.Close()
	sr.mu.Lock()
	if sr.conn == conn {
		sr.conn = nil
	}
	left := sr.watches
	sr.watches = map[uint32]*outputWatch{}
	sr.mu.Unlock()
	for _, ow := range left {
		close(ow.done)
	}
	cmd.Wait()
}
