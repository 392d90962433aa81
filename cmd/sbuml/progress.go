package main

import (
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/transport"
)

// unit says what a bar counts.
type unit int

const (
	unitBytes unit = iota
	unitObjects
)

// A bar shows the progress of one command's work on standard error while
// that is a terminal: what it does, a bar, the percentage, done of total,
// the rate and the time left, in the terminal's width (80 columns at
// most). Where standard error is no terminal (piped, redirected, in
// CI), it shows nothing, and the command prints only its summary. A
// phase whose total is not known yet shows a spinner and the count.
type bar struct {
	mu     sync.Mutex
	out    io.Writer
	active bool
	pb     *progressbar.ProgressBar
	phase  string
	unit   unit
	total  int64
}

// newBar returns a bar on standard error.
func newBar() *bar { return newBarOn(os.Stderr) }

// newBarOn returns a bar on f, which draws only if f is a terminal.
func newBarOn(f *os.File) *bar {
	return &bar{out: f, active: term.IsTerminal(int(f.Fd()))}
}

// maxBarColumns is the widest a bar's line gets, however wide the
// terminal.
const maxBarColumns = 80

// update shows that phase has done done of total (0: not known yet).
func (b *bar) update(phase string, done, total int64, u unit) {
	if !b.active {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb == nil || phase != b.phase || u != b.unit || (total > 0) != (b.total > 0) {
		b.start(phase, total, u)
	}
	if total > 0 && total != b.total {
		b.pb.ChangeMax64(total)
		b.total = total
	}
	if total > 0 {
		done = min(done, total)
	}
	b.pb.Set64(done)
}

// start replaces the bar shown with a new one for phase. Callers hold mu.
func (b *bar) start(phase string, total int64, u unit) {
	if b.pb != nil {
		b.pb.Clear()
	}
	b.phase, b.unit, b.total = phase, u, total
	max := total
	if total <= 0 {
		max = -1 // a spinner
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(b.out),
		progressbar.OptionSetDescription(phase),
		progressbar.OptionSetWidth(b.width(phase)),
		progressbar.OptionShowCount(),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionUseANSICodes(true),
	}
	if u == unitBytes {
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString("obj"))
	}
	b.pb = progressbar.NewOptions64(max, opts...)
}

// width returns the width of the bar itself: what the terminal's line
// (80 columns at most) leaves beside the phase and the figures, which
// take about 48 columns.
func (b *bar) width(phase string) int {
	cols := maxBarColumns
	if f, ok := b.out.(*os.File); ok {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 0 {
			cols = min(w, maxBarColumns)
		}
	}
	return max(cols-len(phase)-50, 5)
}

// done erases the bar: what follows is the command's summary.
func (b *bar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pb != nil {
		b.pb.Clear()
		b.pb = nil
	}
}

// storeBar is a bar for storing or writing bytes: import, commit,
// export, image import, a checkout's materializing.
type storeBar struct {
	*bar
	phase string
}

// newStoreBar returns a bar that shows phase.
func newStoreBar(phase string) storeBar { return storeBar{newBar(), phase} }

// update is a callback of sbuml's store progress.
func (b storeBar) update(p sbuml.StoreProgress) {
	b.bar.update(b.phase, p.LogicalBytes, p.TotalBytes, unitBytes)
}

// transfer is a callback of transport's progress: push, pull, clone,
// fetch, publish, and checkout from a link.
func (b *bar) transfer(p transport.Progress) {
	if p.Phase == "finding" || p.TotalObjects == 0 {
		b.update(p.Phase, p.Objects, 0, unitObjects)
		return
	}
	b.update(p.Phase, p.Objects, p.TotalObjects, unitObjects)
}
