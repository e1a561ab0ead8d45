package main

import (
	"fmt"
	"io"
	"net/http"
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

// cpuNS is the CPU time, in nanoseconds, that the threads of pid alive
// now have used (the first field of each /proc/PID/task/TID/schedstat):
// precise, where utime and stime count 10 ms ticks.
func cpuNS(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // exited meanwhile
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(n)
		}
	}
	return sum, nil
}

// goroutines reads go_goroutines from hotswap's --metrics endpoint.
func goroutines(addr string) (int, error) {
	// No keep-alive: an idle connection to hotswap would count in its fds.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, "go_goroutines "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no go_goroutines at %s", addr)
}

// resourceStats is hotswap's own footprint over many reloads in one mode.
type resourceStats struct {
	Mode                        string
	Listeners                   int
	Reloads                     int
	IdleFor, ReloadFor          time.Duration
	IdleCPU, ReloadCPU          time.Duration
	PerReload                   []time.Duration // hotswap's CPU, per reload
	Handover                    []time.Duration // SIGHUP -> reload succeeded
	IdleRSSKB, MaxRSSKB, HWMKB  int
	FDsBefore, FDsAfter         int
	ThreadsBefore, ThreadsAfter int
	GoroutinesBefore            int // from --metrics; -1 when not read
	GoroutinesAfter             int
	// Per reload, after the old generation exited: hotswap's RSS (KiB),
	// descriptors and threads, for the soak's start and end.
	RSS, FDs, Threads []int
	// GoroutinesEarly is read after the first soakWindow reloads.
	GoroutinesEarly int
	Err             string
}

// warmup is how many reloads precede the resource figures.
const warmup = 3

// soakWindow is how many reloads the soak's start and end figures cover.
const soakWindow = 100

func (r resourceStats) idlePct() float64 { return pct(r.IdleCPU, r.IdleFor) }

func pct(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * cpu.Seconds() / wall.Seconds()
}

// measureResources runs hotswap in mode with listeners listeners and
// --metrics, reads its /proc files while idle for idle and across reloads
// reloads one at a time (each waits for the old generation to exit), and
// reads the goroutines before and after.
func measureResources(b *bins, mode string, listeners, reloads int, idle time.Duration) (r resourceStats) {
	r = resourceStats{Mode: mode, Listeners: listeners, Reloads: reloads, GoroutinesBefore: -1, GoroutinesAfter: -1}
	hs := newHotswap(b, mode)
	hs.extra = []string{"--metrics", "127.0.0.1:0"}
	if listeners > 1 {
		// goapp serves the first; the others are handed over all the same.
		for i := 1; i < listeners; i++ {
			hs.extra = append(hs.extra, "-l", fmt.Sprintf("extra%d=tcp://127.0.0.1:0", i))
		}
	}
	defer hs.close()
	fail := func(err error) resourceStats { r.Err = err.Error(); return r }
	if _, err := hs.start(); err != nil {
		return fail(err)
	}
	ml, err := hs.p.event(10*time.Second, 0, "metrics listening", -1)
	if err != nil {
		return fail(err)
	}
	metrics, _ := ml.ev["address"].(string)
	pid := hs.p.pid()
	// Warm up: the first reloads start the Go runtime's threads and touch
	// code once; "before" is the steady state after them.
	for n := 2; n <= warmup+1; n++ {
		from := hs.p.mark()
		if _, _, _, err := hs.reload(n); err != nil {
			return fail(err)
		}
		if _, err := hs.p.event(30*time.Second, from, "generation exited", n-1); err != nil {
			return fail(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	u0, err := readUsage(pid)
	if err != nil {
		return fail(err)
	}
	c0, _ := cpuNS(pid)
	time.Sleep(idle)
	u1, err := readUsage(pid)
	if err != nil {
		return fail(err)
	}
	c1, _ := cpuNS(pid)
	r.IdleFor, r.IdleCPU, r.IdleRSSKB = u1.at.Sub(u0.at), c1-c0, u1.rssKB
	r.FDsBefore, r.ThreadsBefore, r.MaxRSSKB = u1.fds, u1.threads, u1.rssKB
	if r.GoroutinesBefore, err = goroutines(metrics); err != nil {
		return fail(err)
	}
	start := time.Now()
	for n := warmup + 2; n <= warmup+reloads+1; n++ {
		before, _ := cpuNS(pid)
		from := hs.p.mark()
		t0, t1, _, err := hs.reload(n)
		if err != nil {
			return fail(err)
		}
		// One reload at a time: wait for the old generation to go, so a
		// cap on draining generations does not hold the next reload.
		if _, err := hs.p.event(30*time.Second, from, "generation exited", n-1); err != nil {
			return fail(err)
		}
		after, _ := cpuNS(pid)
		r.PerReload = append(r.PerReload, after-before)
		r.Handover = append(r.Handover, t1.Sub(t0))
		if u, err := readUsage(pid); err == nil {
			r.MaxRSSKB = max(r.MaxRSSKB, u.rssKB)
			r.RSS, r.FDs, r.Threads = append(r.RSS, u.rssKB), append(r.FDs, u.fds), append(r.Threads, u.threads)
		}
		if n-1-warmup == soakWindow {
			r.GoroutinesEarly, _ = goroutines(metrics)
		}
	}
	r.ReloadFor = time.Since(start)
	for _, d := range r.PerReload {
		r.ReloadCPU += d
	}
	time.Sleep(200 * time.Millisecond)
	u3, err := readUsage(pid)
	if err != nil {
		return fail(err)
	}
	r.FDsAfter, r.ThreadsAfter, r.HWMKB = u3.fds, u3.threads, u3.hwmKB
	if r.GoroutinesAfter, err = goroutines(metrics); err != nil {
		return fail(err)
	}
	return r
}
