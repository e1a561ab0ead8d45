package healthgate

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"
)

// NotifySocket is the sd_notify socket of one generation: a unixgram
// socket with SO_PASSCRED whose path goes into the generation's
// NOTIFY_SOCKET. Every datagram is credited by the sender's pid from
// SCM_CREDENTIALS: only the generation's pid (see [NotifySocket.Attach])
// and the main pid it names with MAINPID= change its [State]. The socket
// keeps reading after the gate, so STATUS=, RELOADING=1, STOPPING=1 and
// WATCHDOG=1 stay observable until [NotifySocket.Close].
type NotifySocket struct {
	path       string
	conn       *net.UnixConn
	removeFile bool
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error

	hmu sync.Mutex // serialises handler calls; taken before mu

	mu       sync.Mutex // guards the fields below
	state    State
	attached bool
	pending  []Message // received before Attach
	// held are datagrams from a pid not credited (yet): the generation
	// may name it with MAINPID= afterwards (podman names conmon, which
	// forwards the container's READY=1, in a race with that datagram).
	held    []Message
	handler func(Message)
	changed chan struct{} // closed and replaced on every change
}

// State is what a generation has told its [NotifySocket] so far.
type State struct {
	PID       int    // the generation's pid, 0 before Attach
	MainPID   int    // from MAINPID=, 0 if never sent
	Ready     bool   // READY=1 was received at least once
	Reloading bool   // RELOADING=1 was received and no READY=1 since
	Stopping  bool   // STOPPING=1 was received
	Status    string // the last STATUS=
	Errno     int    // the last ERRNO=

	ExtendUntil      time.Time     // the latest deadline asked for with EXTEND_TIMEOUT_USEC=
	WatchdogAt       time.Time     // when WATCHDOG=1 last arrived
	WatchdogInterval time.Duration // from WATCHDOG_USEC=

	Ignored     int   // datagrams not applied: malformed or uncredited
	LastIgnored error // why the last of them was not applied

	// Err is set when the socket stopped reading: it was closed, or a
	// receive failed.
	Err error
}

// maxPending bounds the datagrams kept from before Attach.
const maxPending = 64

// errNotifyClosed is State.Err after Close.
var errNotifyClosed = errors.New("healthgate: notify socket closed")

func newNotifySocket(path string, conn *net.UnixConn, removeFile bool) *NotifySocket {
	return &NotifySocket{path: path, conn: conn, removeFile: removeFile, changed: make(chan struct{})}
}

// Path returns the socket's address, the value for NOTIFY_SOCKET. An
// abstract address starts with "@".
func (n *NotifySocket) Path() string { return n.path }

// Attach credits the socket to the generation with the given pid.
// Datagrams that arrived before Attach (the child may notify before its
// parent learns its pid) are applied now, in order. Attaching the same
// pid again does nothing; another pid is an error.
func (n *NotifySocket) Attach(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("healthgate: attach notify socket %s: invalid pid %d", n.path, pid)
	}
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.mu.Lock()
	if n.attached {
		cur := n.state.PID
		n.mu.Unlock()
		if cur != pid {
			return fmt.Errorf("healthgate: attach notify socket %s to pid %d: attached to pid %d", n.path, pid, cur)
		}
		return nil
	}
	n.attached, n.state.PID = true, pid
	pending := n.pending
	n.pending = nil
	for i := range pending {
		pending[i] = n.applyLocked(pending[i])
	}
	h := n.handler
	n.broadcastLocked()
	n.mu.Unlock()
	for _, m := range pending {
		callHandler(h, m)
	}
	return nil
}

// OnMessage sets fn to receive every datagram from now on until Close,
// including those not applied (with Message.Err set). fn runs on the
// socket's goroutine, one call at a time and in arrival order; it must not
// block, and must not call Attach or Close. A nil fn removes the handler.
func (n *NotifySocket) OnMessage(fn func(Message)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.handler = fn
}

// State returns a snapshot of what the generation has reported.
func (n *NotifySocket) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}

// watch returns the current state and a channel closed on its next change.
func (n *NotifySocket) watch() (State, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state, n.changed
}

// Close stops reading, waits for the socket's goroutine and removes the
// socket file. It is idempotent.
func (n *NotifySocket) Close() error {
	n.closeOnce.Do(func() {
		n.closeErr = n.conn.Close()
		n.wg.Wait()
		if n.removeFile {
			if err := os.Remove(n.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				n.closeErr = errors.Join(n.closeErr, err)
			}
		}
		if n.closeErr != nil {
			n.closeErr = fmt.Errorf("healthgate: close notify socket %s: %w", n.path, n.closeErr)
		}
	})
	return n.closeErr
}

// receive handles one datagram from pid; recvErr says why it is unusable.
func (n *NotifySocket) receive(pid int, b []byte, recvErr error) {
	m, err := Message{}, recvErr
	if err == nil {
		m, err = ParseMessage(b)
	}
	m.PID = pid
	if err != nil {
		m.Err = fmt.Errorf("datagram from pid %d: %w", pid, err)
	}
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.mu.Lock()
	if !n.attached {
		if len(n.pending) < maxPending {
			n.pending = append(n.pending, m)
		} else {
			n.ignoreLocked(fmt.Errorf("datagram from pid %d: over %d before attach", pid, maxPending))
		}
		n.mu.Unlock()
		return
	}
	m = n.applyLocked(m)
	h := n.handler
	n.broadcastLocked()
	n.mu.Unlock()
	callHandler(h, m)
}

func callHandler(h func(Message), m Message) {
	if h != nil {
		h(m)
	}
}

// applyLocked credits m to the generation and folds it into the state. It
// returns m with Err set if m was not applied.
func (n *NotifySocket) applyLocked(m Message) Message {
	if m.Err == nil && (m.PID == 0 || m.PID != n.state.PID && m.PID != n.state.MainPID) {
		m.Err = fmt.Errorf("%w: datagram from pid %d, generation is pid %d", ErrUncredited, m.PID, n.state.PID)
		if m.PID != 0 && len(n.held) < maxPending {
			held := m
			held.Err = nil
			n.held = append(n.held, held)
		}
	}
	if m.Err != nil {
		n.ignoreLocked(m.Err)
		return m
	}
	s := &n.state
	if m.MainPID != 0 && m.MainPID != s.MainPID {
		s.MainPID = m.MainPID
		defer n.creditHeldLocked()
	}
	if m.Reloading {
		s.Reloading = true
	}
	if m.Ready {
		s.Ready, s.Reloading = true, false
	}
	s.Stopping = s.Stopping || m.Stopping
	if m.HasStatus {
		s.Status = m.Status
	}
	if m.Errno != 0 {
		s.Errno = m.Errno
	}
	n.timersLocked(m, time.Now())
	return m
}

// creditHeldLocked applies the held datagrams that came from the main
// pid just named, in arrival order, and forgets the others.
func (n *NotifySocket) creditHeldLocked() {
	held := n.held
	n.held = nil
	for _, m := range held {
		if m.PID == n.state.MainPID {
			n.state.Ignored--
			n.applyLocked(m)
		}
	}
}

func (n *NotifySocket) timersLocked(m Message, now time.Time) {
	s := &n.state
	if m.ExtendTimeout > 0 {
		if until := now.Add(m.ExtendTimeout); until.After(s.ExtendUntil) {
			s.ExtendUntil = until
		}
	}
	if m.Watchdog {
		s.WatchdogAt = now
	}
	if m.WatchdogInterval > 0 {
		s.WatchdogInterval = m.WatchdogInterval
	}
}

func (n *NotifySocket) ignoreLocked(err error) {
	n.state.Ignored++
	n.state.LastIgnored = err
}

func (n *NotifySocket) broadcastLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// fail records that the socket stopped reading.
func (n *NotifySocket) fail(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.state.Err = err
	n.broadcastLocked()
}
