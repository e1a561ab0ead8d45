//go:build !linux

package upgrade

import (
	"errors"
	"fmt"
	"os"
)

// passer hands reuseport members over on Linux; there are none elsewhere.
type passer struct{ theirs *os.File }

func newPasser() (*passer, error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	return &passer{theirs: null}, nil
}

func (p *passer) send(key string, _ *os.File) error {
	return fmt.Errorf("hand over %s: %w", key, errors.ErrUnsupported)
}

func (p *passer) drain() {}

func (p *passer) close() {
	if p != nil {
		p.theirs.Close()
	}
}

func receive(*os.File) (map[string]*os.File, error) { return nil, nil }
