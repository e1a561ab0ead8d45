package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// maxArgFile bounds what a {file:PATH} placeholder may read.
const maxArgFile = 4096

// argFileRE returns the pattern of {file:PATH} in a command argument: the value of one
// argument (an image tag, a version) read from PATH when a generation is
// started by a reload. It is how a reload deploys something new without a
// new command line: write the file, then reload.
func argFileRE() *regexp.Regexp { return regexp.MustCompile(`\{file:([^{}]*)\}`) }

// checkArgFiles validates every {file:PATH} in argv: PATH is absolute.
func checkArgFiles(argv []string) error {
	re := argFileRE()
	for _, a := range argv {
		for _, m := range re.FindAllStringSubmatch(a, -1) {
			if !filepath.IsAbs(m[1]) {
				return fmt.Errorf("argument %q: {file:%s}: want an absolute path", a, m[1])
			}
		}
	}
	return nil
}

// argFiles holds the value read for each {file:PATH} of one generation.
type argFiles map[string]string

// readArgFiles reads every file named by a {file:PATH} in argv. A
// generation started by a crash restart does not call it: it reuses the
// values of the generation that crashed, so a file written for a reload
// that has not happened (or was rolled back) is not deployed by a crash.
func readArgFiles(argv []string) (argFiles, error) {
	var out argFiles
	re := argFileRE()
	for _, a := range argv {
		for _, m := range re.FindAllStringSubmatch(a, -1) {
			if _, ok := out[m[1]]; ok {
				continue
			}
			v, err := readArgFile(m[1])
			if err != nil {
				return nil, err
			}
			if out == nil {
				out = argFiles{}
			}
			out[m[1]] = v
		}
	}
	return out, nil
}

// readArgFile returns the first line of path without surrounding spaces.
func readArgFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("{file:%s}: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxArgFile+1))
	if err != nil {
		return "", fmt.Errorf("{file:%s}: %w", path, err)
	}
	if len(b) > maxArgFile {
		return "", fmt.Errorf("{file:%s}: longer than %d bytes", path, maxArgFile)
	}
	line, rest, _ := bytes.Cut(b, []byte("\n"))
	v := strings.TrimSpace(string(line))
	switch {
	case v == "":
		return "", fmt.Errorf("{file:%s}: %w", path, errors.New("empty first line"))
	case strings.TrimSpace(string(rest)) != "":
		return "", fmt.Errorf("{file:%s}: more than one line", path)
	}
	return v, nil
}

// expand substitutes the values in argv.
func (f argFiles) expand(argv []string) []string {
	if len(f) == 0 {
		return argv
	}
	out := make([]string, len(argv))
	re := argFileRE()
	for i, a := range argv {
		out[i] = re.ReplaceAllStringFunc(a, func(m string) string {
			return f[re.FindStringSubmatch(m)[1]]
		})
	}
	return out
}
