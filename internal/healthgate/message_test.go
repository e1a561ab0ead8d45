package healthgate

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Message
		wantErr string
	}{
		{name: "ready", in: "READY=1", want: Message{Ready: true}},
		{name: "trailing newline", in: "READY=1\n", want: Message{Ready: true}},
		{name: "status", in: "STATUS=loading cache: 40%\nREADY=1", want: Message{Ready: true, Status: "loading cache: 40%", HasStatus: true}},
		{name: "empty status", in: "STATUS=", want: Message{HasStatus: true}},
		{name: "status with equals", in: "STATUS=a=b", want: Message{Status: "a=b", HasStatus: true}},
		{name: "mainpid", in: "MAINPID=4242", want: Message{MainPID: 4242}},
		{name: "reloading", in: "RELOADING=1\nMONOTONIC_USEC=123", want: Message{Reloading: true, MonotonicUSec: 123}},
		{name: "stopping", in: "STOPPING=1", want: Message{Stopping: true}},
		{name: "extend", in: "EXTEND_TIMEOUT_USEC=5000000", want: Message{ExtendTimeout: 5 * time.Second}},
		{name: "watchdog", in: "WATCHDOG=1\nWATCHDOG_USEC=250000", want: Message{Watchdog: true, WatchdogInterval: 250 * time.Millisecond}},
		{name: "errno", in: "ERRNO=2", want: Message{Errno: 2}},
		{name: "unknown keys ignored", in: "FDSTORE=1\nX_CUSTOM=ok\nREADY=1", want: Message{Ready: true}},
		{name: "empty", in: "", wantErr: "empty"},
		{name: "newline only", in: "\n", wantErr: "empty"},
		{name: "no equals", in: "READY", wantErr: "want KEY=VALUE"},
		{name: "blank line", in: "READY=1\n\nSTATUS=x", wantErr: "line 2"},
		{name: "two trailing newlines", in: "READY=1\n\n", wantErr: "line 2"},
		{name: "lowercase key", in: "ready=1", wantErr: "want [A-Z0-9_]"},
		{name: "empty key", in: "=1", wantErr: "empty key"},
		{name: "ready 0", in: "READY=0", wantErr: "READY=0: want 1"},
		{name: "ready with space", in: "READY=1 ", wantErr: "want 1"},
		{name: "duplicate", in: "STATUS=a\nSTATUS=b", wantErr: "duplicate key STATUS"},
		{name: "mainpid zero", in: "MAINPID=0", wantErr: "MAINPID=0"},
		{name: "mainpid negative", in: "MAINPID=-5", wantErr: "MAINPID"},
		{name: "mainpid plus", in: "MAINPID=+5", wantErr: "MAINPID"},
		{name: "mainpid text", in: "MAINPID=abc", wantErr: "MAINPID"},
		{name: "extend overflow", in: "EXTEND_TIMEOUT_USEC=99999999999999999999", wantErr: "want microseconds"},
		{name: "extend negative", in: "EXTEND_TIMEOUT_USEC=-1", wantErr: "want microseconds"},
		{name: "nul", in: "READY=1\x00", wantErr: "NUL"},
		{name: "bad utf8", in: "STATUS=\xff", wantErr: "invalid UTF-8"},
		{name: "too long", in: "STATUS=" + strings.Repeat("x", MaxMessageSize), wantErr: "over 4096"},
		{name: "crlf", in: "READY=1\r\n", wantErr: "want 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMessage([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %+v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseMessage checks that no datagram crashes the parser and that an
// accepted one obeys the rules ParseMessage documents. `go test` runs the
// seeds in testdata/fuzz/FuzzParseMessage.
func FuzzParseMessage(f *testing.F) {
	f.Add([]byte("READY=1\nSTATUS=ok\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			if m != (Message{}) {
				t.Fatalf("error %v with non-zero message %+v", err, m)
			}
			return
		}
		if len(b) == 0 || len(b) > MaxMessageSize || !utf8.Valid(b) || strings.ContainsRune(string(b), 0) {
			t.Fatalf("accepted an invalid datagram %q", b)
		}
		if m.MainPID < 0 || m.Errno < 0 || m.ExtendTimeout < 0 || m.WatchdogInterval < 0 {
			t.Fatalf("negative field in %+v from %q", m, b)
		}
		for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if !strings.Contains(line, "=") {
				t.Fatalf("accepted line %q without =", line)
			}
		}
		if m.Ready != strings.Contains("\n"+string(b), "\nREADY=1") {
			t.Fatalf("Ready = %v for %q", m.Ready, b)
		}
	})
}
