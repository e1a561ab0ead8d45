package supervisor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/hotswap-dev/hotswap/fdpass"
)

// CommandError says the command cannot be run at all, before anything
// starts. Code is the exit status a shell gives for it: 127 not found,
// 126 found but not runnable.
type CommandError struct {
	Command string
	Code    int
	Err     error
}

func (e *CommandError) Error() string { return fmt.Sprintf("command %s: %v", e.Command, e.Err) }
func (e *CommandError) Unwrap() error { return e.Err }

// ExitCode is the exit status for err: a [CommandError]'s code, that of a
// first generation the exec shim could not run (126 or 127), or def.
func ExitCode(err error, def int) int {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.Code
	}
	var ec *exitCause
	if errors.As(err, &ec) && (ec.code == fdpass.ExitCannotExec || ec.code == fdpass.ExitNotFound) {
		return ec.code
	}
	return def
}

// checkCommand finds name as exec would and checks that the kernel can
// run it: an ELF file, or a script whose #! interpreter exists. Anything
// else would only fail later in the exec shim with "exec format error",
// after the listeners were opened and generation 1 was started.
func checkCommand(name string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		code := fdpass.ExitCannotExec
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = fdpass.ExitNotFound
		}
		return &CommandError{Command: name, Code: code, Err: unwrapExec(err)}
	}
	if err := checkProgram(path); err != nil {
		return &CommandError{Command: name, Code: fdpass.ExitCannotExec, Err: err}
	}
	return nil
}

func checkProgram(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return unwrapExec(err)
	}
	defer f.Close()
	head := make([]byte, 256)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return unwrapExec(err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte("#!")):
		line, _, _ := bytes.Cut(head[2:], []byte("\n"))
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			return errors.New("not a program: its #! line names no interpreter")
		}
		if _, err := os.Stat(fields[0]); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return fmt.Errorf("its #! interpreter %s: %v", fields[0], err)
		}
		return nil
	case bytes.HasPrefix(head, []byte(elfMagic)):
		st, err := f.Stat()
		if err != nil {
			return unwrapExec(err)
		}
		if !elfLoadable(head, st.Size()) {
			return errors.New("not a program: a truncated or broken ELF file")
		}
		return nil
	case binfmtMisc():
		return nil // a format registered with the kernel may take it
	}
	return errors.New("not a program: neither an ELF executable nor a script with a #! line")
}

const elfMagic = "\x7fELF"

// elfLoadable reports whether head, the start of an ELF file of size
// bytes, has what execve(2) reads first: a 32- or 64-bit header of either
// byte order, and a program header table of entries of the right size
// inside the file. (debug/elf would parse much more, and its tables would
// grow hotswap's binary, and its resident memory, by a few hundred KB.)
func elfLoadable(head []byte, size int64) bool {
	if len(head) < 16 || head[6] != 1 {
		return false
	}
	var bo binary.ByteOrder
	switch head[5] {
	case 1:
		bo = binary.LittleEndian
	case 2:
		bo = binary.BigEndian
	default:
		return false
	}
	var off uint64
	var entSize, num, wantSize uint16
	switch {
	case head[4] == 1 && len(head) >= 52:
		off, entSize, num, wantSize = uint64(bo.Uint32(head[28:])), bo.Uint16(head[42:]), bo.Uint16(head[44:]), 32
	case head[4] == 2 && len(head) >= 64:
		off, entSize, num, wantSize = bo.Uint64(head[32:]), bo.Uint16(head[54:]), bo.Uint16(head[56:]), 56
	default:
		return false
	}
	return entSize == wantSize && num > 0 && off <= uint64(size) && uint64(num)*uint64(entSize) <= uint64(size)-off
}

// binfmtMisc reports whether the kernel has other executable formats
// registered (binfmt_misc: Java, Wine, qemu-user, ...).
func binfmtMisc() bool {
	es, err := os.ReadDir("/proc/sys/fs/binfmt_misc")
	if err != nil {
		return false
	}
	for _, e := range es {
		if e.Name() != "register" && e.Name() != "status" {
			return true
		}
	}
	return false
}
