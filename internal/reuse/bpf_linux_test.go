package reuse

import (
	"testing"

	"golang.org/x/net/bpf"
)

// TestBPFSeesPayload measures what a SO_ATTACH_REUSEPORT_CBPF program sees
// for a SYN: the packet starts after the TCP header (length 0), an absolute
// load at offset 0 aborts the program with index 0, and the TCP ports are
// reachable through SKF_NET_OFF.
func TestBPFSeesPayload(t *testing.T) {
	if !inNetns(t) {
		return
	}
	for _, tc := range []struct {
		network, address string
		tcpOff           bpf.Instruction // loads the TCP header offset into X
	}{
		{"tcp4", "127.0.0.1:0", nil},
		{"tcp6", "[::1]:0", bpf.LoadConstant{Dst: bpf.RegX, Val: 40}},
	} {
		t.Run(tc.network, func(t *testing.T) {
			g, ms, _, seen := modelGroup(t, tc.network, tc.address, 3)
			via := ms[0].File()
			dial := dialer("tcp", g.Addr())
			ihl := []bpf.Instruction{
				bpf.LoadAbsolute{Off: skfNetOff, Size: 1},
				bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf},
				bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2},
				bpf.TAX{},
			}
			if tc.tcpOff != nil {
				ihl = []bpf.Instruction{tc.tcpOff}
			}
			dport := uint32(portOf(g))
			for _, p := range []struct {
				name string
				prog []bpf.Instruction
				want string
			}{
				{"len is 0", []bpf.Instruction{
					bpf.LoadExtension{Num: bpf.ExtLen},
					bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 1},
					bpf.RetConstant{Val: 1},
					bpf.RetConstant{Val: 2},
				}, "B"},
				{"ldb [0] aborts to index 0", []bpf.Instruction{
					bpf.LoadAbsolute{Off: 0, Size: 1},
					bpf.RetConstant{Val: 2},
				}, "A"},
				{"dport at SKF_NET_OFF+tcp+2", append(ihl,
					bpf.LoadIndirect{Off: skfNetOff + 2, Size: 2},
					bpf.JumpIf{Cond: bpf.JumpEqual, Val: dport, SkipFalse: 1},
					bpf.RetConstant{Val: 2},
					bpf.RetConstant{Val: 1},
				), "C"},
			} {
				raw, err := bpf.Assemble(p.prog)
				if err != nil {
					t.Fatal(err)
				}
				if err := attachProgram(via, raw); err != nil {
					t.Fatal(err)
				}
				if got := landed(t, seen, 5, dial); got[p.want] != 5 {
					t.Errorf("%s: got %v, want 5 on %s", p.name, got, p.want)
				}
			}
		})
	}
}
