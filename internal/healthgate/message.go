package healthgate

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxMessageSize is the largest sd_notify datagram a [NotifySocket]
// accepts, systemd's NOTIFY_BUFFER_MAX (PIPE_BUF). Longer datagrams are
// reported and ignored.
const MaxMessageSize = 4096

// Message is one sd_notify datagram: newline-separated KEY=VALUE
// assignments, as sd_notify(3) describes. Keys hotswap does not use are
// ignored.
type Message struct {
	// PID is the sender's pid from SCM_CREDENTIALS, set by NotifySocket;
	// ParseMessage leaves it 0.
	PID int

	Ready     bool   // READY=1
	Reloading bool   // RELOADING=1
	Stopping  bool   // STOPPING=1
	Status    string // STATUS=..., "" if absent
	HasStatus bool   // the message had a STATUS= line (it may be empty)
	MainPID   int    // MAINPID=n, 0 if absent
	Errno     int    // ERRNO=n, 0 if absent

	ExtendTimeout    time.Duration // EXTEND_TIMEOUT_USEC=n, 0 if absent
	Watchdog         bool          // WATCHDOG=1
	WatchdogInterval time.Duration // WATCHDOG_USEC=n, 0 if absent
	MonotonicUSec    uint64        // MONOTONIC_USEC=n (sent with RELOADING=1)

	// Err is set by NotifySocket on a datagram that was not applied: it
	// was malformed, or its sender is not credited to the generation.
	Err error
}

// ErrUncredited marks a datagram from a process that is neither the
// generation nor the main pid it named with MAINPID=.
var ErrUncredited = errors.New("healthgate: sender not credited to the generation")

// ParseMessage parses one sd_notify datagram strictly: lines of KEY=VALUE
// with KEY in [A-Z0-9_], each key at most once, valid UTF-8, no NUL
// bytes; one trailing newline is allowed. Known keys must carry valid
// values (READY=1, MAINPID=positive pid, ...). Unknown keys are ignored.
func ParseMessage(b []byte) (Message, error) {
	var m Message
	if err := checkDatagram(b); err != nil {
		return Message{}, fmt.Errorf("healthgate: parse notify message: %w", err)
	}
	seen := make(map[string]bool)
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		key, value, err := splitLine(line)
		if err == nil && seen[key] {
			err = fmt.Errorf("duplicate key %s", key)
		}
		if err == nil {
			err = m.set(key, value)
		}
		if err != nil {
			return Message{}, fmt.Errorf("healthgate: parse notify message: line %d: %w", i+1, err)
		}
		seen[key] = true
	}
	return m, nil
}

func checkDatagram(b []byte) error {
	switch {
	case len(b) == 0 || string(b) == "\n":
		return errors.New("empty")
	case len(b) > MaxMessageSize:
		return fmt.Errorf("%d bytes, over %d", len(b), MaxMessageSize)
	case bytes.IndexByte(b, 0) >= 0:
		return errors.New("NUL byte")
	case !utf8.Valid(b):
		return errors.New("invalid UTF-8")
	}
	return nil
}

func splitLine(line string) (key, value string, err error) {
	key, value, ok := strings.Cut(line, "=")
	if !ok {
		return "", "", fmt.Errorf("%q: want KEY=VALUE", truncate(line, 40))
	}
	if key == "" {
		return "", "", errors.New("empty key")
	}
	for _, r := range key {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return "", "", fmt.Errorf("key %q: want [A-Z0-9_]", truncate(key, 40))
		}
	}
	return key, value, nil
}

// set applies one assignment. It returns an error for a known key with an
// invalid value and ignores unknown keys.
func (m *Message) set(key, value string) error {
	var err error
	switch key {
	case "READY":
		err = setFlag(&m.Ready, value)
	case "RELOADING":
		err = setFlag(&m.Reloading, value)
	case "STOPPING":
		err = setFlag(&m.Stopping, value)
	case "WATCHDOG":
		err = setFlag(&m.Watchdog, value)
	case "STATUS":
		m.Status, m.HasStatus = value, true
	case "MAINPID":
		m.MainPID, err = parseInt(value, 1, 1<<22)
	case "ERRNO":
		m.Errno, err = parseInt(value, 0, 1<<16)
	case "EXTEND_TIMEOUT_USEC":
		m.ExtendTimeout, err = parseUSec(value)
	case "WATCHDOG_USEC":
		m.WatchdogInterval, err = parseUSec(value)
	case "MONOTONIC_USEC":
		m.MonotonicUSec, err = strconv.ParseUint(value, 10, 64)
	}
	if err != nil {
		return fmt.Errorf("%s=%s: %w", key, truncate(value, 40), err)
	}
	return nil
}

func setFlag(dst *bool, value string) error {
	if value != "1" {
		return errors.New("want 1")
	}
	*dst = true
	return nil
}

func parseInt(value string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(value)
	if err != nil || n < lo || n > hi || strings.HasPrefix(value, "+") {
		return 0, fmt.Errorf("want an integer in [%d, %d]", lo, hi)
	}
	return n, nil
}

// maxUSec keeps a microsecond count within time.Duration.
const maxUSec = uint64(1<<63-1) / uint64(time.Microsecond)

func parseUSec(value string) (time.Duration, error) {
	n, err := strconv.ParseUint(value, 10, 64)
	if err != nil || n > maxUSec {
		return 0, errors.New("want microseconds")
	}
	return time.Duration(n) * time.Microsecond, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
