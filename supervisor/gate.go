package supervisor

import (
	"context"
	"time"
)

// Gate decides when a started generation is ready to take over.
type Gate interface {
	// Wait returns nil once the generation is ready, or an error when ctx
	// is done first. ctx is cancelled with a cause when the generation
	// exits or the ready timeout passes.
	Wait(ctx context.Context, g GenInfo) error
	String() string
}

// GenInfo is what a [Gate] knows of the generation it waits for.
type GenInfo struct {
	ID  int
	PID int
}

// Delay is the simplest gate: a generation is ready once it has stayed up
// this long.
type Delay time.Duration

func (d Delay) Wait(ctx context.Context, g GenInfo) error {
	t := time.NewTimer(time.Duration(d))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (d Delay) String() string { return time.Duration(d).String() }
