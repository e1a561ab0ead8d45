package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The SO_REUSEPORT restart with net.ipv4.tcp_migrate_req=1 runs in a
// private network namespace: the benchmark re-runs itself under
// `unshare -n`, and the inner run sets the sysctl only after checking that
// its network namespace is not the one it was started from.
const (
	netnsEnv   = "HOTSWAP_BENCH_NETNS" // the outer namespace's inode
	migrateReq = "/proc/sys/net/ipv4/tcp_migrate_req"
)

func netnsInode() (string, error) { return os.Readlink("/proc/self/ns/net") }

// runInNetns runs the migrate row in a new network namespace.
func runInNetns(ctx context.Context, cfg config, name string, keepAlive bool) restartRun {
	r := restartRun{Method: name, KeepAlive: keepAlive}
	if os.Geteuid() != 0 {
		r.Skipped = "needs root for a network namespace"
		return r
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		r.Skipped = "unshare(1) not found"
		return r
	}
	ns, err := netnsInode()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.restarts)*5*time.Second+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "-n", "--", cfg.exe, "-netns-inner",
		"-restarts", strconv.Itoa(cfg.restarts), "-conc", strconv.Itoa(cfg.conc),
		"-gap", cfg.gap.String(), "-keepalive="+strconv.FormatBool(keepAlive))
	cmd.Env = append(os.Environ(), netnsEnv+"="+ns)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		r.Err = fmt.Sprintf("run in a network namespace: %v", err)
		return r
	}
	if err := json.Unmarshal(out, &r); err != nil {
		r.Err = fmt.Sprintf("read the namespace's result: %v", err)
	}
	r.Method = name
	return r
}

// netnsInner is the run inside the namespace; it prints its result as JSON.
func netnsInner(cfg config, keepAlive bool) error {
	outer := os.Getenv(netnsEnv)
	ns, err := netnsInode()
	if err != nil {
		return err
	}
	if outer == "" || ns == outer {
		return errors.New("-netns-inner outside a private network namespace: refusing to set sysctls")
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set lo up: %w: %s", err, out)
	}
	if err := os.WriteFile(migrateReq, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("set tcp_migrate_req in the namespace: %w", err)
	}
	if b, err := os.ReadFile(migrateReq); err != nil || strings.TrimSpace(string(b)) != "1" {
		return fmt.Errorf("tcp_migrate_req reads %q, %v: want 1", b, err)
	}
	r := runRestarts(context.Background(), cfg, "", &reuseSibling{exe: cfg.exe}, loadKind{keepAlive: keepAlive})
	return json.NewEncoder(os.Stdout).Encode(r)
}
