package stream

import (
	"context"
	"encoding/binary"

	"github.com/sbuml/sbuml/objects"
)

// putChunk stores a new chunk's encoding and returns the size of its
// stored form: as a delta on prev, its previous version, where the store
// keeps deltas and the delta is clearly smaller than the chunk's whole
// stored form; else whole. A previous version that cannot serve as a
// base (missing, unreadable) only means the chunk is stored whole: it is
// fsck's to report, not the commit's to fail on.
func (s *Saver) putChunk(ctx context.Context, id objects.ID, enc []byte, prev objects.ID, bufs *scratch) (int, error) {
	stored := objects.Seal(enc, bufs.seal)
	if &stored[0] != &enc[0] && cap(stored) > cap(bufs.seal) {
		bufs.seal = stored // keep the larger buffer for the next Seal
	}
	if dp, ok := s.store.(objects.DeltaPutter); ok && !prev.IsZero() {
		if delta := s.tryDelta(ctx, dp, prev, enc, bufs); delta != nil && worthDelta(len(delta), len(stored)) {
			isDelta, err := dp.PutDelta(ctx, id, delta, stored)
			if !isDelta {
				return len(stored), err
			}
			s.deltaChunks.Add(1)
			return len(delta), err
		}
	}
	if leaves, ok := s.store.(objects.LeafPutter); ok {
		return len(stored), leaves.PutLeaf(ctx, id, stored)
	}
	return len(stored), s.store.Put(ctx, id, stored)
}

// worthDelta reports whether a delta of n bytes is worth storing instead
// of a whole stored form of whole bytes: reading it costs a second
// record, the base's, so it must save a quarter. Over the commits of
// BenchmarkMachineSnapshots, keeping deltas up to half the whole form
// stored 24 KB more than up to three quarters, and keeping every delta
// smaller than the whole form 4 KB less, on 80 more pages read twice.
func worthDelta(n, whole int) bool { return n <= whole-whole/4 }

// tryDelta returns enc as a delta on the base the store offers for prev,
// or nil if there is none of the same length or too much of it differs
// for a delta to win (a page rewritten with new data).
func (s *Saver) tryDelta(ctx context.Context, dp objects.DeltaPutter, prev objects.ID, enc []byte, bufs *scratch) []byte {
	base, baseEnc, ok, err := dp.BaseFor(ctx, prev)
	if err != nil || !ok || len(baseEnc) != len(enc) || !mostlySame(baseEnc, enc) {
		return nil
	}
	s.deltaTries.Add(1)
	bufs.delta = objects.EncodeDelta(base, baseEnc, enc, bufs.delta)
	return bufs.delta
}

// mostlySame reports whether at least a quarter of the 8-byte words of a
// and b (of the same length) are equal: below that, the XOR of the two
// compresses no better than b does, and trying costs a compression. Of
// the 9,009 changed pages with a previous version in a run of
// BenchmarkMachineSnapshots, it let 1,597 through, and no page it
// stopped had a delta worth storing.
func mostlySame(a, b []byte) bool {
	same := 0
	for i := 0; i+8 <= len(a); i += 8 {
		if binary.LittleEndian.Uint64(a[i:]) == binary.LittleEndian.Uint64(b[i:]) {
			same++
		}
	}
	return same >= len(a)/8/4
}
