package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The Go runtime's families (go_*) and the process's (process_*), with
// the names and meanings client_golang's Go and process collectors give
// them, for the dashboards that expect them.

func goFamilies() []family {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	var gc debug.GCStats
	gc.PauseQuantiles = make([]time.Duration, 5)
	debug.ReadGCStats(&gc)
	threads, _ := runtime.ThreadCreateProfile(nil)

	gauge := func(name, help string, v float64, labels ...string) family {
		f := family{name: name, help: help, typ: "gauge"}
		f.add(v, labels...)
		return f
	}
	counter := func(name, help string, v float64) family {
		f := family{name: name, help: help, typ: "counter"}
		f.add(v)
		return f
	}
	pause := family{name: "go_gc_duration_seconds", help: "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.", typ: "summary"}
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		pause.samples = append(pause.samples, sample{labels: []string{"quantile", q}, value: gc.PauseQuantiles[i].Seconds()})
	}
	pause.samples = append(pause.samples,
		sample{suffix: "_sum", value: gc.PauseTotal.Seconds()},
		sample{suffix: "_count", value: float64(gc.NumGC)})
	last := 0.0
	if ms.LastGC > 0 {
		last = float64(ms.LastGC) / 1e9
	}
	fs := []family{
		pause,
		gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine())),
		gauge("go_info", "Information about the Go environment.", 1, "version", runtime.Version()),
		gauge("go_threads", "Number of OS threads created.", float64(threads)),
		gauge("go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously.", float64(runtime.GOMAXPROCS(0))),
		gauge("go_memstats_alloc_bytes", "Number of bytes allocated in heap and currently in use.", float64(ms.Alloc)),
		counter("go_memstats_alloc_bytes_total", "Total number of bytes allocated in heap until now, even if released already.", float64(ms.TotalAlloc)),
		counter("go_memstats_mallocs_total", "Total number of heap objects allocated, both live and gc-ed.", float64(ms.Mallocs)),
		counter("go_memstats_frees_total", "Total number of heap objects frees.", float64(ms.Frees)),
		gauge("go_memstats_sys_bytes", "Number of bytes obtained from system.", float64(ms.Sys)),
		gauge("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", float64(ms.HeapAlloc)),
		gauge("go_memstats_heap_sys_bytes", "Number of heap bytes obtained from system.", float64(ms.HeapSys)),
		gauge("go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used.", float64(ms.HeapIdle)),
		gauge("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", float64(ms.HeapInuse)),
		gauge("go_memstats_heap_released_bytes", "Number of heap bytes released to OS.", float64(ms.HeapReleased)),
		gauge("go_memstats_heap_objects", "Number of currently allocated objects.", float64(ms.HeapObjects)),
		gauge("go_memstats_stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments.", float64(ms.StackInuse)),
		gauge("go_memstats_stack_sys_bytes", "Number of bytes obtained from system for stack allocator.", float64(ms.StackSys)),
		gauge("go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place.", float64(ms.NextGC)),
		gauge("go_memstats_last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.", last),
	}
	gogc := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	if metrics.Read(gogc); gogc[0].Value.Kind() == metrics.KindUint64 {
		fs = append(fs, gauge("go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100.", float64(gogc[0].Value.Uint64())))
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		fs = append(fs, gauge("go_build_info", "Build information about the main Go module.", 1,
			"checksum", bi.Main.Sum, "path", bi.Main.Path, "version", bi.Main.Version))
	}
	return fs
}

// processFamilies reads /proc/self: CPU, memory, descriptors, start time.
func processFamilies() []family {
	var fs []family
	gauge := func(name, help string, v float64) {
		f := family{name: name, help: help, typ: "gauge"}
		f.add(v)
		fs = append(fs, f)
	}
	if st, ok := selfStat(); ok {
		const ticks = 100 // USER_HZ
		cpu := family{name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", typ: "counter"}
		cpu.add((st.utime + st.stime) / ticks)
		fs = append(fs, cpu)
		gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", st.vsize)
		gauge("process_resident_memory_bytes", "Resident memory size in bytes.", st.rss*float64(os.Getpagesize()))
		if boot, ok := bootTime(); ok {
			gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", boot+st.start/ticks)
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		gauge("process_open_fds", "Number of open file descriptors.", float64(len(ents)-1)) // not ReadDir's own
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		gauge("process_max_fds", "Maximum number of open file descriptors.", float64(lim.Cur))
	}
	return fs
}

type procStat struct{ utime, stime, start, vsize, rss float64 }

// selfStat reads the fields of /proc/self/stat that the process families
// need (proc(5): utime 14, stime 15, starttime 22, vsize 23, rss 24).
func selfStat() (procStat, bool) {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // f[0] is field 3
	if len(f) < 22 {
		return procStat{}, false
	}
	n := func(field int) float64 { v, _ := strconv.ParseFloat(f[field-3], 64); return v }
	return procStat{utime: n(14), stime: n(15), start: n(22), vsize: n(23), rss: n(24)}, true
}

// bootTime is btime of /proc/stat: the boot time in seconds since the epoch.
func bootTime() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			t, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return t, err == nil
		}
	}
	return 0, false
}
