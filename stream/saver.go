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
type Saver struct {
	store objects.Store
	jobs  chan *job
	wg    sync.WaitGroup
	bufs  sync.Pool

	known [256]struct {
		sync.Mutex
		m map[objects.ID]struct{}
	}

	logical, holes, chunks, newObjects, newBytes, newChunkBytes atomic.Int64
}

// job is one chunk travelling to a worker. buf holds the chunk's canonical
// encoding: two header bytes, then the data.
type job struct {
	ctx context.Context
	buf *[]byte
	res chan result
}

type result struct {
	id     objects.ID // Zero for a hole
	length uint64
	err    error
}

// NewSaver starts a Saver with workers goroutines (0 means GOMAXPROCS).
func NewSaver(store objects.Store, workers int) *Saver {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	s := &Saver{store: store, jobs: make(chan *job, 2*workers)}
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
	var seal []byte
	for j := range s.jobs {
		enc := *j.buf
		data := enc[len(objects.ChunkHeader):]
		r := result{length: uint64(len(data))}
		if chunker.IsZero(data) {
			s.holes.Add(int64(len(data)))
		} else {
			s.chunks.Add(1)
			copy(enc, objects.ChunkHeader[:])
			r.id = objects.Sum(enc)
			var stored []byte
			stored, r.err = s.put(j.ctx, r.id, enc, seal)
			if stored != nil {
				s.newChunkBytes.Add(int64(len(data)))
				if &stored[0] != &enc[0] && cap(stored) > cap(seal) {
					seal = stored // keep the larger buffer for the next Seal
				}
			}
		}
		s.bufs.Put(j.buf)
		j.res <- r
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

// put stores enc under id unless the store has it. It returns the stored
// form it wrote, or nil if the object was present.
func (s *Saver) put(ctx context.Context, id objects.ID, enc, sealBuf []byte) ([]byte, error) {
	if s.isKnown(id) {
		return nil, nil
	}
	has, err := s.store.Has(ctx, id)
	if err != nil {
		return nil, err
	}
	if has {
		s.setKnown(id)
		return nil, nil
	}
	stored := objects.Seal(enc, sealBuf)
	if err := s.store.Put(ctx, id, stored); err != nil {
		return nil, err
	}
	s.setKnown(id)
	s.newObjects.Add(1)
	s.newBytes.Add(int64(len(stored)))
	return stored, nil
}

// SaveObject stores a canonical encoding (a tree, a snapshot…) and returns
// its ID. The caller keeps the closure invariant: everything enc names must
// already be stored.
func (s *Saver) SaveObject(ctx context.Context, enc []byte) (objects.ID, error) {
	id := objects.Sum(enc)
	_, err := s.put(ctx, id, enc, nil)
	return id, err
}

func (s *Saver) getBuf(n int) *[]byte {
	if p, ok := s.bufs.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, max(n, int(chunker.Default.Max)+len(objects.ChunkHeader)))
	return &b
}

// SaveStream reads r to its end, stores it as a stream object cut with p,
// and returns the stream's ID and object. Chunks are hashed and stored on
// the Saver's workers while r is being read and cut.
func (s *Saver) SaveStream(ctx context.Context, r io.Reader, p Params) (objects.ID, *objects.Stream, error) {
	if err := p.Validate(); err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	ch, err := chunker.New(r, p.Chunking)
	if err != nil {
		return objects.Zero, nil, fmt.Errorf("save stream: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	b := newIndexBuilder(s, p.Fanout)
	pending := make(chan chan result, 4*cap(s.jobs)+16)
	collected := make(chan error, 1)
	go func() {
		var err error
		for rc := range pending {
			r := <-rc
			if err != nil {
				continue
			}
			if err = r.err; err == nil {
				err = b.add(ctx, r.id, r.length)
			}
			if err != nil {
				cancel(err)
			}
		}
		collected <- err
	}()

	var readErr error
	hdr := len(objects.ChunkHeader)
	for {
		chunk, err := ch.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
		s.logical.Add(int64(len(chunk)))
		buf := s.getBuf(hdr + len(chunk))
		copy((*buf)[hdr:], chunk)
		rc := make(chan result, 1)
		select {
		case s.jobs <- &job{ctx: ctx, buf: buf, res: rc}:
		case <-ctx.Done():
			readErr = context.Cause(ctx)
		}
		if readErr != nil {
			break
		}
		pending <- rc
	}
	close(pending)
	if err := <-collected; err != nil && readErr == nil {
		readErr = err
	}
	if readErr != nil {
		if errors.Is(readErr, context.Canceled) && ctx.Err() != nil && context.Cause(ctx) != nil {
			readErr = context.Cause(ctx)
		}
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
