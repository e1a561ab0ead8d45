package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/spf13/pflag"
)

// hardeningOptions are the flags of production hardening: privilege drop
// (this file) and pid 1 and subreaper (reaper in supervisor). Self-upgrade
// is internal/upgrade; unix socket ownership is in --listen's URL.
type hardeningOptions struct {
	user, group string
	subreaper   bool
}

func addHardeningFlags(fs *pflag.FlagSet, h *hardeningOptions) {
	fs.StringVar(&h.user, "user", "", "run every generation as `NAME|UID` (with its groups); hotswap binds first and keeps its own")
	fs.StringVar(&h.group, "group", "", "with --user, run every generation with primary group `NAME|GID` (default: the --user's)")
	fs.BoolVar(&h.subreaper, "subreaper", false, "reap every orphaned descendant (PR_SET_CHILD_SUBREAPER); always so as pid 1")
}

func (h *hardeningOptions) apply(cfg *supervisor.Config) error {
	cfg.Subreaper = h.subreaper
	cred, err := supervisor.ParseCredential(h.user, h.group)
	if err != nil {
		return err
	}
	if cred != nil {
		if err := checkShim(cfg.Executable, cred); err != nil {
			return err
		}
		cfg.Credential = cred
	}
	return nil
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
