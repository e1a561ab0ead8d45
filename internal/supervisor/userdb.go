package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"
)

// hotswap is built without cgo (CGO_ENABLED=0: a static binary, without
// libc's pages in its memory), so os/user reads /etc/passwd and /etc/group
// alone. The rest of the user database, glibc's NSS (LDAP, sssd,
// systemd-homed, extrausers), is asked through getent(1), a program that
// links it: for a name or id the files do not have, and for the
// supplementary groups of every user (`getent initgroups`), which NSS may
// serve even for a user of /etc/passwd. Without getent, the files decide,
// and a name only NSS could know is refused in one line that says so.

// getentTimeout bounds one getent; a user database that does not answer
// (an LDAP server away) must not hold hotswap's start for ever.
const getentTimeout = 10 * time.Second

// errNoGetent says getent is not installed.
var errNoGetent = errors.New("getent, which asks NSS (LDAP, sssd, systemd), is not installed")

// account is a user of the user database, or a bare uid.
type account struct {
	name     string
	uid, gid uint32
	from     string // "files", "nss" (getent), or "" for a uid no database has
}

// lookupUser accepts a name or a numeric uid; a uid absent from the user
// database runs with gid = uid and no supplementary group.
func lookupUser(s string) (account, error) {
	if u, err := user.Lookup(s); err == nil {
		return account{name: u.Username, uid: atou32(u.Uid), gid: atou32(u.Gid), from: "files"}, nil
	}
	_, nerr := strconv.ParseUint(s, 10, 32)
	numeric := nerr == nil
	if numeric {
		if u, err := user.LookupId(s); err == nil {
			return account{name: u.Username, uid: atou32(u.Uid), gid: atou32(u.Gid), from: "files"}, nil
		}
	}
	f, err := getent("passwd", s)
	if err == nil {
		uid, uerr := strconv.ParseUint(f[min(2, len(f)-1)], 10, 32)
		gid, gerr := strconv.ParseUint(f[min(3, len(f)-1)], 10, 32)
		if len(f) < 4 || uerr != nil || gerr != nil {
			return account{}, fmt.Errorf("getent passwd %s: malformed entry %q", s, strings.Join(f, ":"))
		}
		return account{name: f[0], uid: uint32(uid), gid: uint32(gid), from: "nss"}, nil
	}
	switch {
	case numeric && (errors.Is(err, errNotFound) || errors.Is(err, errNoGetent)):
		return account{name: s, uid: atou32(s), gid: atou32(s)}, nil
	case errors.Is(err, errNotFound):
		return account{}, errors.New("no such user")
	case errors.Is(err, errNoGetent):
		return account{}, fmt.Errorf("not in /etc/passwd, and %w", err)
	}
	return account{}, err
}

// groups are the gids a generation of u runs with: its primary group and
// every group NSS lists it in (`getent initgroups`), or without getent
// those of /etc/group. A bare uid has its primary group alone.
func (u account) groups() ([]uint32, error) {
	if u.from == "" {
		return []uint32{u.gid}, nil
	}
	f, err := getent("initgroups", u.name)
	switch {
	case errors.Is(err, errNoGetent):
		return filesGroups(u)
	case errors.Is(err, errNotFound):
		f = nil
	case err != nil:
		return nil, err
	}
	gids := []uint32{u.gid}
	for _, s := range f[min(1, len(f)):] { // the user's name, then its gids
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("getent initgroups %s: malformed gid %q", u.name, s)
		}
		if !slices.Contains(gids, uint32(g)) {
			gids = append(gids, uint32(g))
		}
	}
	return gids, nil
}

// filesGroups are u's groups in /etc/group.
func filesGroups(u account) ([]uint32, error) {
	pu, err := user.Lookup(u.name)
	if err != nil {
		return []uint32{u.gid}, nil
	}
	ids, err := pu.GroupIds()
	if err != nil {
		return nil, err
	}
	gids := []uint32{u.gid}
	for _, s := range ids {
		if g := atou32(s); !slices.Contains(gids, g) {
			gids = append(gids, g)
		}
	}
	return gids, nil
}

// lookupGroup accepts a group name or a numeric gid.
func lookupGroup(s string) (uint32, error) {
	if g, err := user.LookupGroup(s); err == nil {
		return atou32(g.Gid), nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	f, err := getent("group", s)
	switch {
	case err == nil && len(f) >= 3:
		g, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("getent group %s: malformed entry %q", s, strings.Join(f, ":"))
		}
		return uint32(g), nil
	case err == nil, errors.Is(err, errNotFound):
		return 0, errors.New("no such group")
	case errors.Is(err, errNoGetent):
		return 0, fmt.Errorf("not in /etc/group, and %w", err)
	}
	return 0, err
}

// errNotFound is getent's exit status 2: the database has no such key.
var errNotFound = errors.New("not found")

// getent runs `getent db key` and returns the fields of its one line:
// split at ':' for passwd and group, at blanks for initgroups.
func getent(db, key string) ([]string, error) {
	path, err := exec.LookPath("getent")
	if err != nil {
		return nil, errNoGetent
	}
	ctx, cancel := context.WithTimeout(context.Background(), getentTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, db, "--", key).Output()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("getent %s %s: no answer from the user database in %v", db, key, getentTimeout)
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		return nil, errNotFound
	case err != nil:
		return nil, fmt.Errorf("getent %s %s: %w%s", db, key, err, trimStderr(err))
	}
	line, _, _ := strings.Cut(string(out), "\n")
	if db == "initgroups" {
		return strings.Fields(line), nil
	}
	return strings.Split(line, ":"), nil
}

// trimStderr is the first line getent wrote to stderr, if any.
func trimStderr(err error) string {
	var ee *exec.ExitError
	if !errors.As(err, &ee) || len(ee.Stderr) == 0 {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(ee.Stderr)), "\n")
	return " (" + line + ")"
}
