package objects

import (
	"context"
	"errors"
	"fmt"
)

// The pack store keeps deltas (see delta.go) and resolves them: Get
// hands out self-contained stored forms only, Load the canonical
// encoding without compressing it again.
var (
	_ DeltaPutter = (*Packed)(nil)
	_ Loader      = (*Packed)(nil)
)

// Get implements Store. A delta is resolved and sealed again, so what
// Get returns is self-contained: it may go to any store or reader.
func (p *Packed) Get(ctx context.Context, id ID) ([]byte, error) {
	stored, err := p.getRecord(ctx, id)
	if err != nil || !IsDelta(stored) {
		return stored, err
	}
	enc, err := p.resolve(ctx, id, stored)
	if err != nil {
		return nil, err
	}
	return Seal(enc, nil), nil
}

// Load implements Loader: the canonical encoding of id, verified, a
// delta resolved against its base.
func (p *Packed) Load(ctx context.Context, id ID) ([]byte, error) {
	stored, err := p.getRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if IsDelta(stored) {
		return p.resolve(ctx, id, stored)
	}
	enc, err := Unseal(id, stored)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, p.Locate(id))
	}
	return enc, nil
}

// resolve returns the canonical encoding of id from its delta: the base
// is read, verified and must be whole, so resolving reads two records at
// most, whatever a damaged or hostile store holds.
func (p *Packed) resolve(ctx context.Context, id ID, delta []byte) ([]byte, error) {
	base, ok := DeltaBase(delta)
	if !ok {
		return nil, fmt.Errorf("object %s: %w: a delta record of %d bytes is too short (%s)", id, ErrCorrupt, len(delta), p.Locate(id))
	}
	stored, err := p.getRecord(ctx, base)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("object %s: %w: it is stored as a delta on %s, which is missing (%s)", id, ErrCorrupt, base, p.Locate(id))
	}
	if err != nil {
		return nil, fmt.Errorf("object %s: read the base of its delta: %w", id, err)
	}
	if IsDelta(stored) {
		return nil, fmt.Errorf("object %s: %w: its delta's base %s is a delta too; sbuml stores deltas on whole objects only (%s)", id, ErrCorrupt, base, p.Locate(id))
	}
	baseEnc, err := Unseal(base, stored)
	if err != nil {
		return nil, fmt.Errorf("object %s: the base of its delta: %w (%s)", id, err, p.Locate(base))
	}
	enc, err := ApplyDelta(id, delta, baseEnc)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, p.Locate(id))
	}
	return enc, nil
}

// BaseFor implements DeltaPutter: prev itself if a published pack holds
// it whole, else the base of prev's delta; ok is false if prev is in no
// published pack, or the store keeps no deltas (NewPackedIn).
func (p *Packed) BaseFor(ctx context.Context, prev ID) (base ID, enc []byte, ok bool, err error) {
	loc, ok := p.published(prev)
	if !ok || !p.deltas {
		return Zero, nil, false, nil
	}
	base = prev
	if loc.delta {
		stored, err := p.getRecord(ctx, prev)
		if err != nil {
			return Zero, nil, false, err
		}
		if base, ok = DeltaBase(stored); !ok {
			return Zero, nil, false, fmt.Errorf("object %s: %w: a delta record of %d bytes is too short (%s)", prev, ErrCorrupt, len(stored), p.Locate(prev))
		}
		if loc, ok = p.published(base); !ok || loc.delta {
			return Zero, nil, false, nil
		}
	}
	enc, err = p.Load(ctx, base)
	if err != nil {
		return Zero, nil, false, err
	}
	return base, enc, true, nil
}

// published returns where a published pack keeps id.
func (p *Packed) published(id ID) (packLoc, bool) {
	p.mu.RLock()
	loc, ok := p.index[id]
	loaded := p.loaded
	p.mu.RUnlock()
	if ok || loaded {
		return loc, ok
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.load(); err != nil {
		return packLoc{}, false
	}
	loc, ok = p.index[id]
	return loc, ok
}

// PutDelta implements DeltaPutter. The delta is written on a leaf lane,
// as PutLeaf writes.
func (p *Packed) PutDelta(ctx context.Context, id ID, delta, whole []byte) (bool, error) {
	if IsDelta(whole) {
		return false, errNotSelfContained(id)
	}
	stored := whole
	if base, ok := DeltaBase(delta); ok && p.deltas {
		if loc, ok := p.published(base); ok && !loc.delta {
			stored = delta
		}
	}
	lane := <-p.freeLanes
	defer func() { p.freeLanes <- lane }()
	return IsDelta(stored), p.putInto(ctx, lane, id, stored)
}
