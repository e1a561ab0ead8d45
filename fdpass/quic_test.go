package fdpass

import (
	"bytes"
	"testing"
)

func TestParseCIDLayout(t *testing.T) {
	l, err := ParseCIDLayout("07a1b2c3/12")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l.Prefix, []byte{7, 0xa1, 0xb2, 0xc3}) || l.Len != 12 {
		t.Fatalf("got %x/%d", l.Prefix, l.Len)
	}
	a, err := l.New()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := l.New()
	if len(a) != 12 || !bytes.HasPrefix(a, l.Prefix) || bytes.Equal(a, b) {
		t.Fatalf("New gave %x and %x", a, b)
	}
	for _, bad := range []string{"", "07a1b2c3", "07a1b2c3/7", "07a1b2c3/21", "zz/12", "/12", "07a1b2c3/x"} {
		if _, err := ParseCIDLayout(bad); err == nil {
			t.Errorf("ParseCIDLayout(%q) succeeded", bad)
		}
	}
}

func TestQUICConnectionIDsUnset(t *testing.T) {
	t.Setenv(QUICCID, "")
	if _, _, err := QUICConnectionIDs(); err == nil {
		t.Error("empty HOTSWAP_QUIC_CID accepted")
	}
	t.Setenv(QUICCID, "07a1b2c3/12")
	if l, ok, err := QUICConnectionIDs(); err != nil || !ok || l.Len != 12 {
		t.Errorf("got %v %v %v", l, ok, err)
	}
}
