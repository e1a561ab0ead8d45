// Package quiccid gives quic-go servers the connection IDs hotswap steers
// by (fdpass.CIDLayout, docs/hotswap.md "QUIC"), so that their QUIC
// connections survive a reload: each keeps reaching the generation that
// accepted it until that generation has closed it. It is a package of its
// own so that fdpass does not make every program depend on quic-go.
package quiccid

import (
	"fmt"
	"net"

	"github.com/hotswap-dev/hotswap/fdpass"
	"github.com/quic-go/quic-go"
)

// Generator is a quic.ConnectionIDGenerator for a layout.
type Generator struct{ layout fdpass.CIDLayout }

var _ quic.ConnectionIDGenerator = Generator{}

// New returns the generator for the layout hotswap handed over in
// HOTSWAP_QUIC_CID, and false when there is none (then leave
// quic.Transport.ConnectionIDGenerator nil).
func New() (Generator, bool, error) {
	l, ok, err := fdpass.QUICConnectionIDs()
	if !ok {
		return Generator{}, false, err
	}
	return Generator{l}, true, nil
}

// ForLayout returns the generator for l.
func ForLayout(l fdpass.CIDLayout) Generator { return Generator{l} }

// GenerateConnectionID returns the layout's prefix and random bytes.
func (g Generator) GenerateConnectionID() (quic.ConnectionID, error) {
	b, err := g.layout.New()
	if err != nil {
		return quic.ConnectionID{}, err
	}
	return quic.ConnectionIDFromBytes(b), nil
}

// ConnectionIDLen is the layout's length.
func (g Generator) ConnectionIDLen() int { return g.layout.Len }

// Transport returns a quic.Transport on the UDP listener name from hotswap
// (or, without hotswap, a socket bound to network and address, as
// [fdpass.ListenPacket] does), with the generator when hotswap handed a
// layout over.
func Transport(name, network, address string) (*quic.Transport, error) {
	pc, err := fdpass.ListenPacket(name, network, address)
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("quic transport %s: %T is not a UDP socket", name, pc)
	}
	t := &quic.Transport{Conn: uc}
	g, ok, err := New()
	if err != nil {
		uc.Close()
		return nil, err
	}
	if ok {
		t.ConnectionIDGenerator = g
	}
	return t, nil
}
