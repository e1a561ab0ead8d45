package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestArgFiles(t *testing.T) {
	dir := t.TempDir()
	tag := filepath.Join(dir, "tag")
	write := func(s string) {
		if err := os.WriteFile(tag, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	argv := []string{"podman", "run", "--name", "app-{gen}", "img:{file:" + tag + "}", "--v={file:" + tag + "}"}
	if err := checkArgFiles(argv); err != nil {
		t.Fatal(err)
	}
	write("v7\n")
	v, err := readArgFiles(argv)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"podman", "run", "--name", "app-{gen}", "img:v7", "--v=v7"}
	if got := v.expand(argv); !slices.Equal(got, want) {
		t.Errorf("expanded %q, want %q", got, want)
	}
	for content, msg := range map[string]string{"": "empty first line", " \n": "empty first line", "a\nb\n": "more than one line", strings.Repeat("x", maxArgFile+1): "longer than"} {
		write(content)
		if _, err := readArgFiles(argv); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("content %.10q: %v, want %q", content, err, msg)
		}
	}
	os.Remove(tag)
	if _, err := readArgFiles(argv); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if err := checkArgFiles([]string{"x", "{file:rel/tag}"}); err == nil {
		t.Error("a relative {file:} path was accepted")
	}
}
