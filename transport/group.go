package transport

import (
	"context"
	"sync"
)

// group runs functions on at most limit goroutines, cancels its context
// at the first error and returns that error from wait.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context, limit int) *group {
	ctx, cancel := context.WithCancel(ctx)
	return &group{ctx: ctx, cancel: cancel, sem: make(chan struct{}, limit)}
}

// fail records err if it is the first error and cancels the group.
func (g *group) fail(err error) {
	g.once.Do(func() {
		g.err = err
		g.cancel()
	})
}

// go runs fn once a slot is free, unless the group has failed.
func (g *group) run(fn func(ctx context.Context) error) {
	select {
	case g.sem <- struct{}{}:
	case <-g.ctx.Done():
		return
	}
	g.wg.Add(1)
	go func() {
		defer func() {
			<-g.sem
			g.wg.Done()
		}()
		if g.ctx.Err() != nil {
			return
		}
		if err := fn(g.ctx); err != nil {
			g.fail(err)
		}
	}()
}

// wait waits for every function and returns the first error, or the
// parent context's error if it was cancelled.
func (g *group) wait() error {
	g.wg.Wait()
	g.cancel()
	if g.err != nil {
		return g.err
	}
	return nil
}
