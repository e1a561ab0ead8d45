package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// usage is one reading of a process's own resources.
type usage struct {
	at      time.Time
	cpu     time.Duration // utime + stime of the process itself, not its children
	rssKB   int
	hwmKB   int
	fds     int
	threads int
}

func readUsage(pid int) (usage, error) {
	u := usage{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is f[0], utime f[11], stime f[12].
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	u.cpu = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		n, _ := strconv.Atoi(strings.Fields(v + " 0")[0])
		switch k {
		case "VmRSS":
			u.rssKB = n
		case "VmHWM":
			u.hwmKB = n
		case "Threads":
			u.threads = n
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.fds = len(fds)
	return u, nil
}

// resourceStats is hotswap's own footprint, idle and over many reloads.
type resourceStats struct {
	Reloads                     int
	IdleFor, ReloadFor          time.Duration
	IdleCPU, ReloadCPU          time.Duration
	IdleRSSKB, MaxRSSKB, HWMKB  int
	FDsBefore, FDsAfter         int
	ThreadsBefore, ThreadsAfter int
}

func (r resourceStats) idlePct() float64   { return pct(r.IdleCPU, r.IdleFor) }
func (r resourceStats) reloadPct() float64 { return pct(r.ReloadCPU, r.ReloadFor) }

func pct(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * cpu.Seconds() / wall.Seconds()
}

// measureResources reads hotswap's /proc files while idle and during
// cfg.reloads back-to-back reloads.
func measureResources(cfg config, b *bins) (resourceStats, error) {
	r := resourceStats{Reloads: cfg.reloads}
	hs := newHotswap(b, "")
	defer hs.close()
	if _, err := hs.start(); err != nil {
		return r, err
	}
	pid := hs.p.pid()
	time.Sleep(500 * time.Millisecond)
	u0, err := readUsage(pid)
	if err != nil {
		return r, err
	}
	time.Sleep(cfg.idle)
	u1, err := readUsage(pid)
	if err != nil {
		return r, err
	}
	r.IdleFor, r.IdleCPU, r.IdleRSSKB = u1.at.Sub(u0.at), u1.cpu-u0.cpu, u1.rssKB
	r.FDsBefore, r.ThreadsBefore, r.MaxRSSKB = u1.fds, u1.threads, u1.rssKB
	for n := 2; n <= cfg.reloads+1; n++ {
		from := hs.p.mark()
		if _, err := hs.restart(n); err != nil {
			return r, err
		}
		// One reload at a time: wait for the old generation to go, so a
		// cap on draining generations does not hold the next reload.
		if _, err := hs.p.event(30*time.Second, from, "generation exited", n-1); err != nil {
			return r, err
		}
		if u, err := readUsage(pid); err == nil {
			r.MaxRSSKB = max(r.MaxRSSKB, u.rssKB)
		}
	}
	u2, err := readUsage(pid)
	if err != nil {
		return r, err
	}
	r.ReloadFor, r.ReloadCPU = u2.at.Sub(u1.at), u2.cpu-u1.cpu
	// Count descriptors once the last old generation has exited.
	if _, err := hs.p.event(30*time.Second, 0, "generation exited", cfg.reloads); err != nil {
		return r, err
	}
	time.Sleep(200 * time.Millisecond)
	u3, err := readUsage(pid)
	if err != nil {
		return r, err
	}
	r.FDsAfter, r.ThreadsAfter, r.HWMKB = u3.fds, u3.threads, u3.hwmKB
	return r, nil
}
