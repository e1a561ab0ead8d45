package supervisor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/healthgate"
	"github.com/hotswap-dev/hotswap/internal/reuse"
	"golang.org/x/sys/unix"
)

// Documented defaults of [Config].
const (
	DefaultDrainTimeout = 30 * time.Second
	DefaultReadyTimeout = 60 * time.Second
	DefaultStopSignal   = syscall.SIGTERM
	DefaultBackoffMin   = 100 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultBackoffReset = 10 * time.Second
	DefaultMaxDraining  = 4
	// DefaultDrainConnWait bounds how long a reuseport drain waits for
	// the old generation's open connections to close.
	DefaultDrainConnWait = 2 * time.Second
)

// ListenSpec is one socket the supervisor owns, from --listen [NAME=]URL,
// with every option the URL gives.
type ListenSpec struct {
	Name    string // handed to children in LISTEN_FDNAMES
	Network string // tcp, tcp4, tcp6, udp, udp4, udp6 or unix
	Address string // host:port, or an absolute path for unix
	// Unix is the mode and owner of a unix socket file, from
	// ?mode=0660&owner=U&group=G; applied before clients can connect.
	Unix reuse.UnixOptions
}

func (l ListenSpec) String() string {
	if l.Network == "unix" {
		return "unix://" + l.Address
	}
	return l.Network + "://" + l.Address
}

// ParseListen parses "[NAME=]URL" where URL is tcp://HOST:PORT, tcp4://,
// tcp6://[::1]:PORT, udp://, udp4://, udp6:// or
// unix:///abs/path[?mode=0660&owner=U&group=G] (mode octal; owner and
// group names or numbers). An empty name is filled in by [Config]
// validation.
func ParseListen(s string) (ListenSpec, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || strings.Contains(name, "://") {
		name, rest = "", s
	}
	u, err := url.Parse(rest)
	if err != nil || u.Scheme == "" {
		return ListenSpec{}, fmt.Errorf("listen %q: want [NAME=]tcp://HOST:PORT or unix:///PATH", s)
	}
	l := ListenSpec{Name: name, Network: u.Scheme}
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if u.Path != "" || u.RawQuery != "" || u.User != nil {
			return ListenSpec{}, fmt.Errorf("listen %q: want %s://HOST:PORT with nothing after the port", s, u.Scheme)
		}
		_, port, err := net.SplitHostPort(u.Host)
		if err != nil || port == "" {
			return ListenSpec{}, fmt.Errorf("listen %q: want %s://HOST:PORT", s, u.Scheme)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return ListenSpec{}, fmt.Errorf("listen %q: port %q is not a number from 0 to 65535", s, port)
		}
		l.Address = u.Host
	case "unix":
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			return ListenSpec{}, fmt.Errorf("listen %q: want unix:///ABSOLUTE/PATH", s)
		}
		l.Address = u.Path
		if l.Unix, err = parseUnixOptions(u.RawQuery); err != nil {
			return ListenSpec{}, fmt.Errorf("listen %q: %w", s, err)
		}
	default:
		return ListenSpec{}, fmt.Errorf("listen %q: unknown scheme %q (want tcp, tcp4, tcp6, udp, udp4, udp6 or unix)", s, u.Scheme)
	}
	if err := checkName(l.Name); name != "" && err != nil {
		return ListenSpec{}, fmt.Errorf("listen %q: %w", s, err)
	}
	return l, nil
}

// parseUnixOptions parses the query of a unix listener URL.
func parseUnixOptions(query string) (reuse.UnixOptions, error) {
	var o reuse.UnixOptions
	if query == "" {
		return o, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return o, fmt.Errorf("options: %w", err)
	}
	owner := func() *reuse.Owner {
		if o.Owner == nil {
			o.Owner = &reuse.Owner{UID: -1, GID: -1}
		}
		return o.Owner
	}
	for k, v := range q {
		val := v[len(v)-1]
		switch k {
		case "mode":
			m, err := strconv.ParseUint(val, 8, 32)
			if err != nil || m > 0o777 || m == 0 {
				return o, fmt.Errorf("mode %q: want octal permissions such as 0660", val)
			}
			o.Mode = fs.FileMode(m)
		case "owner":
			u, err := lookupUser(val)
			if err != nil {
				return o, fmt.Errorf("owner %q: %w", val, err)
			}
			owner().UID = int(u.uid)
		case "group":
			gid, err := lookupGroup(val)
			if err != nil {
				return o, fmt.Errorf("group %q: %w", val, err)
			}
			owner().GID = int(gid)
		default:
			return o, fmt.Errorf("unknown option %q (want mode, owner or group)", k)
		}
	}
	return o, nil
}

func checkName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("name %q must have 1 to 255 characters", name)
	}
	for _, r := range name {
		if r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("name %q may hold only printable ASCII without ':' or spaces", name)
		}
	}
	return nil
}

// Config configures a [Supervisor]. Zero values take the documented defaults.
type Config struct {
	// Command is the argv of every generation; Command[0] is looked up in
	// PATH when a generation starts, so a replaced binary is picked up.
	Command   []string
	Listeners []ListenSpec

	// Mode is how TCP listeners reach generations; default ModeReusePort.
	// UDP and unix listeners are always shared.
	Mode Mode
	// DrainGrace is how long an old reuseport generation keeps accepting
	// after the cutover at least; default DefaultDrainGrace.
	DrainGrace time.Duration
	// DrainConnWait bounds how long a reuseport drain waits for the old
	// generation's open connections (idle keep-alive ones included) to
	// close before its stop signal; default DefaultDrainConnWait.
	DrainConnWait time.Duration
	// SkipDrain stops an old reuseport generation right after the cutover,
	// as a naive SO_REUSEPORT restart does, and closes the supervisor's
	// copies of its sockets at once, so that what waits in their queues
	// is reset at its exit; it loses requests and exists to measure that.
	SkipDrain bool

	// Workers, when set, makes each generation a pool of that many
	// processes of the command (workers.go): in reuseport mode each gets
	// its own socket per TCP listener, HOTSWAP_WORKER and
	// HOTSWAP_WORKERS, and {worker} expands in the command and the
	// probes. 0 is one process without the pool variables.
	Workers int
	// Rollout is how a reload replaces a pool: RolloutRolling (the
	// default) one worker at a time, RolloutAll the whole pool at once.
	Rollout Rollout
	// CPUAffinity pins worker i to the i-th CPU hotswap may run on
	// (round robin) and steers each new connection to the worker of the
	// CPU that handled its SYN.
	CPUAffinity bool

	// MaxDraining caps the old generations draining at once; a reload
	// that would exceed it fails at once, saying so. Default 4.
	MaxDraining int

	StopSignal   syscall.Signal   // default SIGTERM
	DrainTimeout time.Duration    // after the stop signal, then SIGKILL; default 30s
	Ready        healthgate.Check // --ready; zero means DefaultReady
	ReadyTimeout time.Duration    // default 60s

	BackoffMin, BackoffMax time.Duration // crash restart backoff, default 100ms..30s
	BackoffReset           time.Duration // a generation up this long resets the backoff; default 10s

	Env []string // base environment of children; default os.Environ()
	// OutputPrefix, if set, is put before every line a generation writes
	// to stdout and stderr; {gen} is its number. Empty passes output
	// through untouched (the child writes to hotswap's own descriptors).
	OutputPrefix   string
	Stdout, Stderr io.Writer // default os.Stdout, os.Stderr
	Logger         hclog.Logger
	Observer       Observer // metrics; nil means none

	// Intercept gives children that bind() a supervised address the
	// supervisor's socket by seccomp user notification (intercept.go).
	Intercept bool
	// Credential, if set, is the user and groups every generation runs as
	// (privdrop.go); hotswap keeps its own.
	Credential *syscall.Credential

	// Subreaper makes hotswap reap every orphaned descendant
	// (PR_SET_CHILD_SUBREAPER; always so as pid 1), see reaper_linux.go.
	Subreaper bool
	// Listen creates the socket of a listener; default reuse.Listen. A
	// self-upgrading hotswap passes sockets inherited from its parent here.
	Listen func(l ListenSpec) (*os.File, error)
	// Adopt, in reuseport mode, returns the socket a previous hotswap hands
	// over for a TCP listener (its serving generation's member, the only
	// socket of the group), or nil for a new group; see handoff.go.
	Adopt func(l ListenSpec) (*os.File, error)

	// Executable is the program started as the exec shim; default
	// os.Executable(). Its main must call fdpass.RunShim when
	// fdpass.IsShim() is true.
	Executable string
	// TeeStderr: Executable also runs as the stderr relay, one process
	// that copies every generation's stderr (its main calls RunTee when
	// IsTee() is true; tee.go). Otherwise hotswap copies a generation's
	// stderr itself.
	TeeStderr bool
}

func (c *Config) validate() error {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return errors.New("no command to run")
	}
	if err := checkCommand(c.Command[0]); err != nil {
		return err
	}
	if len(c.Listeners) == 0 {
		return errors.New("no --listen address")
	}
	if err := checkArgFiles(c.Command); err != nil {
		return err
	}
	if p, ok, err := parsePodmanRun(c.Command); ok {
		if err == nil {
			err = p.check(len(c.Listeners), c.Ready.NeedsNotify())
		}
		if err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Name == "" {
			l.Name = defaultName(*l, seen)
		}
		if err := checkName(l.Name); err != nil {
			return fmt.Errorf("listener %s: %w", l, err)
		}
		if seen[l.Name] {
			return fmt.Errorf("listener %s: name %q used twice", l, l.Name)
		}
		if l.Name == healthgate.HealthName && c.Ready.UsesPort() {
			return fmt.Errorf("listener %s: the name %q is the {port} socket's when --ready uses {port}", l, l.Name)
		}
		seen[l.Name] = true
	}
	if c.StopSignal == 0 {
		c.StopSignal = DefaultStopSignal
	}
	if c.Mode == "" {
		c.Mode = ModeReusePort
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if err := c.validateWorkers(); err != nil {
		return err
	}
	setDefault(&c.DrainGrace, DefaultDrainGrace)
	setDefault(&c.DrainConnWait, DefaultDrainConnWait)
	if c.MaxDraining <= 0 {
		c.MaxDraining = DefaultMaxDraining
	}
	setDefault(&c.DrainTimeout, DefaultDrainTimeout)
	setDefault(&c.ReadyTimeout, DefaultReadyTimeout)
	setDefault(&c.BackoffMin, DefaultBackoffMin)
	setDefault(&c.BackoffMax, DefaultBackoffMax)
	setDefault(&c.BackoffReset, DefaultBackoffReset)
	if c.Ready.Kind() == 0 {
		c.Ready = mustParse(DefaultReady)
	}
	if c.Env == nil {
		c.Env = os.Environ()
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.Listen == nil {
		c.Listen = func(l ListenSpec) (*os.File, error) {
			return reuse.Listen(l.Network, l.Address, reuse.Options{})
		}
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find own executable for the exec shim: %w", err)
		}
		c.Executable = exe
	}
	return nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// defaultName derives a stable name from the address: "tcp-8080",
// "unix-app.sock", with a numeric suffix when taken.
func defaultName(l ListenSpec, seen map[string]bool) string {
	base := l.Network + "-" + filepath.Base(l.Address)
	if l.Network != "unix" {
		_, port, _ := net.SplitHostPort(l.Address)
		base = l.Network + "-" + port
	}
	base = strings.ReplaceAll(base, ":", "_")
	name := base
	for i := 2; seen[name]; i++ {
		name = base + "-" + strconv.Itoa(i)
	}
	return name
}

// unwrapExec turns exec.LookPath's error into its cause, so the message
// reads "command ./x: no such file or directory".
func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		if errors.Is(ee.Err, exec.ErrNotFound) {
			return errors.New("not found in PATH")
		}
		var pe *os.PathError
		if errors.As(ee.Err, &pe) {
			return pe.Err
		}
		return ee.Err
	}
	return err
}

// ParseSignal accepts TERM, SIGTERM, term or 15.
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %q: number out of range", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("signal %q: unknown name", s)
}

// signalName returns "SIGTERM" for SIGTERM, or the number.
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return strconv.Itoa(int(sig))
}
