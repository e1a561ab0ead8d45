package reuse

import (
	"bytes"
	"testing"

	"golang.org/x/net/bpf"
)

// steerRef is what the cidProgram must decide for a UDP payload, written
// as plain Go from RFC 9000 §17: the reference the compiled program is
// checked against.
func steerRef(p cidProgram, b []byte) int {
	var cid []byte
	switch {
	case len(b) == 0:
		return p.current
	case b[0]&0x80 != 0: // long header
		if len(b) < 6+p.cidLen || int(b[5]) != p.cidLen {
			return p.current
		}
		cid = b[6:]
	case b[0]&0x40 != 0: // short header
		if len(b) < 1+p.cidLen {
			return p.current
		}
		cid = b[1:]
	default:
		return p.current
	}
	if uint32(cid[1])<<16|uint32(cid[2])<<8|uint32(cid[3]) != p.key {
		return p.current
	}
	if i, ok := p.slots[cid[0]]; ok {
		return i
	}
	return p.current
}

// FuzzCIDProgram runs the compiled steering program in x/net/bpf's VM on
// arbitrary datagrams and compares its index with steerRef's.
func FuzzCIDProgram(f *testing.F) {
	key := [3]byte{0xa1, 0xb2, 0xc3}
	cid := append([]byte{2}, key[:]...)
	cid = append(cid, bytes.Repeat([]byte{7}, CIDLen-4)...)
	f.Add(append([]byte{0x41}, cid...))
	f.Add(append([]byte{0xc3, 0, 0, 0, 1, CIDLen}, cid...))
	f.Add([]byte("hello"))
	f.Add([]byte{})
	p := cidProgram{current: 3, key: 0xa1b2c3, cidLen: CIDLen, slots: map[byte]int{1: 0, 2: 1, 200: 2}, probe: -1}
	raw, err := p.compile()
	if err != nil {
		f.Fatal(err)
	}
	ins, ok := bpf.Disassemble(raw)
	if !ok {
		f.Fatal("program does not disassemble")
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := vm.Run(b)
		if err != nil {
			t.Fatalf("run on %x: %v", b, err)
		}
		if want := steerRef(p, b); got != want {
			t.Fatalf("datagram %x: program chose index %d, want %d", b, got, want)
		}
	})
}
