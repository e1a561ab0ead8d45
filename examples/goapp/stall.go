package main

import (
	"net"
	"sync"
	"time"
)

// stallListener stops handing out connections for a while on request
// (--stall-on), which models a busy generation: the kernel queue fills while
// it does not accept.
type stallListener struct {
	net.Listener
	closed    chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex // guards the field below
	until time.Time
}

func newStallListener(ln net.Listener) *stallListener {
	return &stallListener{Listener: ln, closed: make(chan struct{})}
}

func (l *stallListener) stall(d time.Duration) {
	l.mu.Lock()
	l.until = time.Now().Add(d)
	l.mu.Unlock()
}

func (l *stallListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		wait := time.Until(l.until)
		l.mu.Unlock()
		if wait <= 0 {
			return l.Listener.Accept()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

func (l *stallListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
