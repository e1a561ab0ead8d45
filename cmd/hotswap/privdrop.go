package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"

	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/spf13/pflag"
)

// hardeningOptions are the flags of production hardening: privilege drop
// (this file), pid 1 and subreaper (reaper in supervisor), self-upgrade and
// unix socket ownership (upgrade*.go).
type hardeningOptions struct {
	user, group string
	subreaper   bool

	fs      *pflag.FlagSet // read for --listen's unix options and --pidfile
	sockets *socketSet     // the sockets hotswap created or inherited
}

func addHardeningFlags(fs *pflag.FlagSet, h *hardeningOptions) {
	h.fs = fs
	fs.StringVar(&h.user, "user", "", "run every generation as `NAME|UID` (with its groups); hotswap binds first and keeps its own")
	fs.StringVar(&h.group, "group", "", "with --user, run every generation with primary group `NAME|GID` (default: the --user's)")
	fs.BoolVar(&h.subreaper, "subreaper", false, "reap every orphaned descendant (PR_SET_CHILD_SUBREAPER); always so as pid 1")
}

func (h *hardeningOptions) apply(cfg *supervisor.Config) error {
	cfg.Subreaper = h.subreaper
	cred, err := h.credential()
	if err != nil {
		return err
	}
	if cred != nil {
		if err := checkShim(cfg.Executable, cred); err != nil {
			return err
		}
		cfg.Credential = cred
	}
	return h.applySockets(cfg)
}

// credential resolves --user and --group; nil when neither is given.
func (h *hardeningOptions) credential() (*syscall.Credential, error) {
	if h.user == "" && h.group == "" {
		return nil, nil
	}
	if h.user == "" {
		// setgid alone leaves the generation uid 0 with every capability.
		return nil, fmt.Errorf("--group %s without --user: the generation would still run as uid %d with every capability (add --user NAME|UID; --group then replaces its primary group)", h.group, os.Geteuid())
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("--user and --group: hotswap runs as uid %d and cannot switch users (run it as root)", os.Geteuid())
	}
	c := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	if h.user != "" {
		u, err := lookupUser(h.user)
		if err != nil {
			return nil, fmt.Errorf("--user %s: %w", h.user, err)
		}
		c.Uid, c.Gid = atou32(u.Uid), atou32(u.Gid)
		gids, err := u.GroupIds()
		if err != nil {
			return nil, fmt.Errorf("--user %s: supplementary groups: %w", h.user, err)
		}
		for _, g := range gids {
			c.Groups = append(c.Groups, atou32(g))
		}
	}
	if h.group != "" {
		gid, err := lookupGroup(h.group)
		if err != nil {
			return nil, fmt.Errorf("--group %s: %w", h.group, err)
		}
		c.Gid = gid
	}
	if len(c.Groups) == 0 {
		c.Groups = []uint32{c.Gid} // never keep root's supplementary groups
	}
	return c, nil
}

// lookupUser accepts a name or a numeric uid; a uid absent from the user
// database runs with gid = uid and no supplementary group.
func lookupUser(s string) (*user.User, error) {
	u, err := user.Lookup(s)
	if err == nil {
		return u, nil
	}
	if _, nerr := strconv.ParseUint(s, 10, 32); nerr != nil {
		return nil, err
	}
	if u, err := user.LookupId(s); err == nil {
		return u, nil
	}
	return &user.User{Uid: s, Gid: s, Username: s}, nil
}

func lookupGroup(s string) (uint32, error) {
	if g, err := user.LookupGroup(s); err == nil {
		return atou32(g.Gid), nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New("no such group")
	}
	return uint32(n), nil
}

func atou32(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}

// checkShim runs hotswap's own binary (the exec shim of every generation)
// as cred once, so a binary the user cannot execute (a 0700 file, a 0700
// home directory on its path, a noexec mount) fails at startup with one
// clear line instead of every generation exiting 126.
func checkShim(exe string, cred *syscall.Credential) error {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find own executable for the exec shim: %w", err)
		}
	}
	cmd := exec.Command(exe, "--version")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("--user: uid %d cannot run hotswap's own binary %s, which starts every generation: %w%s (make the file and every directory above it executable by that user, e.g. install it in /usr/local/bin)",
			cred.Uid, exe, unwrapStart(err), trimOut(out))
	}
	return nil
}

func unwrapStart(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func trimOut(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return fmt.Sprintf(" (%q)", b)
}
