package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
)

// Stats counts what a Saver read and wrote.
type Stats struct {
	// LogicalBytes is the number of stream bytes read.
	LogicalBytes int64 `json:"logical_bytes"`
	// HoleBytes is the part of LogicalBytes that was all zero and became holes.
	HoleBytes int64 `json:"hole_bytes"`
	// Chunks is the number of non-zero chunks cut.
	Chunks int64 `json:"chunks"`
	// NewObjects and NewBytes count the objects the store did not have
	// yet, and the size of their stored forms.
	NewObjects int64 `json:"new_objects"`
	NewBytes   int64 `json:"new_bytes"`
	// NewChunkBytes is the uncompressed size of the new chunks.
	NewChunkBytes int64 `json:"new_chunk_bytes"`
	// DeltaChunks counts the new chunks stored as deltas on their
	// previous version (see objects.DeltaPutter), of DeltaTries tried.
	DeltaChunks int64 `json:"delta_chunks"`
	DeltaTries  int64 `json:"delta_tries"`
}

// A Saver stores streams and other objects in a Store, on a pool of
// workers shared by all the streams it saves. It is safe for concurrent
// use; Close it when done.
//
// A stream is taken in large blocks: a regular file is mapped into memory
// a window at a time, anything else is read into buffers. Chunks are cut
// in place and handed on in small batches, to an idle worker if there is
// one, else hashed and stored by the goroutine that cut them while they
// are still in its core's cache. A chunk of a mapped file is copied out
// before it is hashed, so the bytes stored are the bytes hashed even if
// another process writes to the file meanwhile.
type Saver struct {
	store objects.Store
	jobs  chan *job
	wg    sync.WaitGroup

	known [256]struct {
		sync.Mutex
		m map[objects.ID]struct{}
	}

	logical, holes, chunks, newObjects, newBytes, newChunkBytes atomic.Int64
	deltaChunks, deltaTries                                     atomic.Int64

	workers int
	cutting atomic.Int32 // streams being cut now
}

// job is a batch of consecutive chunks of one block for a worker.
type job struct {
	ctx   context.Context
	blk   *block
	spans []span
	res   chan []result
	// prev, if not nil, holds each span's previous version (Zero: none
	// known), on which a changed page may be stored as a delta.
	prev []objects.ID
}

type span struct{ start, end int }

type result struct {
	id     objects.ID // Zero for a hole
	length uint64
	err    error
}

// Batching: a job carries up to this many chunks or bytes.
const (
	batchChunks = 64
	batchBytes  = 128 << 10
)

// NewSaver starts a Saver with workers goroutines (0 means GOMAXPROCS).
func NewSaver(store objects.Store, workers int) *Saver {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	s := &Saver{store: store, jobs: make(chan *job), workers: workers}
	for i := range s.known {
		s.known[i].m = make(map[objects.ID]struct{})
	}
	s.wg.Add(workers)
	for i := 0; i < workers; i++ {
		go s.work()
	}
	return s
}

// Close stops the workers. It must not be called while saves are running.
func (s *Saver) Close() {
	close(s.jobs)
	s.wg.Wait()
}

// Stats returns the counts so far.
func (s *Saver) Stats() Stats {
	return Stats{
		LogicalBytes:  s.logical.Load(),
		HoleBytes:     s.holes.Load(),
		Chunks:        s.chunks.Load(),
		NewObjects:    s.newObjects.Load(),
		NewBytes:      s.newBytes.Load(),
		NewChunkBytes: s.newChunkBytes.Load(),
		DeltaChunks:   s.deltaChunks.Load(),
		DeltaTries:    s.deltaTries.Load(),
	}
}

func (s *Saver) work() {
	defer s.wg.Done()
	faultsAsErrors() // for good: workers read chunks of mapped files
	var bufs scratch
	for j := range s.jobs {
		s.process(j, &bufs)
	}
}

// scratch holds one goroutine's buffers for chunk encodings, their
// compressed forms and deltas.
type scratch struct{ enc, seal, delta []byte }

// process hashes the chunks of j, stores those the store lacks, and
// sends the results on j.res. Each chunk is first copied out of its block
// as its encoding (header and data): for a mapped file, that fixes the
// bytes that are then both hashed and stored.
func (s *Saver) process(j *job, bufs *scratch) {
	out := make([]result, len(j.spans))
	for i, sp := range j.spans {
		r := &out[i]
		r.length = uint64(sp.end - sp.start)
		enc, err := encodeChunk(&bufs.enc, j.blk.buf[sp.start:sp.end])
		switch {
		case err != nil:
			r.err = err
			continue
		case enc == nil:
			s.holes.Add(int64(r.length))
			continue
		}
		s.chunks.Add(1)
		r.id = objects.Sum(enc)
		if s.isKnown(r.id) {
			continue
		}
		has, err := s.store.Has(j.ctx, r.id)
		if err != nil || has {
			r.err = err
			if has {
				s.setKnown(r.id)
			}
			continue
		}
		var prev objects.ID
		if j.prev != nil {
			prev = j.prev[i]
		}
		size, err := s.putChunk(j.ctx, r.id, enc, prev, bufs)
		if err != nil {
			r.err = err
			continue
		}
		s.setKnown(r.id)
		s.newObjects.Add(1)
		s.newBytes.Add(int64(size))
		s.newChunkBytes.Add(int64(r.length))
	}
	j.blk.release()
	j.res <- out
}

// isKnown reports whether id is known to be in the store already.
func (s *Saver) isKnown(id objects.ID) bool {
	sh := &s.known[id[0]]
	sh.Lock()
	_, ok := sh.m[id]
	sh.Unlock()
	return ok
}

func (s *Saver) setKnown(id objects.ID) {
	sh := &s.known[id[0]]
	sh.Lock()
	sh.m[id] = struct{}{}
	sh.Unlock()
}

// SaveObject stores a canonical encoding (a tree, a snapshot…) unless the
// store has it, and returns its ID. The caller keeps the closure
// invariant: everything enc names must already be stored.
func (s *Saver) SaveObject(ctx context.Context, enc []byte) (objects.ID, error) {
	id := objects.Sum(enc)
	if s.isKnown(id) {
		return id, nil
	}
	has, err := s.store.Has(ctx, id)
	if err != nil {
		return id, err
	}
	if !has {
		stored := objects.Seal(enc, nil)
		if err := s.store.Put(ctx, id, stored); err != nil {
			return id, err
		}
		s.newObjects.Add(1)
		s.newBytes.Add(int64(len(stored)))
	}
	s.setKnown(id)
	return id, nil
}

// blockSize is the read size for cutting with p: room for several
// largest chunks.
func blockSize(p chunker.Params) int {
	return max(4<<20, 4*int(p.Max))
}

// SaveStream reads r to its end, stores it as a stream object cut with p,
// and returns the stream's ID and object. Chunks are hashed and stored
// while r is being read and cut. If r is a regular file that shrinks
// meanwhile, SaveStream may fail with ErrShrank.
func (s *Saver) SaveStream(ctx context.Context, r io.Reader, p Params) (objects.ID, *objects.Stream, error) {
	if err := p.Validate(); err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	return s.save(ctx, r, p, treeSink{newIndexBuilder(s.SaveObject, p.Fanout)})
}

// entrySink receives a stream's level-0 entries in stream order and then
// makes the index the stream object names.
type entrySink interface {
	add(ctx context.Context, id objects.ID, n uint64) error
	// finish returns the index root, the patch node (or Zero) and the
	// stream's length.
	finish(ctx context.Context) (root, patch objects.ID, length uint64, err error)
}

// treeSink makes an index tree of the stream's own.
type treeSink struct{ *indexBuilder }

func (t treeSink) finish(ctx context.Context) (objects.ID, objects.ID, uint64, error) {
	root, n, err := t.indexBuilder.finish(ctx)
	return root, objects.Zero, n, err
}

// save reads r to its end, cuts it with p, stores its chunks and hands
// their entries to sink in order, then stores the stream object.
func (s *Saver) save(ctx context.Context, r io.Reader, p Params, sink entrySink) (objects.ID, *objects.Stream, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	pending := make(chan chan []result, 64)
	collected := make(chan error, 1)
	go func() {
		var err error
		for rc := range pending {
			rs := <-rc
			for _, r := range rs {
				if err != nil {
					break
				}
				if err = r.err; err == nil {
					err = sink.add(ctx, r.id, r.length)
				}
			}
			if err != nil {
				cancel(err)
			}
		}
		collected <- err
	}()

	src, readErr := newSource(r, blockSize(p.Chunking), &s.logical)
	if readErr == nil {
		readErr = s.cut(ctx, src, p.Chunking, pending)
	}
	close(pending)
	if err := <-collected; err != nil && (readErr == nil || errors.Is(readErr, context.Canceled)) {
		readErr = err
	}
	if readErr == nil {
		// Every chunk has been copied out: only now can a mapped file
		// be checked for having shrunk meanwhile.
		readErr = src.finish()
	}
	if readErr != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", readErr)
	}
	root, patch, length, err := sink.finish(ctx)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	st := &objects.Stream{Length: length, Chunking: p.chunking(), Fanout: p.Fanout, Root: root, Patch: patch}
	id, err := s.SaveObject(ctx, st.Encode())
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	return id, st, nil
}

// cut reads r in blocks, cuts each into chunks in place and sends them to
// the workers in batches, queueing each batch's results on pending in
// stream order. Bytes after a block's last cut (less than a largest
// chunk) are carried into the next block. When every worker is busy, cut
// processes a batch itself, while the batch is still in this core's cache.
func (s *Saver) cut(ctx context.Context, src source, cp chunker.Params, pending chan<- chan []result) error {
	defer faultsAsErrors()()
	s.cutting.Add(1)
	defer s.cutting.Add(-1)
	var bufs scratch
	var carry []byte
	for eof := false; !eof; {
		var blk *block
		var err error
		blk, eof, err = src.next(carry)
		if err != nil {
			return err
		}
		carry, err = s.cutBlock(ctx, blk, eof, cp, pending, &bufs, carry)
		blk.release()
		if err != nil {
			return err
		}
	}
	return nil
}

// cutBlock cuts blk into chunks and hands them on in batches. Unless blk
// ends the stream, it stops short of the last largest chunk's worth of
// bytes, which may belong to a chunk that goes on in the next block, and
// returns them in carry's buffer.
func (s *Saver) cutBlock(ctx context.Context, blk *block, eof bool, cp chunker.Params, pending chan<- chan []result, bufs *scratch, carry []byte) ([]byte, error) {
	var spans []span
	var batched int
	flush := func() error {
		if len(spans) == 0 {
			return nil
		}
		if err := context.Cause(ctx); err != nil {
			return err
		}
		blk.refs.Add(1)
		rc := make(chan []result, 1)
		j := &job{ctx: ctx, blk: blk, spans: spans, res: rc}
		if s.cutting.Load() >= int32(s.workers) {
			// As many streams as workers are being cut: their
			// goroutines keep every core busy, and handing a batch
			// on would only move it away from the cache it is in.
			s.process(j, bufs)
		} else {
			select {
			case s.jobs <- j:
			default:
				s.process(j, bufs)
			}
		}
		select {
		case pending <- rc:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		spans, batched = nil, 0
		return nil
	}
	data := blk.buf
	off := 0
	for off < len(data) {
		rest := data[off:]
		if !eof && len(rest) < int(cp.Max) {
			break
		}
		c, err := cutMapped(cp, rest)
		if err != nil {
			return nil, err
		}
		spans = append(spans, span{off, off + c})
		batched += c
		off += c
		if len(spans) == batchChunks || batched >= batchBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	carry, err := copyMapped(carry[:0], data[off:])
	if err != nil {
		return nil, err
	}
	return carry, flush()
}
