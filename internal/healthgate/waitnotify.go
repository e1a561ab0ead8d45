package healthgate

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// waitNotify waits for READY=1 from t.PID or the main pid it named. A
// positive t.Options.Timeout is extended by EXTEND_TIMEOUT_USEC=.
func waitNotify(ctx context.Context, t Target, start time.Time) error {
	n := t.Notify
	if n == nil {
		return errors.New("healthgate: wait for notify: no notify socket in target")
	}
	if t.OnMessage != nil {
		n.OnMessage(t.OnMessage)
	}
	if err := n.Attach(t.PID); err != nil {
		return err
	}
	var deadline time.Time
	if t.Options.Timeout > 0 {
		deadline = start.Add(t.Options.Timeout)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		st, changed := n.watch()
		if st.Ready {
			return nil
		}
		if err := notifyFailed(st); err != nil {
			return &notReadyError{after: time.Since(start).Round(time.Millisecond), last: err}
		}
		timeout := timer.C
		if deadline.IsZero() {
			timeout = nil
		} else {
			if st.ExtendUntil.After(deadline) {
				deadline = st.ExtendUntil
			}
			timer.Reset(time.Until(deadline))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return notReady(ctx, start, notifyPending(st))
		case <-timeout:
			return &notReadyError{after: time.Since(start).Round(time.Millisecond),
				cause: timeoutError(deadline.Sub(start).Round(time.Millisecond)), last: notifyPending(st)}
		}
	}
}

// notifyFailed returns why the generation can no longer become ready.
func notifyFailed(st State) error {
	switch {
	case st.Err != nil:
		return st.Err
	case st.Stopping:
		return fmt.Errorf("pid %d sent STOPPING=1 before READY=1", st.PID)
	}
	return nil
}

// notifyPending describes a generation that has not sent READY=1 yet.
func notifyPending(st State) error {
	s := fmt.Sprintf("no READY=1 from pid %d", st.PID)
	if st.MainPID != 0 {
		s += fmt.Sprintf(" or main pid %d", st.MainPID)
	}
	if st.Status != "" {
		s += fmt.Sprintf(" (STATUS=%q)", st.Status)
	}
	if st.LastIgnored != nil {
		return fmt.Errorf("%s; %d datagrams ignored, last: %w", s, st.Ignored, st.LastIgnored)
	}
	return errors.New(s)
}
