package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hotswap-dev/hotswap/internal/reuse"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// unixOptions are the query options of a unix listener:
//
//	--listen api=unix:///run/app/api.sock?mode=0660&owner=www-data&group=www-data
//
// mode is octal; owner and group are names or numbers. They are applied
// between bind() and listen(), so no client can connect before the file
// has its final mode and owner.
type unixOptions struct {
	mode       fs.FileMode
	hasMode    bool
	uid, gid   int // -1: unchanged
	ownerGiven bool
}

func parseUnixOptions(raw string) (unixOptions, error) {
	o := unixOptions{uid: -1, gid: -1}
	name, rest, ok := strings.Cut(raw, "=")
	if !ok || strings.Contains(name, "://") {
		rest = raw
	}
	u, err := url.Parse(rest)
	if err != nil || u.Scheme != "unix" || u.RawQuery == "" {
		return o, nil
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return o, fmt.Errorf("listen %q: options: %w", raw, err)
	}
	for k, v := range q {
		val := v[len(v)-1]
		switch k {
		case "mode":
			m, err := strconv.ParseUint(val, 8, 32)
			if err != nil || m > 0o777 {
				return o, fmt.Errorf("listen %q: mode %q: want octal permissions such as 0660", raw, val)
			}
			o.mode, o.hasMode = fs.FileMode(m), true
		case "owner":
			u, err := lookupUser(val)
			if err != nil {
				return o, fmt.Errorf("listen %q: owner %q: %w", raw, val, err)
			}
			o.uid, o.ownerGiven = int(atou32(u.Uid)), true
		case "group":
			gid, err := lookupGroup(val)
			if err != nil {
				return o, fmt.Errorf("listen %q: group %q: %w", raw, val, err)
			}
			o.gid, o.ownerGiven = int(gid), true
		default:
			return o, fmt.Errorf("listen %q: unknown option %q (want mode, owner or group)", raw, k)
		}
	}
	return o, nil
}

// socketSet creates the listeners of hotswap, or takes them from the
// hotswap it upgraded from, and registers each for the next upgrade. It
// remembers the unix socket files it is responsible for.
type socketSet struct {
	unix map[string]unixOptions // by listener name

	mu    sync.Mutex // guards the fields below
	files []socketFile
}

// socketFile is a unix socket file hotswap serves: removed on the final
// stop, and only if it is still the same file.
type socketFile struct {
	path     string
	dev, ino uint64
}

func (h *hardeningOptions) applySockets(cfg *supervisor.Config) error {
	h.sockets = &socketSet{unix: map[string]unixOptions{}}
	var raw []string
	if h.fs != nil && h.fs.Lookup("listen") != nil {
		raw, _ = h.fs.GetStringArray("listen")
	}
	for i, r := range raw {
		o, err := parseUnixOptions(r)
		if err != nil {
			return err
		}
		if i < len(cfg.Listeners) && cfg.Listeners[i].Network == "unix" {
			// Names are filled in by validation later; key by address.
			h.sockets.unix[cfg.Listeners[i].Address] = o
		}
	}
	// The new hotswap has its --ready-timeout for its first generation,
	// plus time to start.
	self.timeout = supervisor.DefaultReadyTimeout + 10*time.Second
	if h.fs != nil {
		if d, err := h.fs.GetDuration("ready-timeout"); err == nil && d > 0 {
			self.timeout = d + 10*time.Second
		}
	}
	cfg.Listen = h.sockets.listen
	cfg.Adopt = h.sockets.adopt
	return nil
}

// upgradeKey names a listener in tableflip's hand-over: the same flags give
// the same keys in the new hotswap.
func upgradeKey(l supervisor.ListenSpec) string { return l.Name + "=" + l.String() }

// listen is supervisor.Config.Listen: the socket inherited from the
// previous hotswap if there is one, else a new one.
func (s *socketSet) listen(l supervisor.ListenSpec) (*os.File, error) {
	up, err := selfUpgrader()
	if err != nil {
		return nil, err
	}
	key := upgradeKey(l)
	f, err := up.File(key)
	if err != nil {
		return nil, fmt.Errorf("inherit %s from the previous hotswap: %w", key, err)
	}
	if f == nil {
		if f, err = s.create(l); err != nil {
			return nil, err
		}
	}
	if l.Network == "unix" {
		s.remember(l.Address)
	}
	if err := up.AddFile(key, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("register %s for self-upgrade: %w", key, err)
	}
	return f, nil
}

func (s *socketSet) create(l supervisor.ListenSpec) (*os.File, error) {
	if l.Network != "unix" {
		return reuse.Listen(l.Network, l.Address, reuse.Options{})
	}
	if err := removeStale(l.Address); err != nil {
		return nil, err
	}
	f, err := reuse.Bind("unix", l.Address, reuse.Options{})
	if err != nil {
		return nil, err
	}
	if err := s.unix[l.Address].apply(l.Address); err != nil {
		f.Close()
		os.Remove(l.Address)
		return nil, err
	}
	if err := reuse.ListenFile(f, 0); err != nil {
		f.Close()
		os.Remove(l.Address)
		return nil, err
	}
	return f, nil
}

func (o unixOptions) apply(path string) error {
	if o.ownerGiven {
		if err := os.Lchown(path, o.uid, o.gid); err != nil {
			return err
		}
	}
	if o.hasMode {
		if err := os.Chmod(path, o.mode); err != nil {
			return err
		}
	}
	return nil
}

// removeStale removes a socket file nobody listens on, left by a hotswap
// that was SIGKILLed; a live one is an error, as is any other file.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w: another process listens on it", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: probe: %w", path, err)
	}
	return os.Remove(path)
}

func (s *socketSet) remember(path string) {
	fi, err := os.Lstat(path)
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return
	}
	s.mu.Lock()
	s.files = append(s.files, socketFile{path: path, dev: st.Dev, ino: st.Ino})
	s.mu.Unlock()
}

// removeFiles removes the unix socket files once nothing serves them:
// after the last generation has exited, unless a new hotswap took over.
func (s *socketSet) removeFiles() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		fi, err := os.Lstat(f.path)
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Dev == f.dev && st.Ino == f.ino {
			os.Remove(f.path)
		}
	}
	s.files = nil
}
