package transport

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sbuml/sbuml/internal/units"
	"github.com/sbuml/sbuml/objects"
)

// Stats measure one transfer. Byte counts are taken on the wire: the
// bodies of HTTP requests and responses (for a directory remote, the
// stored forms read or written).
type Stats struct {
	// Objects is the number of objects that traveled, and ObjectBytes
	// the size of their stored forms.
	Objects     int64 `json:"objects"`
	ObjectBytes int64 `json:"object_bytes"`
	// BytesSent and BytesReceived count everything sent to and received
	// from the remote, including existence queries and framing.
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	// Skipped is the number of objects the walk found already present on
	// the receiving side, and did not descend into; SkippedBytes is the
	// logical size of the data they cover, where known (streams, index
	// nodes and chunks carry it; snapshots and trees do not).
	Skipped      int64  `json:"skipped"`
	SkippedBytes uint64 `json:"skipped_bytes"`
	// Duration is the wall time of the transfer.
	Duration time.Duration `json:"duration_ns"`
}

// Add adds o to s.
func (s *Stats) Add(o *Stats) {
	s.Objects += o.Objects
	s.ObjectBytes += o.ObjectBytes
	s.BytesSent += o.BytesSent
	s.BytesReceived += o.BytesReceived
	s.Skipped += o.Skipped
	s.SkippedBytes += o.SkippedBytes
	s.Duration += o.Duration
}

// Summary is the one-line account of a transfer that the command line
// prints when it ends. verb is "sent" or "received".
func (s *Stats) Summary(verb string) string {
	return fmt.Sprintf("%s %d objects (%s); on the wire %s sent, %s received; %s already present; %.1fs",
		verb, s.Objects, FormatBytes(s.ObjectBytes), FormatBytes(s.BytesSent), FormatBytes(s.BytesReceived),
		FormatBytes(int64(s.SkippedBytes)), s.Duration.Seconds())
}

// FormatBytes formats n with a binary unit: "512 B", "1.5 KiB", "3.2 GiB".
func FormatBytes(n int64) string { return units.Bytes(n) }

// Progress is a moment in a transfer, reported to Options.Progress.
type Progress struct {
	// Phase is "finding" while looking for what the other side lacks,
	// "sending" or "receiving" while objects travel.
	Phase string
	// Objects have been handled of TotalObjects known so far (a fetch
	// learns the total as it goes).
	Objects, TotalObjects int64
	// Bytes is the wire bytes moved in the main direction so far.
	Bytes   int64
	Elapsed time.Duration
}

// Options tune a transfer.
type Options struct {
	// Concurrency is the number of requests in flight; 0 means 4.
	Concurrency int
	// Progress, if set, is called about five times a second, and once
	// at the end, from another goroutine.
	Progress func(Progress)
	// Haves are snapshots the remote is believed to hold, such as the
	// remote-tracking refs of the remote being pushed to. Push and Send
	// take what they reach to be on the remote without asking (Push adds
	// the snapshots the remote's refs name); a have that proves wrong
	// costs a second negotiation, never a remote with a ref to a missing
	// object. Fetch ignores them.
	Haves []objects.ID
}

func (o Options) concurrency() int {
	if o.Concurrency > 0 {
		return o.Concurrency
	}
	return 4
}

// meter tracks a transfer's progress and reports it periodically.
type meter struct {
	start          time.Time
	phase          atomic.Value // string
	objects, total atomic.Int64
	bytes          func() int64
	report         func(Progress)
	stop, stopped  chan struct{}
}

func startMeter(phase string, bytes func() int64, report func(Progress)) *meter {
	m := &meter{start: time.Now(), bytes: bytes, report: report, stop: make(chan struct{}), stopped: make(chan struct{})}
	m.phase.Store(phase)
	if report == nil {
		close(m.stopped)
		return m
	}
	go func() {
		defer close(m.stopped)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				m.report(m.progress())
			case <-m.stop:
				return
			}
		}
	}()
	return m
}

func (m *meter) setPhase(p string) { m.phase.Store(p) }

func (m *meter) progress() Progress {
	return Progress{
		Phase:        m.phase.Load().(string),
		Objects:      m.objects.Load(),
		TotalObjects: m.total.Load(),
		Bytes:        m.bytes(),
		Elapsed:      time.Since(m.start),
	}
}

// finish stops the reports, sending a last one.
func (m *meter) finish() {
	if m.report == nil {
		return
	}
	close(m.stop)
	<-m.stopped
	m.report(m.progress())
}
