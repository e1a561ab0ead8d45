package intercept

import (
	"net/netip"
	"os"
	"testing"
)

func TestMatchScore(t *testing.T) {
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		name      string
		sup, bind string
		want      int
	}{
		{"exact v4", "127.0.0.1:80", "127.0.0.1:80", 3},
		{"exact v6", "[::1]:80", "[::1]:80", 3},
		{"other port", "127.0.0.1:80", "127.0.0.1:81", 0},
		{"port zero", "0.0.0.0:0", "0.0.0.0:0", 0},
		{"other specific address", "127.0.0.1:80", "127.0.0.2:80", 0},
		{"child wildcard v4", "127.0.0.1:80", "0.0.0.0:80", 2},
		{"child wildcard v6", "[::1]:80", "[::]:80", 2},
		{"ours wildcard v4", "0.0.0.0:80", "127.0.0.1:80", 2},
		{"ours wildcard v6 covers mapped", "[::]:80", "[::ffff:127.0.0.1]:80", 2},
		{"child dual-stack wildcard, ours v4", "127.0.0.1:80", "[::]:80", 1},
		{"child v4 wildcard, ours v6", "[::1]:80", "0.0.0.0:80", 1},
		{"ours dual-stack covers v4", "[::]:80", "127.0.0.1:80", 1},
		{"ours v4 wildcard, child v6", "0.0.0.0:80", "[::1]:80", 0},
		{"mapped is not exact v4", "127.0.0.1:80", "[::ffff:127.0.0.1]:80", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MatchScore(ap(tc.sup), ap(tc.bind)); got != tc.want {
				t.Errorf("MatchScore(%s, %s): got %d, want %d", tc.sup, tc.bind, got, tc.want)
			}
		})
	}
}

func TestListenersLookupPrefersBest(t *testing.T) {
	open := func() *os.File {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	v4, v6, udp := open(), open(), open()
	ls := Listeners{
		{Network: "udp", Addr: netip.MustParseAddrPort("127.0.0.1:80"), File: udp},
		{Network: "tcp", Addr: netip.MustParseAddrPort("[::1]:80"), File: v6},
		{Network: "tcp", Addr: netip.MustParseAddrPort("127.0.0.1:80"), File: v4},
	}
	for _, tc := range []struct {
		network, bind string
		want          *os.File
	}{
		{"tcp", "0.0.0.0:80", v4},
		{"tcp", "[::]:80", v6},
		{"tcp", "127.0.0.1:80", v4},
		{"udp", "0.0.0.0:80", udp},
		{"tcp", "127.0.0.1:81", nil},
		{"udp", "[::1]:80", nil},
	} {
		got, ok := ls.Lookup(tc.network, netip.MustParseAddrPort(tc.bind))
		if got != tc.want || ok != (tc.want != nil) {
			t.Errorf("Lookup(%s, %s): got %v %v, want %v", tc.network, tc.bind, got, ok, tc.want)
		}
	}
}
