package main

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/cloudflare/tableflip"
	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

// Self-upgrade in reuseport mode (internal/supervisor/handoff.go): the old hotswap
// hands the serving generation's socket of each reuseport listener to the
// new one under reuseportKey, next to the shared sockets; the new hotswap
// adopts it as the first member of its group. A copy that tableflip keeps
// would hold the old generation's socket in the group after that
// generation exits (shared/KERNEL.md pitfall 5), so each side withdraws
// its registration as soon as it is done with it (forget).

// reuseportKey names the socket handed over for a reuseport listener.
func reuseportKey(l supervisor.ListenSpec) string { return "reuseport:" + upgradeKey(l) }

// handOver freezes the reuseport groups and registers their sockets with
// tableflip; it returns the keys registered. It refuses, changing nothing,
// unless the groups are quiet.
func handOver(ctx context.Context, up *tableflip.Upgrader, sup *supervisor.Supervisor) (keys []string, retErr error) {
	if sup == nil {
		return nil, nil
	}
	files, err := sup.PrepareHandoff(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, f := range files {
			f.Close() // tableflip keeps its own dup
		}
		if retErr != nil {
			takeBack(up, sup, keys, nil)
		}
	}()
	for l, f := range files {
		key := reuseportKey(l)
		if err := up.AddFile(key, f); err != nil {
			return keys, fmt.Errorf("hand over %s: %w", l, err)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// takeBack undoes handOver after a failed upgrade.
func takeBack(up *tableflip.Upgrader, sup *supervisor.Supervisor, keys []string, log hclog.Logger) {
	forget(up, keys...)
	if err := sup.AbortHandoff(context.Background()); err != nil && log != nil {
		log.Warn("self-upgrade: take the reuseport groups back", "error", err)
	}
}

// adopt is supervisor.Config.Adopt: the socket the previous hotswap handed
// over for l, or nil.
func (s *socketSet) adopt(l supervisor.ListenSpec) (*os.File, error) {
	up, err := selfUpgrader()
	if err != nil {
		return nil, err
	}
	key := reuseportKey(l)
	f, err := up.File(key)
	if err != nil {
		return nil, fmt.Errorf("inherit %s from the previous hotswap: %w", key, err)
	}
	if f == nil {
		return nil, nil
	}
	forget(up, key)
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeSocket == 0 {
		f.Close() // a withdrawn registration (forget's placeholder)
		return nil, nil
	}
	return f, nil
}

// forget withdraws keys from tableflip, which has no call for that: each
// is registered again as /dev/null, which adopt ignores, and the socket
// copy tableflip held is left to its finalizer, run by a collection now.
func forget(up *tableflip.Upgrader, keys ...string) {
	if len(keys) == 0 {
		return
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return
	}
	defer null.Close()
	for _, k := range keys {
		_ = up.AddFile(k, null)
	}
	runtime.GC()
}

// syncAfterParent runs in a new hotswap: once the old hotswap has exited,
// its generation's sockets have left the groups, and the groups' models
// and programs are updated.
func syncAfterParent(ctx context.Context, up *tableflip.Upgrader, sup *supervisor.Supervisor, log hclog.Logger) {
	if err := up.WaitForParent(ctx); err != nil {
		if ctx.Err() == nil {
			log.Warn("self-upgrade: wait for the previous hotswap", "error", err)
		}
	}
	if ctx.Err() != nil {
		return
	}
	if err := sup.Sync(ctx); err != nil {
		log.Warn("self-upgrade: sync reuseport groups", "error", err)
	}
}
