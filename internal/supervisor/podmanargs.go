package supervisor

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// podmanRun is what hotswap reads from a `podman run` command line, whose
// generations are containers (podman.go). Only podman's fork-exec model
// can do this: `podman run` starts conmon and the OCI runtime as its own
// descendants, so the listeners it inherits reach the container. (A
// `docker run` is a client of dockerd, which starts the container; the
// client's descriptors never reach it.)
type podmanRun struct {
	run   int // index of "run" in the command
	image int // index of the image
	flags map[string]string
}

// Flags of `podman` (before the subcommand) and of `podman run` that take
// no value; every other flag does, as "--flag VALUE" or "--flag=VALUE".
// Functions, not package variables: no package-level mutable state.

func podmanGlobalBool() map[string]bool {
	return map[string]bool{"help": true, "noout": true, "remote": true, "syslog": true, "version": true}
}

func podmanRunBool() map[string]bool {
	return map[string]bool{
		"detach": true, "disable-content-trust": true, "env-host": true, "help": true,
		"http-proxy": true, "init": true, "interactive": true, "no-healthcheck": true,
		"no-hosts": true, "oom-kill-disable": true, "passwd": true, "privileged": true,
		"publish-all": true, "quiet": true, "read-only": true, "read-only-tmpfs": true,
		"replace": true, "rm": true, "rmi": true, "rootfs": true, "sig-proxy": true,
		"tls-verify": true, "tty": true, "unsetenv-all": true,
	}
}

// podmanRunShort maps the one-letter flags of `podman run` to their long
// names.
func podmanRunShort() map[byte]string {
	return map[byte]string{
		'd': "detach", 'i': "interactive", 't': "tty", 'P': "publish-all", 'q': "quiet",
		'a': "attach", 'c': "cpu-shares", 'e': "env", 'h': "hostname", 'l': "label",
		'm': "memory", 'p': "publish", 'u': "user", 'v': "volume", 'w': "workdir",
	}
}

func podmanGlobalShort() map[byte]string {
	return map[byte]string{'c': "connection", 'r': "remote", 'v': "version"}
}

// parsePodmanRun recognises `podman [GLOBAL FLAGS] [container] run [FLAGS]
// IMAGE [ARG...]`; ok is false for any other command.
func parsePodmanRun(argv []string) (p podmanRun, ok bool, err error) {
	if len(argv) == 0 || filepath.Base(argv[0]) != "podman" {
		return p, false, nil
	}
	i, _, err := scanFlags(argv, 1, podmanGlobalBool(), podmanGlobalShort())
	if err != nil {
		return p, false, nil // not a form of run hotswap knows
	}
	if i < len(argv) && argv[i] == "container" {
		i++
	}
	if i >= len(argv) || argv[i] != "run" {
		return p, false, nil
	}
	p.run = i
	i, p.flags, err = scanFlags(argv, i+1, podmanRunBool(), podmanRunShort())
	if err != nil {
		return p, true, fmt.Errorf("podman run: %w", err)
	}
	if i >= len(argv) {
		return p, true, errors.New("podman run: no image")
	}
	p.image = i
	return p, true, nil
}

// scanFlags reads pflag-style flags from argv[i:] up to the first
// argument that is not one (or after "--"). It returns that argument's
// index and the flags by long name (the last value given wins; a boolean
// given without a value is "true").
func scanFlags(argv []string, i int, boolean map[string]bool, short map[byte]string) (int, map[string]string, error) {
	flags := map[string]string{}
	for ; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "--":
			return i + 1, flags, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			if !hasVal && !boolean[name] {
				if i+1 >= len(argv) {
					return i, nil, fmt.Errorf("flag --%s needs a value", name)
				}
				i++
				val = argv[i]
			} else if !hasVal {
				val = "true"
			}
			flags[name] = val
		case strings.HasPrefix(a, "-") && len(a) > 1:
			n, err := scanShort(argv, i, boolean, short, flags)
			if err != nil {
				return i, nil, err
			}
			i = n
		default:
			return i, flags, nil
		}
	}
	return i, flags, nil
}

// scanShort reads a group of one-letter flags (-dit, -p8080:80, -p 80)
// at argv[i] and returns the index of its last argument.
func scanShort(argv []string, i int, boolean map[string]bool, short map[byte]string, flags map[string]string) (int, error) {
	a := argv[i]
	for j := 1; j < len(a); j++ {
		name, ok := short[a[j]]
		if !ok {
			return i, fmt.Errorf("unknown flag -%c in %q", a[j], a)
		}
		if boolean[name] {
			flags[name] = "true"
			continue
		}
		switch {
		case j+1 < len(a):
			flags[name] = strings.TrimPrefix(a[j+1:], "=")
		case i+1 < len(argv):
			i++
			flags[name] = argv[i]
		default:
			return i, fmt.Errorf("flag -%c needs a value", a[j])
		}
		return i, nil
	}
	return i, nil
}

// has reports whether flag name was given.
func (p podmanRun) has(name string) bool { _, ok := p.flags[name]; return ok }

// isTrue reports whether boolean flag name was given as true.
func (p podmanRun) isTrue(name string) bool {
	v, ok := p.flags[name]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

// check refuses the flags that break what hotswap promises, each with why.
func (p podmanRun) check(listeners int, notify bool) error {
	switch {
	case p.isTrue("detach"):
		return errors.New("podman run --detach: a generation must stay in the foreground, so that its exit is the container's and the stop signal reaches the server through podman's signal proxy")
	case p.has("sig-proxy") && !p.isTrue("sig-proxy"):
		return errors.New("podman run --sig-proxy=false: the stop signal would not reach the server; hotswap stops a container through podman's signal proxy")
	case p.has("cidfile") || p.has("conmon-pidfile") || p.has("pidfile"):
		return errors.New("podman run --cidfile, --conmon-pidfile and --pidfile are hotswap's: it sets them per generation to know its container")
	}
	if v, ok := p.flags["preserve-fds"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n != listeners {
			return fmt.Errorf("podman run --preserve-fds %s: hotswap passes %d listener(s); drop the flag: podman preserves LISTEN_FDS descriptors by itself", v, listeners)
		}
	}
	if v, ok := p.flags["sdnotify"]; ok && notify && v != "container" {
		return fmt.Errorf("podman run --sdnotify=%s with --ready notify: only --sdnotify=container forwards the server's READY=1 (hotswap adds it when absent)", v)
	}
	return nil
}
