package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hotswap-dev/hotswap/internal/supervisor"
	"github.com/hotswap-dev/hotswap/internal/watch"
	"github.com/spf13/pflag"
)

// watchOptions are the flags of reload-on-change.
type watchOptions struct {
	paths    []string
	debounce time.Duration
}

func (w *watchOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&w.paths, "watch", nil, "reload when `PATH` changes: a file (renamed over, rewritten, a symlink moved: certbot's live/, Kubernetes' ..data) or a directory's entries; a missing PATH is waited for (repeatable)")
	fs.DurationVar(&w.debounce, "watch-debounce", watch.DefaultDebounce, "reload once nothing watched has changed for this long")
}

// start watches the paths and reloads sup after each debounced change,
// reporting the outcome as SIGHUP does, until ctx is done.
func (w *watchOptions) start(ctx context.Context, wg *sync.WaitGroup, sup *supervisor.Supervisor, log hclog.Logger) error {
	if len(w.paths) == 0 {
		return nil
	}
	wt, err := watch.New(w.paths, w.debounce)
	if err != nil {
		return fmt.Errorf("--watch: %w", err)
	}
	log.Info("watching", "paths", wt.Paths(), "directories", wt.Dirs(), "debounce", w.debounce)
	changes := make(chan watch.Change)
	wg.Go(func() { _ = wt.Run(ctx, changes) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case c := <-changes:
				log.Info("watched paths changed: reloading", "paths", c.Paths)
				// A change during a reload queues one more after it.
				wg.Go(func() { reloadOnSignal(ctx, sup, log) })
			}
		}
	})
	return nil
}
