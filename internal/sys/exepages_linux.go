package sys

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReleaseExecutablePages unmaps, from this process, the pages of its own
// executable that it has only read (code, read-only data): madvise(2)
// MADV_DONTNEED on each read-only private mapping of /proc/self/exe that
// holds no page of its own (no copy-on-write page: a relocated RELRO
// segment would lose its relocations). The pages stay in the page cache;
// the next use of one maps it again with a minor fault. It returns how
// many KiB were mapped before.
//
// A long-running process touches far more of its binary while it starts
// (init functions, flag parsing, TLS setup, help texts) than afterwards,
// and with fault-around (64 KB mapped at each fault of a file page) nearly
// the whole binary stays resident for good: called once start-up is over,
// only what the process still runs comes back.
func ReleaseExecutablePages() (int, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return 0, os.NewSyscallError("stat /proc/self/exe", err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	released := 0
	for _, m := range parseSmaps(b) {
		if m.ino != uint64(st.Ino) || m.dev != uint64(st.Dev) || m.perms[1] == 'w' || m.perms[3] != 'p' || m.anonKB != 0 {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), unix.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("madvise %x-%x MADV_DONTNEED: %w", m.start, m.end, errno)
		}
		released += m.rssKB
	}
	return released, nil
}

// mapping is one entry of /proc/PID/smaps.
type mapping struct {
	start, end    uint64
	perms         string
	dev, ino      uint64
	rssKB, anonKB int
}

// parseSmaps reads the mappings of an smaps file: a header line
// ("start-end perms offset major:minor inode path") and then "Key: N kB"
// lines for each.
func parseSmaps(b []byte) []mapping {
	var ms []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4 {
			lo, hi, _ := strings.Cut(f[0], "-")
			major, minor, _ := strings.Cut(f[3], ":")
			var m mapping
			m.start, _ = strconv.ParseUint(lo, 16, 64)
			m.end, _ = strconv.ParseUint(hi, 16, 64)
			ma, _ := strconv.ParseUint(major, 16, 32)
			mi, _ := strconv.ParseUint(minor, 16, 32)
			m.perms, m.dev = f[1], unix.Mkdev(uint32(ma), uint32(mi))
			m.ino, _ = strconv.ParseUint(f[4], 10, 64)
			ms = append(ms, m)
			continue
		}
		if len(ms) == 0 || len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Rss:":
			ms[len(ms)-1].rssKB = n
		case "Anonymous:":
			ms[len(ms)-1].anonKB = n
		}
	}
	return ms
}
