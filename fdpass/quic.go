package fdpass

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// CIDLayout is how a QUIC server under hotswap must form the connection IDs
// it issues, so that the datagrams of its connections keep reaching it
// after a reload, while new connections go to the next generation: every
// connection ID starts with Prefix and is Len bytes long, the rest random.
// Prefix is one slot byte, which hotswap assigns to the generation, and a
// 3-byte key of the hotswap instance. hotswap hands it over as
// HOTSWAP_QUIC_CID=PREFIX/LEN, PREFIX in hex (docs/hotswap.md, "QUIC").
type CIDLayout struct {
	Prefix []byte
	Len    int
}

// QUICConnectionIDs returns the layout hotswap handed to this process, and
// false when HOTSWAP_QUIC_CID is not set (no hotswap, or its UDP listeners
// are shared): then any connection IDs do.
func QUICConnectionIDs() (CIDLayout, bool, error) {
	v, ok := os.LookupEnv(QUICCID)
	if !ok {
		return CIDLayout{}, false, nil
	}
	l, err := ParseCIDLayout(v)
	return l, err == nil, err
}

// ParseCIDLayout parses PREFIX/LEN.
func ParseCIDLayout(s string) (CIDLayout, error) {
	p, n, ok := strings.Cut(s, "/")
	prefix, err := hex.DecodeString(p)
	if !ok || err != nil || len(prefix) == 0 {
		return CIDLayout{}, fmt.Errorf("%s=%q: want PREFIX/LEN with PREFIX in hex", QUICCID, s)
	}
	ln, err := strconv.Atoi(n)
	if err != nil || ln < len(prefix)+4 || ln > 20 {
		return CIDLayout{}, fmt.Errorf("%s=%q: length %q is not from %d to 20", QUICCID, s, n, len(prefix)+4)
	}
	return CIDLayout{Prefix: prefix, Len: ln}, nil
}

// New returns a fresh connection ID: Prefix, then random bytes up to Len.
func (l CIDLayout) New() ([]byte, error) {
	b := make([]byte, l.Len)
	copy(b, l.Prefix)
	if _, err := rand.Read(b[len(l.Prefix):]); err != nil {
		return nil, fmt.Errorf("new connection id: %w", err)
	}
	return b, nil
}
