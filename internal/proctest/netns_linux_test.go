package proctest

import (
	"os"
	"strings"
	"testing"
)

func TestInNetnsIsolatesSysctls(t *testing.T) {
	host, err := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	if err != nil {
		t.Fatal(err)
	}
	if !InNetns(t) {
		after, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
		if string(after) != string(host) {
			t.Fatalf("host tcp_migrate_req changed from %q to %q", host, after)
		}
		return
	}
	want := "1"
	if strings.TrimSpace(string(host)) == "1" {
		want = "0"
	}
	SetSysctl(t, "net.ipv4.tcp_migrate_req", want)
	got, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
	if strings.TrimSpace(string(got)) != want {
		t.Fatalf("tcp_migrate_req in the namespace is %q, want %s", got, want)
	}
}
