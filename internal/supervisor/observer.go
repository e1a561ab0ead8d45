package supervisor

import "time"

// Observer receives the supervisor's events, for metrics. Its methods are
// called from the supervisor's goroutines and must be safe for concurrent
// use and must not block.
type Observer interface {
	// ReloadDone reports the outcome of a reload that took d, from its start
	// until the new generation serves or was rolled back; err is nil on success.
	ReloadDone(gen int, d time.Duration, err error)
	// Stopped reports that a generation exited d after its stop signal.
	Stopped(gen int, d time.Duration)
	// Restarted reports that a generation was started after a crash.
	Restarted(gen int)
}

type nopObserver struct{}

func (nopObserver) ReloadDone(int, time.Duration, error) {}
func (nopObserver) Stopped(int, time.Duration)           {}
func (nopObserver) Restarted(int)                        {}
