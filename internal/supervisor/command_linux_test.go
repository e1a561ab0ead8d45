package supervisor

import (
	"io"
	"os"
	"testing"
)

// TestELFLoadable: real programs pass elfLoadable; a header cut short, a
// program header table past the end of the file, a wrong entry size and
// an unknown class do not.
func TestELFLoadable(t *testing.T) {
	head := func(path string) ([]byte, int64) {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 256)
		n, _ := io.ReadFull(f, b)
		return b[:n], st.Size()
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{exe, "/bin/sh"} {
		if b, size := head(p); !elfLoadable(b, size) {
			t.Errorf("%s: not loadable, want loadable", p)
		}
	}
	good, size := head(exe)
	for name, mangle := range map[string]func(b []byte) ([]byte, int64){
		"cut short":         func(b []byte) ([]byte, int64) { return b[:40], 40 },
		"table past EOF":    func(b []byte) ([]byte, int64) { return b, 100 },
		"wrong entry size":  func(b []byte) ([]byte, int64) { b[54] = 32; return b, size },
		"unknown class":     func(b []byte) ([]byte, int64) { b[4] = 3; return b, size },
		"unknown version":   func(b []byte) ([]byte, int64) { b[6] = 2; return b, size },
		"no program header": func(b []byte) ([]byte, int64) { b[56], b[57] = 0, 0; return b, size },
	} {
		b, n := mangle(append([]byte(nil), good...))
		if elfLoadable(b, n) {
			t.Errorf("%s: loadable, want not", name)
		}
	}
}
