package sbuml

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
	"golang.org/x/sys/unix"
)

// A private copy of a machine's RAM file or disk is made in two passes so
// that the guest is frozen only for the second: mirror copies the file
// while the guest runs, then, frozen, mirror runs again and rewrites only
// the pages that changed in between. Holes in the source (untouched guest
// RAM, unwritten disk blocks) are never read and stay holes in the copy.
// The copy of RAM is kept for the next commit (see lastRAM), which then
// needs only the frozen pass.

const mirrorBlock = 1 << 20 // unit of comparison and copying work

// mirrorWorkers is how many goroutines compare blocks. Comparing two 1 GiB
// files on tmpfs on 2 cores, load 1-4: 211-281 ms with 2, 203-272 ms with
// 3, 184-218 ms with 4, 216-235 ms with 6: each waits on its reads part of
// the time.
const mirrorWorkers = 4

// mirror makes dst (created if missing) an exact copy of src, writing only
// the 4 KiB pages that differ, and returns the byte ranges of dst it
// changed: the pages it rewrote and the data it punched out where src
// has holes. Every other page of dst held the same bytes before.
func mirror(dst, src string) ([]extent, error) {
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return nil, err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return nil, err
	}
	extents, err := dataExtents(in, size)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", src, err)
	}
	punched, err := punchGaps(out, extents, size)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", src, err)
	}
	written, err := mirrorExtents(out, in, extents)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", src, err)
	}
	return append(written, punched...), nil
}

// punchGaps makes dst a hole wherever src, whose data extents are given,
// has one, and returns where dst held data there. Only the gaps are
// searched for data in dst: a guest's RAM has few gaps, and a search of
// the whole copy would take time while the guest is frozen.
func punchGaps(out *os.File, src []extent, size int64) ([]extent, error) {
	var punched []extent
	var off int64
	for i := 0; i <= len(src); i++ {
		next := extent{size, size} // past the last extent
		if i < len(src) {
			next = src[i]
		}
		if next.start > off {
			held, err := dataIn(out, extent{off, next.start})
			if err != nil {
				return nil, err
			}
			punched = append(punched, held...)
		}
		off = next.end
	}
	for _, e := range punched {
		if err := punch(out, e.start, e.end-e.start); err != nil {
			return nil, err
		}
	}
	return punched, nil
}

// dataIn returns the data extents of f within r (SEEK_DATA/SEEK_HOLE); a
// file system without them yields all of r.
func dataIn(f *os.File, r extent) ([]extent, error) {
	var out []extent
	fd := int(f.Fd())
	for off := r.start; off < r.end; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if errors.Is(err, unix.EINVAL) {
			return []extent{r}, nil
		}
		if err != nil {
			return nil, err
		}
		if data >= r.end {
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = r.end
		}
		out = append(out, extent{data, min(hole, r.end)})
		off = hole
	}
	return out, nil
}

// mirrorRanges makes the byte ranges of dst (which exists, as large as
// src) the same as in src, writing only the pages that differ, and
// returns the ranges it rewrote. Ranges closer than mirrorGap are
// compared as one.
func mirrorRanges(dst, src string, ranges [][2]int64) ([]extent, error) {
	if len(ranges) == 0 {
		return nil, nil
	}
	in, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	var es []extent
	for _, r := range ranges {
		if n := len(es); n > 0 && r[0]-es[n-1].end < mirrorGap {
			es[n-1].end = max(es[n-1].end, r[1])
			continue
		}
		es = append(es, extent{r[0], r[1]})
	}
	written, err := mirrorExtents(out, in, es)
	if err != nil {
		return nil, fmt.Errorf("mirror %s: %w", src, err)
	}
	return written, nil
}

// mirrorGap is the distance under which mirrorRanges joins two ranges:
// reading the pages between costs less than another pair of reads.
const mirrorGap = 64 << 10

// mirrorExtents compares and copies the data extents of in block by
// block on up to mirrorWorkers goroutines, and returns the ranges it
// rewrote. Its buffers are no larger than the largest block: fresh memory
// costs a page fault per 4 KiB, and a pass over a few small extents runs
// while the guest is frozen.
func mirrorExtents(out, in *os.File, extents []extent) ([]extent, error) {
	var size, nblocks int64
	for _, e := range extents {
		size = max(size, min(e.end-e.start, mirrorBlock))
		nblocks += (e.end - e.start + mirrorBlock - 1) / mirrorBlock
	}
	blocks := make(chan extent, 64)
	var written []extent
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range min(mirrorWorkers, nblocks) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := make([]byte, size)
			b := make([]byte, size)
			var mine []extent
			for e := range blocks {
				var err error
				mine, err = mirrorBlockAt(out, in, a[:e.end-e.start], b[:e.end-e.start], e.start, mine)
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
				}
			}
			mu.Lock()
			written = append(written, mine...)
			mu.Unlock()
		}()
	}
	for _, e := range extents {
		for s := e.start; s < e.end; s += mirrorBlock {
			blocks <- extent{s, min(s+mirrorBlock, e.end)}
		}
	}
	close(blocks)
	wg.Wait()
	return written, firstErr
}

// mirrorBlockAt copies the pages of one block that differ between in and
// out, and appends the ranges it wrote to written.
func mirrorBlockAt(out, in *os.File, a, b []byte, off int64, written []extent) ([]extent, error) {
	if _, err := in.ReadAt(a, off); err != nil && !errors.Is(err, io.EOF) {
		return written, err
	}
	if _, err := out.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return written, err
	}
	const page = 4096
	for p := 0; p < len(a); {
		if bytes.Equal(a[p:min(p+page, len(a))], b[p:min(p+page, len(b))]) {
			p += page
			continue
		}
		// Coalesce a run of differing pages into one write.
		q := p + page
		for q < len(a) && !bytes.Equal(a[q:min(q+page, len(a))], b[q:min(q+page, len(b))]) {
			q += page
		}
		q = min(q, len(a))
		if _, err := out.WriteAt(a[p:q], off+int64(p)); err != nil {
			return written, err
		}
		written = append(written, extent{off + int64(p), off + int64(q)})
		p = q
	}
	return written, nil
}

// pageRanges returns the pages that byte ranges touch, sorted and merged.
func pageRanges(es []extent) []stream.PageRange {
	slices.SortFunc(es, func(a, b extent) int { return cmp.Compare(a.start, b.start) })
	var out []stream.PageRange
	for _, e := range es {
		r := stream.PageRange{Start: int(e.start / ramPage), End: int((e.end + ramPage - 1) / ramPage)}
		if n := len(out); n > 0 && r.Start <= out[n-1].End {
			out[n-1].End = max(out[n-1].End, r.End)
			continue
		}
		out = append(out, r)
	}
	return out
}

type extent struct{ start, end int64 }

// dataExtents lists the data regions of f (SEEK_DATA/SEEK_HOLE); a file
// system without them yields one extent covering the file.
func dataExtents(f *os.File, size int64) ([]extent, error) {
	return dataIn(f, extent{0, size})
}

// punch deallocates a range of f, leaving a hole (reads give zeros).
func punch(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// No hole punching: write zeros only where the copy holds data.
		return zeroRange(f, off, n)
	}
	return err
}

func zeroRange(f *os.File, off, n int64) error {
	ext, err := dataExtents(f, off+n)
	if err != nil {
		return err
	}
	zero := make([]byte, mirrorBlock)
	for _, e := range ext {
		s, end := max(e.start, off), min(e.end, off+n)
		for ; s < end; s += mirrorBlock {
			if _, err := f.WriteAt(zero[:min(mirrorBlock, end-s)], s); err != nil {
				return err
			}
		}
	}
	return nil
}

// captured is a machine's state caught at one instant: copies of its RAM
// and disks, and its device state already stored.
type captured struct {
	ram *lastRAM // the copy of RAM, kept for the next commit
	// ramChanged lists the pages of the copy to hash: those that may
	// differ from the RAM stream the copy held before.
	ramChanged []stream.PageRange
	diskDir    string // the copies of the disks: diskDir/<disk name>
	// log is the machine's dirty-page log (nil: the host keeps none).
	// With logged, the copy of RAM held RAM as it was when the log was
	// last armed; with useLog, the log was armed again before the copy
	// was brought up to date while the guest ran, and the frozen pass
	// compares only the pages it reports.
	log    *vmm.DirtyLog
	logged bool
	useLog bool
	// ramAhead lists the ranges of the copy of RAM rewritten before the
	// freeze.
	ramAhead []extent
	// diskWritesAhead is QEMU's count of disk writes before the disks
	// were copied ahead (nil: unknown).
	diskWritesAhead *uint64
	devID           objects.ID
	devSize         uint64
	downtime        time.Duration
	frozen          FrozenPhases
	running         bool // the guest runs after the capture
	// frozenAt is when the guest was frozen for the capture (zero: it
	// was not).
	frozenAt time.Time
	// storeDev hands the device state QEMU wrote to the store; resume
	// calls it once the guest runs again (see vmm.DeviceStateSave).
	storeDev func()
}

// remove removes the copies of the disks; the copy of RAM stays.
func (c *captured) remove() {
	os.RemoveAll(c.diskDir)
}

// mirrorJob is one file a capture copies: a RAM file or a disk.
type mirrorJob struct{ dst, src string }

// capture copies the machine's RAM and disks aside while it runs, then
// freezes it only while its device state is saved and the copies catch
// up, and continues it (unless asked to leave it frozen). The device
// state goes into the store once the guest runs again. With a dirty-page
// log, the frozen pass compares only the RAM pages written since the copy
// ahead (see mirrorAhead); without one, all of RAM.
func (s *Scrapbook) capture(ctx context.Context, m *vmm.Machine, p *commitPlan, saver *stream.Saver, opts CommitOptions) (*captured, error) {
	c, err := newCaptured(m, s.ramStreamOf(ctx, p.head.Snapshot))
	if err != nil {
		return nil, err
	}
	pw, devDone := c.storeDeviceState(ctx, saver, p.reuseDev)
	jobs := c.mirrorJobs(m)
	c.openDirtyLog(m)
	defer c.closeDirtyLog()
	// Pre-copy while the guest runs; frozen, only the pages that changed
	// since are copied again (see mirror).
	captureErr := c.mirrorAhead(ctx, m, jobs)
	if captureErr == nil {
		captureErr = c.freezeAndSave(ctx, m, p, pw, jobs)
	}
	if captureErr != nil {
		pw.CloseWithError(captureErr)
	}
	if err := c.resume(ctx, m, p.wasRunning, opts); err != nil && captureErr == nil {
		captureErr = err
	}
	devErr := <-devDone
	if captureErr != nil {
		return c, captureErr
	}
	if devErr != nil {
		return c, fmt.Errorf("store device state: %w", devErr)
	}
	return c, nil
}

// newCaptured opens the machine's copy of RAM (see lastRAM), whose table
// goes until the new one is stored, and makes scratch space for copies of
// the disks beside the machine. ram is the RAM stream of the machine's
// last snapshot.
func newCaptured(m *vmm.Machine, ram objects.ID) (*captured, error) {
	l, err := openLastRAM(m.RAMFile(), ram)
	if err != nil {
		return nil, err
	}
	if err := l.invalidate(); err != nil {
		return nil, err
	}
	c := &captured{ram: l}
	if c.diskDir, err = os.MkdirTemp(m.Dir(), ".commit-"); err != nil {
		return nil, err
	}
	return c, nil
}

// storeDeviceState stores, as it arrives, the device state written into
// the pipe it returns (or takes reuse, the one already stored, and
// ignores the pipe); the channel gives the outcome once it is stored.
func (c *captured) storeDeviceState(ctx context.Context, saver *stream.Saver, reuse *objects.TreeEntry) (*io.PipeWriter, <-chan error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		if reuse != nil {
			c.devID, c.devSize = reuse.ID, reuse.Size
			done <- nil
			return
		}
		id, st, err := saver.SaveStream(ctx, pr, DeviceStateParams)
		pr.CloseWithError(err)
		if err == nil {
			c.devID, c.devSize = id, st.Length
		}
		done <- err
	}()
	return pw, done
}

// mirrorJobs lists the files a capture copies: the RAM file, then the
// disks.
func (c *captured) mirrorJobs(m *vmm.Machine) []mirrorJob {
	jobs := []mirrorJob{{c.ram.copyPath(), m.RAMFile()}}
	for _, d := range m.Config().Disks {
		jobs = append(jobs, mirrorJob{filepath.Join(c.diskDir, filepath.Base(d)), resolvePath(m.Dir(), d)})
	}
	return jobs
}

// openDirtyLog starts the machine's dirty-page log, or finds it running,
// and tells whether the copy of RAM can trust it (see lastRAM). Where the
// host keeps no log, commits compare all of RAM.
func (c *captured) openDirtyLog(m *vmm.Machine) {
	log, err := m.StartDirtyLog()
	if err != nil {
		return
	}
	c.log = log
	c.logged = c.ram.valid && c.ram.loggedBy == log.ID()
}

func (c *captured) closeDirtyLog() {
	if c.log != nil {
		c.log.Close()
	}
}

// mirrorAhead copies, while the guest runs, what the frozen pass would
// otherwise copy: RAM and the disks. With a dirty-page log, the log is
// armed first and the frozen pass compares only the pages written since;
// then RAM is copied ahead in full, or only the pages the log reports if
// the copy held RAM as of the log's last arming. Without one, RAM is
// copied ahead only if the copy is not the last snapshot's, since the
// frozen pass must compare all of it anyway. The disks' write count is
// read first: if it has not moved by the freeze, the frozen pass leaves
// the disks alone.
func (c *captured) mirrorAhead(ctx context.Context, m *vmm.Machine, jobs []mirrorJob) error {
	if err := c.mirrorRAMAhead(jobs[0]); err != nil {
		return err
	}
	if n, err := m.DiskWrites(ctx); err == nil {
		c.diskWritesAhead = &n
	}
	return mirrorAll(jobs[1:])
}

// mirrorRAMAhead is mirrorAhead's part for RAM.
func (c *captured) mirrorRAMAhead(ram mirrorJob) error {
	if c.log != nil {
		written, err := c.log.Written(true)
		if err == nil {
			c.useLog = true
			if c.logged {
				c.ramAhead, err = mirrorRanges(ram.dst, ram.src, written)
			} else {
				c.ramAhead, err = mirror(ram.dst, ram.src)
			}
			return err
		}
		c.log.Close()
		c.log = nil // a log that fails is not used in this commit
	}
	if c.ram.valid {
		return nil
	}
	_, err := mirror(ram.dst, ram.src)
	return err
}

// mirrorAll brings every copy up to date (see mirror).
func mirrorAll(jobs []mirrorJob) error {
	for _, j := range jobs {
		if _, err := mirror(j.dst, j.src); err != nil {
			return err
		}
	}
	return nil
}

// mirrorFrozen brings the copies up to date with the guest frozen, and
// notes which pages of the copy of RAM are to be hashed.
func (c *captured) mirrorFrozen(ctx context.Context, m *vmm.Machine, jobs []mirrorJob) error {
	start := time.Now()
	rewritten, err := c.mirrorRAMFrozen(jobs[0])
	if err != nil {
		return err
	}
	if c.ramChanged, err = c.ram.changedPages(append(rewritten, c.ramAhead...)); err != nil {
		return err
	}
	c.frozen.RAM = time.Since(start)
	start = time.Now()
	if !c.disksUnchanged(ctx, m) {
		err = mirrorAll(jobs[1:])
	}
	c.frozen.Disks = time.Since(start)
	return err
}

// disksUnchanged reports whether QEMU completed no disk write since
// before the disks were copied ahead: then the copies are the disks at
// this instant already (see vmm.DiskWrites).
func (c *captured) disksUnchanged(ctx context.Context, m *vmm.Machine) bool {
	if c.diskWritesAhead == nil {
		return false
	}
	n, err := m.DiskWrites(ctx)
	return err == nil && n == *c.diskWritesAhead
}

// mirrorRAMFrozen brings the copy of RAM up to date with the guest
// frozen, comparing only the pages the dirty-page log reports since it was
// armed ahead, and arming it again at this instant for the next commit;
// without a log, all of RAM.
func (c *captured) mirrorRAMFrozen(ram mirrorJob) ([]extent, error) {
	if c.useLog {
		written, err := c.log.Written(true)
		if err == nil {
			c.ram.armed = c.log.ID()
			return mirrorRanges(ram.dst, ram.src, written)
		}
		c.useLog = false
	}
	return mirror(ram.dst, ram.src)
}

// freezeAndSave freezes a running guest and, frozen, has QEMU write its
// device state while the copies catch up: neither touches guest RAM or
// disks. What QEMU can do before the freeze (see vmm.DeviceStateSave) is
// done first, and the state goes into pw, and the store, only after the
// guest runs again (storeDev).
func (c *captured) freezeAndSave(ctx context.Context, m *vmm.Machine, p *commitPlan, pw *io.PipeWriter, jobs []mirrorJob) error {
	var sv *vmm.DeviceStateSave
	var err error
	if p.reuseDev == nil {
		if sv, err = m.PrepareDeviceStateSave(ctx); err != nil {
			return err
		}
	}
	if p.wasRunning {
		c.frozenAt, err = m.FreezeAt(ctx)
	}
	start := time.Now()
	if err == nil && c.frozenAt.IsZero() {
		c.frozenAt = start // QEMU's STOP event is missing
	}
	if err != nil {
		if sv != nil {
			sv.Close()
		}
		return err
	}
	mirrored := make(chan error, 1)
	go func() { mirrored <- c.mirrorFrozen(ctx, m, jobs) }()
	if sv != nil {
		if err = sv.Save(ctx, pw); err != nil {
			pw.CloseWithError(err)
			sv.Close()
		} else {
			c.storeDev = func() { pw.CloseWithError(sv.Close()) }
		}
		c.frozen.DeviceState = time.Since(start)
	}
	if merr := <-mirrored; err == nil {
		err = merr
	}
	return err
}

// resume continues the guest as soon as its state is safe, even after a
// failed capture or an interrupt: a commit must not leave a running
// machine frozen. It is left frozen only when asked (-f without -c).
// The downtime goes from QEMU's STOP event to its RESUME event (see
// CommitResult.Downtime). Then the device state goes to the store.
func (c *captured) resume(ctx context.Context, m *vmm.Machine, wasRunning bool, opts CommitOptions) error {
	leaveFrozen := opts.Freeze && !opts.Continue
	continued := !c.frozenAt.IsZero() && (wasRunning && !leaveFrozen || opts.Continue)
	var err error
	var resumed time.Time
	if continued {
		start := time.Now()
		resumed, err = m.Resume(context.WithoutCancel(ctx))
		c.frozen.Continue = time.Since(start)
		if resumed.IsZero() {
			resumed = time.Now() // QEMU's RESUME event is missing
		}
	}
	if continued && wasRunning {
		c.downtime = resumed.Sub(c.frozenAt)
	}
	c.running = continued || (wasRunning && c.frozenAt.IsZero())
	if c.storeDev != nil {
		c.storeDev()
	}
	return err
}
