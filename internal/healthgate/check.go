package healthgate

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// Kind is the form of a readiness check.
type Kind int

// The forms a --ready spec can take.
const (
	KindNotify Kind = iota + 1 // notify: READY=1 over sd_notify
	KindHTTP                   // http:// or https://: GET until a 2xx
	KindTCP                    // tcp://HOST:PORT: connect until accepted
	KindExec                   // exec:COMMAND ARGS: run until it exits 0
	KindDelay                  // DURATION: the generation stayed up that long
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case KindNotify:
		return "notify"
	case KindHTTP:
		return "http"
	case KindTCP:
		return "tcp"
	case KindExec:
		return "exec"
	case KindDelay:
		return "delay"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Check is a parsed --ready spec. The zero Check is not valid; build one
// with [Parse]. A Check is a value: [Check.Expand] returns a copy.
type Check struct {
	kind   Kind
	target string        // KindHTTP: the URL; KindTCP: HOST:PORT
	args   []string      // KindExec: the command and its arguments
	delay  time.Duration // KindDelay
}

// Parse parses a --ready spec: "notify", "http://HOST:PORT/PATH",
// "https://HOST:PORT/PATH", "tcp://HOST:PORT", "exec:COMMAND ARGS" or a
// duration such as "500ms". Addresses and exec arguments may hold the
// placeholders {gen}, {pid} and {port}; see [Check.Expand].
func Parse(spec string) (Check, error) {
	c, err := parse(spec)
	if err != nil {
		return Check{}, fmt.Errorf("%q: %w", spec, err)
	}
	return c, nil
}

func parse(spec string) (Check, error) {
	if err := checkPlaceholders(spec); err != nil {
		return Check{}, err
	}
	switch {
	case spec == "notify":
		return Check{kind: KindNotify}, nil
	case strings.HasPrefix(spec, "exec:"):
		return parseExec(strings.TrimPrefix(spec, "exec:"))
	case strings.Contains(spec, "://"):
		return parseURL(spec)
	case spec == "":
		return Check{}, fmt.Errorf("empty spec")
	}
	d, err := time.ParseDuration(spec)
	if err != nil {
		return Check{}, fmt.Errorf("want notify, http://, https://, tcp://, exec:COMMAND or a duration")
	}
	if d <= 0 {
		return Check{}, fmt.Errorf("duration %s is not positive", d)
	}
	return Check{kind: KindDelay, delay: d}, nil
}

// parseExec splits cmdline on spaces. After "sh -c" (or bash, dash), the
// rest of the line is the script, one argument, as the user wrote it.
func parseExec(cmdline string) (Check, error) {
	args := strings.Fields(cmdline)
	if len(args) == 0 {
		return Check{}, fmt.Errorf("exec: no command")
	}
	if len(args) >= 3 && isShell(args[0]) && args[1] == "-c" {
		script := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(cmdline), args[0]))
		script = strings.TrimSpace(strings.TrimPrefix(script, "-c"))
		args = []string{args[0], "-c", script}
	}
	return Check{kind: KindExec, args: args}, nil
}

func isShell(name string) bool {
	switch path.Base(name) {
	case "sh", "bash", "dash":
		return true
	}
	return false
}

func parseURL(spec string) (Check, error) {
	// Validate with every placeholder filled in, so that "{port}" parses.
	u, err := url.Parse(expand(spec, sampleVars()))
	if err != nil {
		return Check{}, err
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return Check{}, fmt.Errorf("invalid port %q", p)
		}
	}
	if err := checkHealthPort(spec, u); err != nil {
		return Check{}, err
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return Check{}, fmt.Errorf("no host")
		}
		if u.User != nil {
			return Check{}, fmt.Errorf("user info is not supported")
		}
		return Check{kind: KindHTTP, target: spec}, nil
	case "tcp":
		if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return Check{}, fmt.Errorf("tcp: want tcp://HOST:PORT only")
		}
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
			return Check{}, fmt.Errorf("tcp: want tcp://HOST:PORT")
		}
		return Check{kind: KindTCP, target: strings.TrimPrefix(spec, "tcp://")}, nil
	}
	return Check{}, fmt.Errorf("unknown scheme %q", u.Scheme)
}

// Kind returns the form of the check.
func (c Check) Kind() Kind { return c.kind }

// Delay returns the duration of a [KindDelay] check, 0 for the others.
func (c Check) Delay() time.Duration { return c.delay }

// String returns the spec in the form [Parse] accepts.
func (c Check) String() string {
	switch c.kind {
	case KindNotify:
		return "notify"
	case KindHTTP:
		return c.target
	case KindTCP:
		return "tcp://" + c.target
	case KindExec:
		return "exec:" + strings.Join(c.args, " ")
	case KindDelay:
		return c.delay.String()
	}
	return ""
}

// NeedsNotify reports whether the check needs a [NotifySocket] for the
// generation (and NOTIFY_SOCKET in its environment).
func (c Check) NeedsNotify() bool { return c.kind == KindNotify }

// UsesPort reports whether the spec mentions {port}, so that the supervisor
// must make a [HealthSocket] and pass its port in [Vars].
func (c Check) UsesPort() bool {
	return strings.Contains(c.target, "{port}") || strings.Contains(strings.Join(c.args, " "), "{port}")
}

// checkHealthPort accepts {port} as a probe's port only in an http or https
// URL whose host is 127.0.0.1: {port} is a socket the supervisor binds and
// listens on there ([HealthSocket]) before the generation starts, so a tcp
// probe's connection would be accepted by the kernel whether or not the
// generation serves, and another host (localhost may be ::1) is an address
// anyone can bind.
func checkHealthPort(spec string, u *url.URL) error {
	rest := spec[strings.Index(spec, "://")+3:]
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if !strings.Contains(rest, "{port}") {
		return nil
	}
	switch {
	case u.Scheme == "tcp":
		return fmt.Errorf("tcp:// cannot probe {port}: the {port} socket is bound and listening by hotswap before the generation starts, so a connection proves nothing (use http://127.0.0.1:{port}/PATH or exec:)")
	case u.Hostname() != "127.0.0.1":
		return fmt.Errorf("{port} is a socket on 127.0.0.1, not on %s (write %s://127.0.0.1:{port}/...)", u.Hostname(), u.Scheme)
	}
	return nil
}
