package reuse

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connPair is one connection seen from both ends.
type connPair struct{ client, served net.Conn }

func dialPairs(t *testing.T, ln net.Listener, n int) []connPair {
	t.Helper()
	var out []connPair
	for range n {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		out = append(out, connPair{c, s})
	}
	return out
}

// listenLoopback listens on a free loopback port, closed at the test's end.
func listenLoopback(t *testing.T) (net.Listener, Port) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p, err := PortOf(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return ln, p
}

// holdInGrandchild starts sh with f as its fd 3 and a sleeping child that
// keeps it once sh has closed its own copy; both end with the test.
func holdInGrandchild(t *testing.T, f *os.File) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 30 & echo started; exec 3<&-; wait")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // sh and sleep, ended together
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	bufio.NewReader(out).ReadString('\n')
	return cmd
}

func snapshot(t *testing.T, pid int, p Port) *ConnSet {
	t.Helper()
	set, err := Snapshot(pid, []Port{p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestSnapshotIdle: a connection is idle only between requests: not before
// its first request, not while a request is unread or unanswered, not
// while a response is unsent; idle once answered. Refresh follows each by
// its exact address and drops a closed one.
func TestSnapshotIdle(t *testing.T) {
	ln, p := listenLoopback(t)
	pairs := dialPairs(t, ln, 3)
	set := snapshot(t, os.Getpid(), p)
	if len(set.Conns) != 3 || set.Busy() != 3 {
		t.Fatalf("fresh: %d connections, %d busy; want 3, 3 (no request yet)", len(set.Conns), set.Busy())
	}
	// Pair 0 answers a request; pair 1 has one unread; pair 2 read one
	// and has not answered.
	exchange := func(pr connPair, answer bool) {
		t.Helper()
		if _, err := io.WriteString(pr.client, "ping\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(pr.served).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		if answer {
			io.WriteString(pr.served, "pong\n")
			if _, err := bufio.NewReader(pr.client).ReadString('\n'); err != nil {
				t.Fatal(err)
			}
		}
	}
	exchange(pairs[0], true)
	io.WriteString(pairs[1].client, "ping\n")
	exchange(pairs[2], false)
	time.Sleep(20 * time.Millisecond) // the ACKs
	if err := set.Refresh(); err != nil {
		t.Fatal(err)
	}
	idle := map[uint64]bool{}
	for _, c := range set.Conns {
		idle[c.Inode] = c.Idle()
	}
	for i, want := range []bool{true, false, false} {
		if got := idle[inodeOf(t, pairs[i].served)]; got != want {
			t.Errorf("pair %d: idle %v, want %v", i, got, want)
		}
	}
	pairs[0].served.Close()
	if err := set.Refresh(); err != nil {
		t.Fatal(err)
	}
	if len(set.Conns) != 2 || set.Busy() != 2 {
		t.Errorf("after one closed: %d connections, %d busy; want 2, 2", len(set.Conns), set.Busy())
	}

	// A connection that a child of the tree's main thread holds counts,
	// once, though both hold it for a while.
	f, err := pairs[1].served.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := holdInGrandchild(t, f)
	if n := len(snapshot(t, cmd.Process.Pid, p).Conns); n != 1 {
		t.Errorf("child's tree: %d connections, want 1", n)
	}
	f.Close()
	pairs[1].served.Close()
	pairs[2].served.Close()
	if n := len(snapshot(t, cmd.Process.Pid, p).Conns); n != 1 {
		t.Errorf("grandchild: %d connections, want 1", n)
	}
	// The fallback where pidfd_getfd is refused: one dump.
	socks, err := treeSockets(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dumped, err := dumpSnapshot(cmd.Process.Pid, socks, map[Port]bool{p: true})
	closePidfds(socks)
	if err != nil || len(dumped.Conns) != 1 || dumped.Conns[0].BytesRecvd == 0 {
		t.Errorf("dump: %+v, %v; want 1 connection with its TCP_INFO", dumped, err)
	}
	// A port filter longer than the kernel's limit matches here instead.
	many := []Port{p}
	for i := range diagMaxPorts + 1 {
		many = append(many, Port{p.Family, 1 + i})
	}
	if set, err := Snapshot(cmd.Process.Pid, many, nil); err != nil || len(set.Conns) != 1 {
		t.Errorf("%d ports: %v, %v; want 1 connection", len(many), set, err)
	}
	start := time.Now()
	const calls = 200
	for range calls {
		set.Refresh()
	}
	t.Logf("Refresh of %d: %v per call", len(set.Conns), time.Since(start)/calls)
	start = time.Now()
	for range calls / 10 {
		Snapshot(cmd.Process.Pid, []Port{p}, nil)
	}
	t.Logf("Snapshot: %v per call", time.Since(start)/(calls/10))
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if _, err := Snapshot(cmd.Process.Pid, []Port{p}, nil); err == nil {
		t.Errorf("exited pid: got nil error")
	}
	// Only now is none left in this process's tree: sh was its child,
	// and whether its sleep counted depended on which of the test's
	// threads forked sh (only the main thread's children are walked).
	if n := len(snapshot(t, os.Getpid(), p).Conns); n != 0 {
		t.Errorf("closed here: %d connections, want 0", n)
	}
}

func inodeOf(t *testing.T, c net.Conn) uint64 {
	t.Helper()
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestBusyWantsTwoQuietLooks: one look cannot tell a connection between
// requests from one whose response is half written, or whose next request
// was read in the tick its previous response left; Busy counts it idle
// only at a second idle look with no byte moved since the first.
func TestBusyWantsTwoQuietLooks(t *testing.T) {
	ln, p := listenLoopback(t)
	pr := dialPairs(t, ln, 1)[0]
	client, served := bufio.NewReader(pr.client), bufio.NewReader(pr.served)
	read := func(r *bufio.Reader, want string) {
		t.Helper()
		if s, err := r.ReadString('\n'); err != nil || s != want {
			t.Fatalf("read %q, %v; want %q", s, err, want)
		}
	}
	refresh := func(set *ConnSet) {
		t.Helper()
		time.Sleep(20 * time.Millisecond) // the ACKs
		if err := set.Refresh(); err != nil {
			t.Fatal(err)
		}
		if len(set.Conns) != 1 {
			t.Fatalf("%d connections, want 1", len(set.Conns))
		}
	}
	// A request read and half answered: the head is sent, the body not.
	io.WriteString(pr.client, "GET\n")
	read(served, "GET\n")
	io.WriteString(pr.served, "head\n")
	read(client, "head\n")
	time.Sleep(20 * time.Millisecond) // the ACK
	set := snapshot(t, os.Getpid(), p)
	if len(set.Conns) != 1 || !set.Conns[0].Idle() {
		t.Fatalf("half answered: %+v; want one connection that looks idle (the case Busy must catch)", set.Conns)
	}
	if n := set.Busy(); n != 1 {
		t.Errorf("half answered, first look: %d busy, want 1", n)
	}
	io.WriteString(pr.served, "body\n")
	read(client, "body\n")
	refresh(set)
	if n := set.Busy(); n != 1 {
		t.Errorf("body sent since the first look: %d busy, want 1", n)
	}
	refresh(set)
	if n := set.Busy(); n != 0 {
		t.Errorf("answered, nothing moved since the previous look: %d busy, want 0", n)
	}
	// The next request, read and not answered: the connection turned
	// over (the client read the response sent since the snapshot and is
	// talking again), so it no longer holds the stop.
	io.WriteString(pr.client, "GET\n")
	read(served, "GET\n")
	refresh(set)
	if n := set.Busy(); n != 0 {
		t.Errorf("next request after a response sent during the drain: %d busy, want 0 (turned over)", n)
	}
}

// TestBusyTurnedOver: a closed-loop keep-alive connection is never idle at
// two looks in a row, so the drain must not wait for it once it has turned
// over: a response sent between two looks, then the next request received
// between two later ones. A request received in the same interval as the
// response went out does not count, nor does a long upload that never got
// anything back.
func TestBusyTurnedOver(t *testing.T) {
	ln, p := listenLoopback(t)
	prs := dialPairs(t, ln, 2)
	ka, up := prs[0], prs[1]
	kaClient, kaServed := bufio.NewReader(ka.client), bufio.NewReader(ka.served)
	line := func(r *bufio.Reader) {
		t.Helper()
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	refresh := func(set *ConnSet) {
		t.Helper()
		time.Sleep(20 * time.Millisecond)
		if err := set.Refresh(); err != nil {
			t.Fatal(err)
		}
		if len(set.Conns) != 2 {
			t.Fatalf("%d connections, want 2", len(set.Conns))
		}
	}
	wantBusy := func(set *ConnSet, want int, what string) {
		t.Helper()
		if n := set.Busy(); n != want {
			t.Errorf("%s: %d busy, want %d", what, n, want)
		}
	}
	// ka: a request read, not answered. up: an upload under way.
	io.WriteString(ka.client, "GET\n")
	line(kaServed)
	io.WriteString(up.client, "PUT part 1\n")
	time.Sleep(20 * time.Millisecond)
	set := snapshot(t, os.Getpid(), p)
	wantBusy(set, 2, "snapshot")
	// The response and the next request in one interval: the order is
	// unknown, so ka stays busy (it is not idle: the request is unread).
	io.WriteString(ka.served, "200\n")
	line(kaClient)
	io.WriteString(ka.client, "GET\n")
	io.WriteString(up.client, "PUT part 2\n")
	refresh(set)
	wantBusy(set, 2, "response and next request in one interval")
	// Next interval: ka's request read and answered, another one sent;
	// the upload goes on.
	line(kaServed)
	io.WriteString(ka.served, "200\n")
	line(kaClient)
	io.WriteString(ka.client, "GET\n")
	line(kaServed)
	io.WriteString(up.client, "PUT part 3\n")
	refresh(set)
	wantBusy(set, 1, "ka turned over, the upload still going")
	// An interim answer to the upload, then more of its body: that is a
	// turn over too (the documented case a server that exits at once can
	// lose).
	io.WriteString(up.served, "100\n")
	refresh(set)
	io.WriteString(up.client, "PUT part 4\n")
	refresh(set)
	wantBusy(set, 0, "both turned over")
}

// TestSnapshotHolderClosed: a socket the tree lists twice is read from a
// later holder when the first closed its copy after /proc listed it (sh
// handing a connection to its child, then closing its own): not lost.
func TestSnapshotHolderClosed(t *testing.T) {
	ln, p := listenLoopback(t)
	pairs := dialPairs(t, ln, 1)
	f, err := pairs[0].served.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino := inodeOf(t, pairs[0].served)
	closed, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(closed) // listed, then closed before it is duplicated
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	seen := map[uint64]bool{}
	var n int
	for _, fd := range []int{closed, int(f.Fd())} {
		ps := procSockets{pid: os.Getpid(), pidfd: pidfd, socks: []procSocket{{fd, ino}}}
		cs, err := ps.conns(map[Port]bool{p: true}, seen)
		if err != nil {
			t.Fatal(err)
		}
		n += len(cs)
	}
	if n != 1 {
		t.Errorf("%d connections, want 1 (from the holder that still has it)", n)
	}
}
