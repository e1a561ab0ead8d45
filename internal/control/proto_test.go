package control

import (
	"errors"
	"strings"
	"testing"

	"github.com/hotswap-dev/hotswap/internal/supervisor"
)

func TestDecodeRequest(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Request
		err        error // nil: must decode; else errors.Is, or any error if errDecode
	}{
		{"reload", `{"v":1,"op":"reload"}` + "\n", Request{V: 1, Op: OpReload}, nil},
		{"status crlf", `{"v":1,"op":"status"}` + "\r\n", Request{V: 1, Op: OpStatus}, nil},
		{"signal", `{"v":1,"op":"signal","signal":"USR1"}`, Request{V: 1, Op: OpSignal, Signal: "USR1"}, nil},
		{"unknown field ignored", `{"v":1,"op":"stop","later":true}`, Request{V: 1, Op: OpStop}, nil},
		{"version 2", `{"v":2,"op":"reload"}`, Request{}, ErrBadVersion},
		{"no version", `{"op":"reload"}`, Request{}, ErrBadVersion},
		{"unknown op", `{"v":1,"op":"explode"}`, Request{}, ErrBadOp},
		{"bad signal", `{"v":1,"op":"signal","signal":"NOPE"}`, Request{}, errDecode},
		{"signal on reload", `{"v":1,"op":"reload","signal":"HUP"}`, Request{}, errDecode},
		{"garbage", "\x00\xff garbage", Request{}, errDecode},
		{"two objects", `{"v":1,"op":"reload"}{"v":1,"op":"stop"}`, Request{}, errDecode},
		{"empty", "\n", Request{}, errDecode},
		{"too long", `{"v":1,"op":"reload","x":"` + strings.Repeat("a", MaxLine) + `"}`, Request{}, ErrLineTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeRequest([]byte(tc.line))
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("got error %v, want %+v", err, tc.want)
			case tc.err == nil && got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			case tc.err == errDecode && err == nil, tc.err != nil && tc.err != errDecode && !errors.Is(err, tc.err):
				t.Fatalf("got %+v, %v; want error %v", got, err, tc.err)
			}
		})
	}
}

var errDecode = errors.New("any decode error")

// FuzzDecodeRequest: no input panics, and whatever decodes is a request the
// server can carry out (a known op, each with only the fields it takes: a signal that parses,
// a percentage from 0 to 100).
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"op":"reload"}`, `{"v":1,"op":"status"}`, `{"v":1,"op":"stop"}`,
		`{"v":1,"op":"signal","signal":"SIGUSR2"}`, `{"v":1,"op":"signal","signal":"99"}`,
		`{"v":1,"op":"reload","hold":true}`, `{"v":1,"op":"weight","percent":20}`, `{"v":1,"op":"weight","percent":-1}`,
		`{"v":1,"op":"promote"}`, `{"v":1,"op":"rollback"}`, `{"v":1,"op":"rollback","percent":0}`,
		`{"v":1e400,"op":"reload"}`, `{"v":"1"}`, `[1,2]`, `null`, `{"v":1,"op":"\ud800"}`,
		"{", "\n\n", "\x00", `{"v":1,"op":"signal","signal":"` + strings.Repeat("A", 5000) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeRequest(line)
		if err != nil {
			if r != (Request{}) {
				t.Fatalf("error %v with a non-zero request %+v", err, r)
			}
			return
		}
		if len(line) > MaxLine || r.V != Version {
			t.Fatalf("accepted %q as %+v", line, r)
		}
		if r.Signal != "" && r.Op != OpSignal || r.Hold && r.Op != OpReload || (r.Percent != nil) != (r.Op == OpWeight) {
			t.Fatalf("accepted %q with fields its op does not take: %+v", line, r)
		}
		switch r.Op {
		case OpReload, OpStatus, OpStop, OpPromote, OpRollback:
		case OpWeight:
			if *r.Percent < 0 || *r.Percent > 100 {
				t.Fatalf("accepted percent %d", *r.Percent)
			}
		case OpSignal:
			if _, err := supervisor.ParseSignal(r.Signal); err != nil {
				t.Fatalf("accepted signal %q: %v", r.Signal, err)
			}
		default:
			t.Fatalf("accepted op %q", r.Op)
		}
	})
}
