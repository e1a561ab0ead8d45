package reuse

import (
	"net/netip"
	"slices"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// A SO_ATTACH_REUSEPORT_CBPF program of a UDP group sees the UDP payload
// at offset 0, and its length as len (docs/kernel.md, "UDP groups",
// measured by TestUDPKernelFacts). An absolute load past the payload aborts
// the program with the return value 0, index 0, which may be any member:
// every load below is guarded by a length check first.

// cidProgram steers a datagram by the first four bytes of its QUIC
// destination connection ID: the slot, then the group's key.
type cidProgram struct {
	current int          // index for everything no slot claims
	slots   map[byte]int // slot to index
	key     uint32       // the 3-byte key, in the low 24 bits
	cidLen  int          // of every server-issued connection ID
	// probe, when not negative, receives the datagrams from probeSrc.
	probe    int
	probeSrc netip.AddrPort
}

// compile assembles p. QUIC (RFC 9000 §17): a short header has the first
// byte's 0x80 bit clear and 0x40 (the fixed bit) set, and the destination
// connection ID from byte 1, of the length the server chose; a long header
// has 0x80 set, the version in bytes 1-4, the connection ID's length in
// byte 5 and the connection ID from byte 6.
func (p cidProgram) compile() ([]bpf.RawInstruction, error) {
	var a asm
	cur := "current"
	if p.probe >= 0 {
		a.probeRule(p.probeSrc, unix.IPPROTO_UDP, p.probe)
	}
	a.label("rule")
	need := func(n int) {
		a.emit(bpf.LoadExtension{Num: bpf.ExtLen})
		a.jump(bpf.JumpLessThan, uint32(n), cur, "")
	}
	need(1)
	a.emit(bpf.LoadAbsolute{Off: 0, Size: 1})
	a.jump(bpf.JumpBitsSet, 0x80, "long", "")
	a.jump(bpf.JumpBitsSet, 0x40, "", cur)
	need(1 + p.cidLen)
	a.emit(bpf.LoadAbsolute{Off: 1, Size: 4})
	a.jump(bpf.JumpGreaterOrEqual, 0, "check", "check") // always
	a.label("long")
	need(6 + p.cidLen)
	a.emit(bpf.LoadAbsolute{Off: 5, Size: 1})
	a.jump(bpf.JumpNotEqual, uint32(p.cidLen), cur, "")
	a.emit(bpf.LoadAbsolute{Off: 6, Size: 4})
	a.label("check")
	a.emit(bpf.TAX{}, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xffffff})
	a.jump(bpf.JumpNotEqual, p.key, cur, "")
	a.emit(bpf.TXA{}, bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 24})
	slots := make([]int, 0, len(p.slots))
	for s := range p.slots {
		slots = append(slots, int(s))
	}
	slices.Sort(slots)
	for _, s := range slots {
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(s), SkipFalse: 1},
			bpf.RetConstant{Val: uint32(p.slots[byte(s)])})
	}
	a.label(cur)
	a.emit(bpf.RetConstant{Val: uint32(p.current)})
	return a.assemble()
}
