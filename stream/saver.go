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
}

// A Saver stores streams and other objects in a Store, on a pool of
// workers shared by all the streams it saves. It is safe for concurrent
// use; Close it when done.
//
// A stream is read in large blocks; chunks are cut in place and handed to
// the workers in batches, so a chunk the store already has is hashed
// where it lies and never copied.
type Saver struct {
	store objects.Store
	jobs  chan *job
	wg    sync.WaitGroup

	known [256]struct {
		sync.Mutex
		m map[objects.ID]struct{}
	}

	logical, holes, chunks, newObjects, newBytes, newChunkBytes atomic.Int64
}

// block is one read of a stream, shared by the jobs cutting from it.
type block struct {
	buf  []byte
	refs atomic.Int32
	pool *sync.Pool
}

func (b *block) release() {
	if b.refs.Add(-1) == 0 {
		b.pool.Put(b)
	}
}

// job is a batch of consecutive chunks of one block for a worker.
type job struct {
	ctx   context.Context
	blk   *block
	spans []span
	res   chan []result
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
	batchBytes  = 512 << 10
)

// NewSaver starts a Saver with workers goroutines (0 means GOMAXPROCS).
func NewSaver(store objects.Store, workers int) *Saver {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	s := &Saver{store: store, jobs: make(chan *job, 4*workers)}
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
	}
}

func (s *Saver) work() {
	defer s.wg.Done()
	var enc, seal []byte
	for j := range s.jobs {
		out := make([]result, len(j.spans))
		for i, sp := range j.spans {
			data := j.blk.buf[sp.start:sp.end]
			r := &out[i]
			r.length = uint64(len(data))
			if chunker.IsZero(data) {
				s.holes.Add(int64(len(data)))
				continue
			}
			s.chunks.Add(1)
			r.id = objects.SumChunk(data)
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
			// New. Incompressible data is stored as header and data
			// where it lies; otherwise build the encoding and seal it.
			var size int
			leaves, isLeafPutter := s.store.(objects.LeafPutter)
			if isLeafPutter && objects.ChunkStoredRaw(data) {
				size = len(objects.ChunkHeader) + len(data)
				if err := leaves.PutLeaf(j.ctx, r.id, objects.ChunkHeader[:], data); err != nil {
					r.err = err
					continue
				}
			} else {
				enc = append(append(enc[:0], objects.ChunkHeader[:]...), data...)
				stored := objects.Seal(enc, seal)
				var err error
				if isLeafPutter {
					err = leaves.PutLeaf(j.ctx, r.id, stored)
				} else {
					err = s.store.Put(j.ctx, r.id, stored)
				}
				if err != nil {
					r.err = err
					continue
				}
				if &stored[0] != &enc[0] && cap(stored) > cap(seal) {
					seal = stored // keep the larger buffer for the next Seal
				}
				size = len(stored)
			}
			s.setKnown(r.id)
			s.newObjects.Add(1)
			s.newBytes.Add(int64(size))
			s.newChunkBytes.Add(int64(len(data)))
		}
		j.blk.release()
		j.res <- out
	}
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
// and returns the stream's ID and object. Chunks are hashed and stored on
// the Saver's workers while r is being read and cut.
func (s *Saver) SaveStream(ctx context.Context, r io.Reader, p Params) (objects.ID, *objects.Stream, error) {
	if err := p.Validate(); err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	b := newIndexBuilder(s, p.Fanout)
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
					err = b.add(ctx, r.id, r.length)
				}
			}
			if err != nil {
				cancel(err)
			}
		}
		collected <- err
	}()

	readErr := s.cut(ctx, r, p.Chunking, pending)
	close(pending)
	if err := <-collected; err != nil && (readErr == nil || errors.Is(readErr, context.Canceled)) {
		readErr = err
	}
	if readErr != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", readErr)
	}
	root, length, err := b.finish(ctx)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	st := &objects.Stream{Length: length, Chunking: p.chunking(), Fanout: p.Fanout, Root: root}
	id, err := s.SaveObject(ctx, st.Encode())
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	return id, st, nil
}

// cut reads r in blocks, cuts each into chunks in place and sends them to
// the workers in batches, queueing each batch's results on pending in
// stream order. Bytes after a block's last cut (less than a largest
// chunk) are carried into the next block.
func (s *Saver) cut(ctx context.Context, r io.Reader, cp chunker.Params, pending chan<- chan []result) error {
	size := blockSize(cp)
	pool := &sync.Pool{}
	newBlock := func() *block {
		if b, ok := pool.Get().(*block); ok {
			return b
		}
		return &block{buf: make([]byte, size), pool: pool}
	}
	var carry []byte
	for eof := false; !eof; {
		blk := newBlock()
		blk.refs.Store(1) // this function's own reference
		n := copy(blk.buf, carry)
		m, err := io.ReadFull(r, blk.buf[n:])
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			eof = true
		case err != nil:
			blk.release()
			return err
		}
		s.logical.Add(int64(m))
		data := blk.buf[:n+m]
		var spans []span
		var batched int
		flush := func() error {
			if len(spans) == 0 {
				return nil
			}
			blk.refs.Add(1)
			rc := make(chan []result, 1)
			select {
			case s.jobs <- &job{ctx: ctx, blk: blk, spans: spans, res: rc}:
			case <-ctx.Done():
				blk.release()
				return context.Cause(ctx)
			}
			select {
			case pending <- rc:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			spans, batched = nil, 0
			return nil
		}
		off := 0
		for off < len(data) {
			rest := data[off:]
			if !eof && len(rest) < int(cp.Max) {
				break // may end in a longer chunk: carry it over
			}
			c := cp.Cut(rest)
			spans = append(spans, span{off, off + c})
			batched += c
			off += c
			if len(spans) == batchChunks || batched >= batchBytes {
				if err := flush(); err != nil {
					blk.release()
					return err
				}
			}
		}
		if err := flush(); err != nil {
			blk.release()
			return err
		}
		carry = append(carry[:0], data[off:]...)
		blk.release()
	}
	return nil
}
