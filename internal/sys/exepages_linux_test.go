package sys

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// exeRSS is the resident KiB of this process's read-only mappings of its
// own executable.
func exeRSS(t *testing.T) int {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	kb := 0
	for _, m := range parseSmaps(b) {
		if m.ino == uint64(st.Ino) && m.dev == uint64(st.Dev) && m.perms[1] != 'w' {
			kb += m.rssKB
		}
	}
	return kb
}

// TestReleaseExecutablePages: the read-only pages of the test binary are
// unmapped (its resident size falls to what runs afterwards), and the
// process goes on running code and reading data from them.
func TestReleaseExecutablePages(t *testing.T) {
	before := exeRSS(t)
	released, err := ReleaseExecutablePages()
	if err != nil {
		t.Fatal(err)
	}
	after := exeRSS(t)
	t.Logf("executable's read-only mappings: %d KiB resident, %d released, %d KiB after", before, released, after)
	// Reading smaps again runs code and reads data that come back (64 KB
	// around each first use), so "after" is never 0.
	if before == 0 || released < before*9/10 || after >= before {
		t.Errorf("resident %d KiB before, %d released, %d after: want nearly all released, and less resident after", before, released, after)
	}
	// Code and read-only data come back on use: this runs code released
	// above, and the smaps it parses names tables (unicode, strconv) that
	// live in the released read-only data.
	if again := exeRSS(t); again == 0 {
		t.Errorf("nothing of the executable resident after running it again")
	}
}

// TestParseSmaps reads the fields ReleaseExecutablePages decides by.
func TestParseSmaps(t *testing.T) {
	ms := parseSmaps([]byte(`00400000-007fd000 r-xp 00000000 fe:01 9978344                            /tmp/hotswap
Size:               4084 kB
Rss:                3856 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
00c35000-00c93000 rw-p 00835000 fe:01 9978344                            /tmp/hotswap
Rss:                 316 kB
Anonymous:           120 kB
7ffc09bcf000-7ffc09bf0000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
`))
	want := []mapping{
		{start: 0x400000, end: 0x7fd000, perms: "r-xp", dev: unix.Mkdev(0xfe, 1), ino: 9978344, rssKB: 3856},
		{start: 0xc35000, end: 0xc93000, perms: "rw-p", dev: unix.Mkdev(0xfe, 1), ino: 9978344, rssKB: 316, anonKB: 120},
		{start: 0x7ffc09bcf000, end: 0x7ffc09bf0000, perms: "rw-p", rssKB: 16},
	}
	if len(ms) != len(want) {
		t.Fatalf("%d mappings, want %d: %+v", len(ms), len(want), ms)
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("mapping %d: %+v, want %+v", i, ms[i], want[i])
		}
	}
}
