package healthgate

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		spec    string
		kind    Kind
		want    string // String(); "" means spec
		wantErr string
	}{
		{spec: "notify", kind: KindNotify},
		{spec: "http://127.0.0.1:8080/healthz", kind: KindHTTP},
		{spec: "https://localhost/healthz", kind: KindHTTP},
		{spec: "http://127.0.0.1:{port}/ready?gen={gen}", kind: KindHTTP},
		{spec: "tcp://127.0.0.1:9000", kind: KindTCP},
		{spec: "tcp://[::1]:{gen}0", kind: KindTCP},
		{spec: "tcp://127.0.0.1:{port}", wantErr: "tcp:// cannot probe {port}: the {port} socket is bound and listening by hotswap"},
		{spec: "http://localhost:{port}/", wantErr: "{port} is a socket on 127.0.0.1, not on localhost"},
		{spec: "https://[::1]:{port}/", wantErr: "{port} is a socket on 127.0.0.1, not on ::1"},
		{spec: "http://127.0.0.1:80/x?port={port}", kind: KindHTTP},
		{spec: "exec:/bin/check  --pid {pid}", kind: KindExec, want: "exec:/bin/check --pid {pid}"},
		{spec: "exec:sh -c test -f /tmp/x && exit 0", kind: KindExec},
		{spec: "exec:/bin/sh  -c  echo  a", kind: KindExec, want: "exec:/bin/sh -c echo  a"},
		{spec: "500ms", kind: KindDelay},
		{spec: "1m30s", kind: KindDelay},
		{spec: "htp://x", wantErr: `"htp://x": unknown scheme "htp"`},
		{spec: "", wantErr: "empty spec"},
		{spec: "ready", wantErr: "want notify, http://, https://, tcp://, exec:COMMAND or a duration"},
		{spec: "0s", wantErr: "not positive"},
		{spec: "-1s", wantErr: "not positive"},
		{spec: "exec:", wantErr: "exec: no command"},
		{spec: "exec:   ", wantErr: "exec: no command"},
		{spec: "tcp://127.0.0.1", wantErr: "want tcp://HOST:PORT"},
		{spec: "tcp://127.0.0.1:80/x", wantErr: "want tcp://HOST:PORT only"},
		{spec: "http:///x", wantErr: "no host"},
		{spec: "http://u:p@h/x", wantErr: "user info"},
		{spec: "http://127.0.0.1:{prot}/", wantErr: "unknown placeholder {prot}"},
		{spec: "http://127.0.0.1:99999999/", wantErr: "invalid port"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			c, err := Parse(tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want it to contain %q", tc.spec, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.spec, err)
			}
			want := tc.want
			if want == "" {
				want = tc.spec
			}
			if c.Kind() != tc.kind || c.String() != want {
				t.Errorf("got %v %q, want %v %q", c.Kind(), c.String(), tc.kind, want)
			}
			if c2, err := Parse(c.String()); err != nil || c2.String() != c.String() {
				t.Errorf("reparse %q: got %q, %v", c.String(), c2.String(), err)
			}
		})
	}
}

func TestCheckPredicates(t *testing.T) {
	tests := []struct {
		spec                  string
		needsNotify, usesPort bool
		delay                 time.Duration
	}{
		{"notify", true, false, 0},
		{"http://127.0.0.1:{port}/", false, true, 0},
		{"http://127.0.0.1:80/{gen}", false, false, 0},
		{"exec:check --port={port}", false, true, 0},
		{"2s", false, false, 2 * time.Second},
	}
	for _, tc := range tests {
		c, err := Parse(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if c.NeedsNotify() != tc.needsNotify || c.UsesPort() != tc.usesPort || c.Delay() != tc.delay {
			t.Errorf("%s: got NeedsNotify %v UsesPort %v Delay %v, want %v %v %v", tc.spec,
				c.NeedsNotify(), c.UsesPort(), c.Delay(), tc.needsNotify, tc.usesPort, tc.delay)
		}
	}
}

func TestExpand(t *testing.T) {
	v := Vars{Gen: 4, PID: 8123, Port: 40001}
	tests := []struct{ spec, want string }{
		{"http://127.0.0.1:{port}/ready?gen={gen}&pid={pid}", "http://127.0.0.1:40001/ready?gen=4&pid=8123"},
		{"http://127.0.0.1:{port}", "http://127.0.0.1:40001"},
		{"exec:check {gen} {pid}:{port}", "exec:check 4 8123:40001"},
		{"notify", "notify"},
	}
	for _, tc := range tests {
		c, err := Parse(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Expand(v).String(); got != tc.want {
			t.Errorf("Expand(%q) = %q, want %q", tc.spec, got, tc.want)
		}
		if c.String() != tc.spec {
			t.Errorf("Expand changed its receiver: %q", c.String())
		}
	}
	// Unknown PID and port stay visible; Gen 0 is a real generation.
	c, _ := Parse("http://127.0.0.1:{port}/")
	if got := c.Expand(Vars{}).unexpandedIn(); got != "{port}" {
		t.Errorf("unexpanded = %q, want {port}", got)
	}
	if got := ExpandArgs([]string{"-g={gen}", "{pid}", "--listen=:{port}"}, Vars{Gen: 0, Port: 7}); !slices.Equal(got, []string{"-g=0", "{pid}", "--listen=:7"}) {
		t.Errorf("ExpandArgs = %q", got)
	}
	if ExpandArgs(nil, v) != nil {
		t.Error("ExpandArgs(nil) is not nil")
	}
}

func TestWaitRejectsUnexpanded(t *testing.T) {
	c, _ := Parse("http://127.0.0.1:{port}/")
	err := Wait(t.Context(), c, Target{})
	if err == nil || !strings.Contains(err.Error(), "placeholder {port} not expanded") {
		t.Fatalf("got %v, want placeholder error", err)
	}
}
