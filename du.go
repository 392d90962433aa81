package sbuml

import (
	"context"
	"fmt"
	"time"

	"github.com/sbuml/sbuml/objects"
)

// DuReport says how much the scrapbook holds and how well it dedupes.
type DuReport struct {
	Snapshots []DuSnapshot `json:"snapshots"`
	// Objects and StoredBytes count everything in the object store,
	// reachable or not.
	Objects     int64 `json:"objects"`
	StoredBytes int64 `json:"stored_bytes"`
	// LogicalBytes is the sum of the snapshots' logical sizes: what plain
	// copies of every snapshot would take.
	LogicalBytes uint64 `json:"logical_bytes"`
	// UniqueChunkBytes is the uncompressed size of the distinct chunks
	// the snapshots reach (holes cost nothing and are not counted).
	UniqueChunkBytes uint64 `json:"unique_chunk_bytes"`
	// DedupRatio is LogicalBytes / UniqueChunkBytes; CompressionRatio is
	// UniqueChunkBytes / the stored size of those chunks.
	DedupRatio       float64 `json:"dedup_ratio"`
	CompressionRatio float64 `json:"compression_ratio"`
	// UnreferencedObjects and UnreferencedBytes count the stored objects
	// that neither a ref nor a machine reaches (deleted branches, for
	// one): what sbuml gc frees.
	UnreferencedObjects int64 `json:"unreferenced_objects"`
	UnreferencedBytes   int64 `json:"unreferenced_bytes"`
}

// DuSnapshot is one snapshot's line in a DuReport.
type DuSnapshot struct {
	ID           objects.ID `json:"id"`
	Time         time.Time  `json:"time"`
	Message      string     `json:"message"`
	LogicalBytes uint64     `json:"logical_bytes"`
	// AddedBytes is the stored size of the objects this snapshot added:
	// those no older snapshot reaches.
	AddedBytes   int64 `json:"added_bytes"`
	AddedObjects int64 `json:"added_objects"`
}

// Du measures the scrapbook: per snapshot (oldest first) its logical size
// and the bytes it added, and overall the dedup and compression ratios.
// The snapshots are those gc keeps: the history of every ref and of every
// machine's last snapshot.
func (s *Scrapbook) Du(ctx context.Context) (*DuReport, error) {
	starts, err := s.gcRoots()
	if err != nil {
		return nil, fmt.Errorf("du: %w", err)
	}
	order, snaps, err := s.history(ctx, starts)
	if err != nil {
		return nil, fmt.Errorf("du: %w", err)
	}
	acct, err := s.account(ctx, order)
	if err != nil {
		return nil, fmt.Errorf("du: %w", err)
	}
	r := &DuReport{Snapshots: []DuSnapshot{}}
	if err := s.Objects.List(ctx, func(_ objects.ID, size int64) error {
		r.Objects++
		r.StoredBytes += size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("du: %w", err)
	}
	var chunkStored int64
	r.UnreferencedObjects, r.UnreferencedBytes = r.Objects, r.StoredBytes
	for _, id := range order {
		u, sn := acct[id], snaps[id]
		if !isBookkeeping(sn) { // an autosnap index or a child claim is no snapshot of anything
			r.Snapshots = append(r.Snapshots, DuSnapshot{ID: id, Time: sn.Time, Message: sn.Message,
				LogicalBytes: u.logical, AddedBytes: u.added, AddedObjects: u.objects})
		}
		r.UnreferencedObjects -= u.objects
		r.UnreferencedBytes -= u.added
		r.LogicalBytes += u.logical
		r.UniqueChunkBytes += u.chunkBytes
		chunkStored += u.chunkStored
	}
	// A damaged store may lack chunks the snapshots reach.
	r.UnreferencedObjects, r.UnreferencedBytes = max(r.UnreferencedObjects, 0), max(r.UnreferencedBytes, 0)
	if r.UniqueChunkBytes > 0 {
		r.DedupRatio = float64(r.LogicalBytes) / float64(r.UniqueChunkBytes)
	}
	if chunkStored > 0 {
		r.CompressionRatio = float64(r.UniqueChunkBytes) / float64(chunkStored)
	}
	return r, nil
}
