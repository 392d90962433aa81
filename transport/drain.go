package transport

import (
	"context"
	"sync/atomic"
	"time"
)

// When a download is cancelled, the objects already on their way (in the
// kernel's socket buffers, in the HTTP client's buffers, or still
// arriving) are worth taking: they cost nothing more to receive, and what
// is stored of them the next fetch need not ask for again. So a download
// does not end the moment its context is cancelled: it goes on reading
// while bytes keep coming, and is cut off once the stream has been idle
// for about drainIdle, or drainMax after the cancellation.
const (
	drainIdle = 250 * time.Millisecond
	drainMax  = 2 * time.Second
)

// draining is the context of one download that outlives the cancellation
// of its parent by a short drain.
type draining struct {
	// ctx is for the request; it ends when the drain does.
	ctx   context.Context
	abort context.CancelCauseFunc
	stop  func() bool
	read  atomic.Int64 // response bytes read so far
}

// startDraining returns the context for a download on behalf of parent.
// The caller counts the response bytes it reads with d.read and calls
// d.close when the download is over.
func startDraining(parent context.Context) *draining {
	d := &draining{}
	d.ctx, d.abort = context.WithCancelCause(context.WithoutCancel(parent))
	d.stop = context.AfterFunc(parent, func() { d.drain(context.Cause(parent)) })
	return d
}

// drain runs once parent is cancelled: it lets the download go on while
// it makes progress, then ends it with cause.
func (d *draining) drain(cause error) {
	deadline := time.Now().Add(drainMax)
	tick := time.NewTicker(drainIdle)
	defer tick.Stop()
	last := d.read.Load()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-tick.C:
		}
		n := d.read.Load()
		if n == last || time.Now().After(deadline) {
			d.abort(cause)
			return
		}
		last = n
	}
}

// close ends the download and its drain.
func (d *draining) close() {
	d.stop()
	d.abort(context.Canceled)
}
