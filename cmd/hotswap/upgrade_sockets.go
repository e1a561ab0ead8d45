package main

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
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
type unixOptions = reuse.UnixOptions

func parseUnixOptions(raw string) (unixOptions, error) {
	var o unixOptions
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
			o.Mode = fs.FileMode(m)
		case "owner":
			u, err := lookupUser(val)
			if err != nil {
				return o, fmt.Errorf("listen %q: owner %q: %w", raw, val, err)
			}
			if o.Owner == nil {
				o.Owner = &reuse.Owner{UID: -1, GID: -1}
			}
			o.Owner.UID = int(atou32(u.Uid))
		case "group":
			gid, err := lookupGroup(val)
			if err != nil {
				return o, fmt.Errorf("listen %q: group %q: %w", raw, val, err)
			}
			if o.Owner == nil {
				o.Owner = &reuse.Owner{UID: -1, GID: -1}
			}
			o.Owner.GID = int(gid)
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
	files []reuse.UnixFile
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
	switch {
	case f == nil && l.Network == "unix":
		var uf reuse.UnixFile
		if f, uf, err = reuse.ListenUnix(l.Address, s.unix[l.Address]); err != nil {
			return nil, err
		}
		s.remember(uf)
	case f == nil:
		if f, err = reuse.Listen(l.Network, l.Address, reuse.Options{}); err != nil {
			return nil, err
		}
	case l.Network == "unix":
		if uf, err := reuse.UnixFileAt(l.Address); err == nil {
			s.remember(uf)
		}
	}
	if err := up.AddFile(key, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("register %s for self-upgrade: %w", key, err)
	}
	return f, nil
}

func (s *socketSet) remember(f reuse.UnixFile) {
	s.mu.Lock()
	s.files = append(s.files, f)
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
		f.Remove()
	}
	s.files = nil
}
