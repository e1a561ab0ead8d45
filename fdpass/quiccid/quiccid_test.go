package quiccid

import (
	"bytes"
	"testing"

	"github.com/hotswap-dev/hotswap/fdpass"
)

func TestGenerator(t *testing.T) {
	t.Setenv(fdpass.QUICCID, "07a1b2c3/12")
	g, ok, err := New()
	if err != nil || !ok {
		t.Fatalf("New: %v %v", ok, err)
	}
	if g.ConnectionIDLen() != 12 {
		t.Errorf("ConnectionIDLen %d, want 12", g.ConnectionIDLen())
	}
	seen := map[string]bool{}
	for range 100 {
		id, err := g.GenerateConnectionID()
		if err != nil {
			t.Fatal(err)
		}
		b := id.Bytes()
		if len(b) != 12 || !bytes.HasPrefix(b, []byte{7, 0xa1, 0xb2, 0xc3}) || seen[string(b)] {
			t.Fatalf("connection id %x: want 12 bytes, prefix 07a1b2c3, unique", b)
		}
		seen[string(b)] = true
	}
}

// TestTransportWithoutHotswap: no hand-off, no layout: the socket is bound
// to the fallback address and quic-go's own connection IDs are used.
func TestTransportWithoutHotswap(t *testing.T) {
	tr, err := Transport("quic", "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.ConnectionIDGenerator != nil {
		t.Errorf("generator set without %s", fdpass.QUICCID)
	}
}
