package reuse

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// What a SO_ATTACH_REUSEPORT_CBPF program sees (net/core/sock_reuseport.c,
// run_bpf_filter, measured on Linux 6.18 by TestBPFSeesPayload for IPv4 and
// IPv6): the kernel pulls the whole TCP header (doff*4 bytes, options
// included) off the packet before it runs the program, so offset 0 is the
// first payload byte and the packet length is 0 for a SYN. An absolute
// load such as "ldh [0]" is out of bounds, which aborts the program with the
// return value 0: the connection goes to index 0, not to the hash. The TCP
// header is reachable only relative to the network header, with the
// negative SKF_NET_OFF offsets: the IPv4 source port is at
// SKF_NET_OFF + 4*IHL, the IPv6 one at SKF_NET_OFF + 40 when the next header
// is TCP. A dual-stack IPv6 group also receives IPv4 packets, so programs
// test the IP version first.

// skfNetOff is SKF_NET_OFF: classic BPF loads at skfNetOff+k read byte k
// of the network (IP) header.
const skfNetOff = 0xfff00000 // uint32(-0x100000)

// program is a steering decision in kernel index terms.
type program struct {
	to       int // index receiving new connections
	other    int // index receiving the rest of a split; -1 for none
	pct      int // percent of new connections to 'to' when other >= 0
	probe    int // index receiving probe connections; -1 for none
	probeSrc netip.AddrPort
	// slots, when set, replace to: new connections are split evenly
	// between these indices (a worker pool).
	slots []int
	// byCPU[c], when >= 0, receives the connections whose SYN CPU c
	// handled; the others go to slots.
	byCPU []int
	// canary, when set with slots, receives pct percent of new
	// connections, split evenly between these indices.
	canary []int
}

// equal reports whether p and q are the same decision.
func (p program) equal(q program) bool {
	return p.to == q.to && p.other == q.other && p.pct == q.pct && p.probe == q.probe && p.probeSrc == q.probeSrc &&
		slices.Equal(p.slots, q.slots) && slices.Equal(p.byCPU, q.byCPU)
}

// compile assembles p into a classic BPF program. Every index it can return
// is one of to, other and probe, so a program never names an index the
// caller did not choose.
func (p program) compile() ([]bpf.RawInstruction, error) {
	var a asm
	if p.probe >= 0 {
		a.probeRule(p.probeSrc, unix.IPPROTO_TCP, p.probe)
	}
	a.label("rule")
	if len(p.slots) > 0 {
		p.pool(&a)
		return a.assemble()
	}
	if p.other >= 0 && p.pct < 100 {
		a.emit(bpf.LoadExtension{Num: bpf.ExtRand},
			bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: 100})
		a.jump(bpf.JumpLessThan, uint32(p.pct), "to", "")
		a.emit(bpf.RetConstant{Val: uint32(p.other)})
	}
	a.label("to")
	a.emit(bpf.RetConstant{Val: uint32(p.to)})
	return a.assemble()
}

// pool returns, for pct percent of connections, one of canary; for the
// others byCPU[SKF_AD_CPU] when that names a member, else one of slots,
// each chosen with SKF_AD_RANDOM modulo their count.
func (p program) pool(a *asm) {
	if len(p.canary) > 0 && p.pct > 0 {
		if p.pct < 100 {
			a.emit(bpf.LoadExtension{Num: bpf.ExtRand},
				bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: 100})
			a.jump(bpf.JumpLessThan, uint32(p.pct), "canary", "")
			workers(a, "slot", p.slots, p.byCPU)
		}
		a.label("canary")
		workers(a, "canary", p.canary, nil)
		return
	}
	workers(a, "slot", p.slots, p.byCPU)
}

// workers returns byCPU[SKF_AD_CPU] when that names a member, else one of
// idx chosen with SKF_AD_RANDOM modulo their count; name prefixes its
// labels.
func workers(a *asm, name string, idx, byCPU []int) {
	if slices.ContainsFunc(byCPU, func(i int) bool { return i >= 0 }) {
		a.emit(bpf.LoadExtension{Num: bpf.ExtCPUID})
		for c, i := range byCPU {
			if i >= 0 {
				a.jump(bpf.JumpEqual, uint32(c), name+"cpu"+strconv.Itoa(c), "")
			}
		}
		a.jump(bpf.JumpEqual, 0, name+"spread", name+"spread") // no CPU matched
		for c, i := range byCPU {
			if i >= 0 {
				a.label(name + "cpu" + strconv.Itoa(c))
				a.emit(bpf.RetConstant{Val: uint32(i)})
			}
		}
		a.label(name + "spread")
	}
	n := len(idx)
	if n == 1 {
		a.emit(bpf.RetConstant{Val: uint32(idx[0])})
		return
	}
	a.emit(bpf.LoadExtension{Num: bpf.ExtRand},
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)})
	for k := range n - 1 {
		a.jump(bpf.JumpEqual, uint32(k), name+strconv.Itoa(k), "")
	}
	a.emit(bpf.RetConstant{Val: uint32(idx[n-1])})
	for k := range n - 1 {
		a.label(name + strconv.Itoa(k))
		a.emit(bpf.RetConstant{Val: uint32(idx[k])})
	}
}

// probeRule returns index for a packet of protocol proto from src, and
// jumps to the label "rule" for any other.
func (a *asm) probeRule(src netip.AddrPort, proto uint32, index int) {
	if src.Addr().Is4() {
		a.probe4(src)
	} else {
		a.probe6(src, proto)
	}
	a.emit(bpf.RetConstant{Val: uint32(index)})
}

// probe4 falls through when an IPv4 packet comes from src, else jumps to rule.
func (a *asm) probe4(src netip.AddrPort) {
	ip := src.Addr().As4()
	a.emit(bpf.LoadAbsolute{Off: skfNetOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
	a.jump(bpf.JumpNotEqual, 4, "rule", "")
	a.emit(bpf.LoadAbsolute{Off: skfNetOff + 12, Size: 4})
	a.jump(bpf.JumpNotEqual, binary.BigEndian.Uint32(ip[:]), "rule", "")
	a.emit(bpf.LoadAbsolute{Off: skfNetOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2},
		bpf.TAX{},
		bpf.LoadIndirect{Off: skfNetOff, Size: 2})
	a.jump(bpf.JumpNotEqual, uint32(src.Port()), "rule", "")
}

// probe6 falls through when an IPv6 packet of protocol proto (TCP or UDP)
// with no extension header comes from src, else jumps to rule.
func (a *asm) probe6(src netip.AddrPort, proto uint32) {
	ip := src.Addr().As16()
	a.emit(bpf.LoadAbsolute{Off: skfNetOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
	a.jump(bpf.JumpNotEqual, 6, "rule", "")
	a.emit(bpf.LoadAbsolute{Off: skfNetOff + 6, Size: 1})
	a.jump(bpf.JumpNotEqual, proto, "rule", "") // next header
	for i := range 4 {
		a.emit(bpf.LoadAbsolute{Off: skfNetOff + 8 + uint32(4*i), Size: 4})
		a.jump(bpf.JumpNotEqual, binary.BigEndian.Uint32(ip[4*i:]), "rule", "")
	}
	a.emit(bpf.LoadAbsolute{Off: skfNetOff + 40, Size: 2})
	a.jump(bpf.JumpNotEqual, uint32(src.Port()), "rule", "")
}

// asm is a tiny assembler that resolves forward jumps to labels.
type asm struct {
	ins    []bpf.Instruction
	fix    []fixup
	labels map[string]int
}

type fixup struct {
	at          int
	true, false string // "" means the next instruction
}

func (a *asm) emit(ins ...bpf.Instruction) { a.ins = append(a.ins, ins...) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

func (a *asm) jump(cond bpf.JumpTest, val uint32, t, f string) {
	a.fix = append(a.fix, fixup{len(a.ins), t, f})
	a.emit(bpf.JumpIf{Cond: cond, Val: val})
}

func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	for _, fx := range a.fix {
		j := a.ins[fx.at].(bpf.JumpIf)
		var err error
		if j.SkipTrue, err = a.skip(fx.at, fx.true); err != nil {
			return nil, err
		}
		if j.SkipFalse, err = a.skip(fx.at, fx.false); err != nil {
			return nil, err
		}
		a.ins[fx.at] = j
	}
	raw, err := bpf.Assemble(a.ins)
	if err != nil {
		return nil, fmt.Errorf("assemble steering program: %w", err)
	}
	return raw, nil
}

func (a *asm) skip(at int, label string) (uint8, error) {
	if label == "" {
		return 0, nil
	}
	to, ok := a.labels[label]
	if !ok || to <= at || to-at-1 > 255 {
		return 0, fmt.Errorf("assemble steering program: bad jump to %q", label)
	}
	return uint8(to - at - 1), nil
}
