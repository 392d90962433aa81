package objects

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
)

// RepackStats says what Repack found and did.
type RepackStats struct {
	// PacksBefore and PacksAfter count published packs; LooseBefore
	// counts loose objects (Repack leaves none).
	PacksBefore int `json:"packs_before"`
	PacksAfter  int `json:"packs_after"`
	LooseBefore int `json:"loose_before"`
	// Kept and KeptBytes count the objects kept, and their stored size.
	Kept      int64 `json:"kept"`
	KeptBytes int64 `json:"kept_bytes"`
	// Removed and RemovedBytes count the objects dropped: not kept, or a
	// second copy of a kept one.
	Removed      int64 `json:"removed"`
	RemovedBytes int64 `json:"removed_bytes"`
	// Copied and CopiedBytes count the kept objects rewritten into new
	// packs; the others stay in packs that were left as they are.
	Copied      int64 `json:"copied"`
	CopiedBytes int64 `json:"copied_bytes"`
	// FileBytesBefore and FileBytesAfter are the sizes of all pack and
	// loose object files.
	FileBytesBefore int64 `json:"file_bytes_before"`
	FileBytesAfter  int64 `json:"file_bytes_after"`
}

// journalFile, in the pack directory, lists what a repack is removing:
//
//	pack pack-<64 hex>
//	loose <64 hex>
//	end
//
// It is renamed into place once the packs that replace them are durable;
// from then on readers do not see what it lists, so everything a repack
// drops vanishes at one instant, and a repack killed while removing files
// never leaves an object whose children are gone. The next repack
// finishes the removal and deletes the journal.
const journalFile = "repack-journal"

// readJournal loads the journal of an unfinished repack, if any, into
// gonePacks and goneLoose. Callers hold mu for writing.
func (p *Packed) readJournal() error {
	b, err := readAll(p.fs, path.Join(p.dir, journalFile))
	if errors.Is(err, os.ErrNotExist) {
		p.gonePacks, p.goneLoose = nil, nil
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p.where(journalFile), err)
	}
	packs, loose, err := parseJournal(b)
	if err != nil {
		return fmt.Errorf("%s: %w: %v", p.where(journalFile), ErrCorrupt, err)
	}
	p.gonePacks, p.goneLoose = packs, loose
	return nil
}

func parseJournal(b []byte) (map[string]bool, map[ID]bool, error) {
	packs, loose := map[string]bool{}, map[ID]bool{}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 || lines[len(lines)-2] != "end" || lines[len(lines)-1] != "" {
		return nil, nil, errors.New("does not end with an end line")
	}
	for _, line := range lines[:len(lines)-2] {
		kind, arg, _ := strings.Cut(line, " ")
		switch kind {
		case "pack":
			if !strings.HasPrefix(arg, "pack-") || strings.ContainsAny(arg, "/.") {
				return nil, nil, fmt.Errorf("bad pack name %q", arg)
			}
			packs[arg] = true
		case "loose":
			id, err := ParseID(arg)
			if err != nil {
				return nil, nil, err
			}
			loose[id] = true
		default:
			return nil, nil, fmt.Errorf("bad line %q", line)
		}
	}
	return packs, loose, nil
}

// removeJournaled removes the packs and loose objects the journal lists,
// then the journal. Callers hold mu and the gc lock.
func (p *Packed) removeJournaled(ctx context.Context) error {
	if err := p.readJournal(); err != nil || (p.gonePacks == nil && p.goneLoose == nil) {
		return err
	}
	for name := range p.gonePacks {
		for _, file := range []string{name + ".idx", name + ".pack"} {
			if err := p.fs.Remove(path.Join(p.dir, file)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", p.where(file), err)
			}
		}
	}
	for id := range p.goneLoose {
		if err := p.loose.Delete(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		// Empty fan-out directories go too, so that Has stops looking
		// for loose objects (see load); one still in use stays.
		p.fs.Remove(path.Dir(p.loose.name(id)))
	}
	if err := p.syncfs(); err != nil {
		return err
	}
	if err := p.fs.Remove(path.Join(p.dir, journalFile)); err != nil {
		return fmt.Errorf("remove %s: %w", p.where(journalFile), err)
	}
	p.gonePacks, p.goneLoose = nil, nil
	return nil
}

// packName names a pack by its index: "pack-" and the index's BLAKE3. A
// name the journal lists belongs to a pack being removed, which an
// identical new pack must not share, or the removal would take it too:
// such a pack is named by the BLAKE3 of its index followed by a counter
// byte, 1, 2, … Callers hold mu.
func (p *Packed) packName(idx []byte) (string, error) {
	if err := p.readJournal(); err != nil {
		return "", err
	}
	name := "pack-" + Sum(idx).String()
	for i := 1; p.gonePacks[name]; i++ {
		name = "pack-" + Sum(append(idx[:len(idx):len(idx)], byte(i))).String()
	}
	return name, nil
}

// SmallPacks returns the number of published packs under the size that
// Repack merges even when it drops nothing, as of the last look.
func (p *Packed) SmallPacks() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		p.load()
	}
	n := 0
	for _, pf := range p.packs {
		if pf.size < smallPack {
			n++
		}
	}
	return n
}

// smallPack is the size under which a pack is merged with the others
// even when every object in it is kept, so that the many small packs of
// many commits become one.
const smallPack = maxPackSize / 4

// RepackPlan is what a repack will do, decided before anything is
// written, as restic plans a prune before it executes it: which packs are
// rewritten, which are removed whole, which loose objects are moved into
// packs or dropped. A dry run is the plan. Repack carries it out against
// the store as it was planned: if the store's packs changed meanwhile, it
// refuses, and a new plan is needed.
type RepackPlan struct {
	// Stats are the figures the plan expects. PacksAfter and
	// FileBytesAfter are estimates until Repack reports what it did.
	Stats RepackStats

	store *Packed
	keep  func(ID) bool
	packs []plannedPack
	loose []plannedLoose
	// dead counts the packs that hold nothing to keep and go before any
	// copying; deadBytes is their size.
	dead      int
	deadBytes int64
}

// plannedPack is one published pack as a plan sees it.
type plannedPack struct {
	pf      *packFile
	entries []indexEntry
	size    int64 // of the pack file
	// rewrite: its kept objects are copied into new packs and it goes;
	// dead: it holds nothing to keep and goes before any copying.
	rewrite, dead bool
}

// plannedLoose is one loose object as a plan sees it.
type plannedLoose struct {
	id   ID
	size int64
	copy bool // kept and in no pack: copied into a new pack
}

// PlanRepack implements Repacker. A pack is rewritten when it holds an
// object that keep drops, a second copy of an object, or is under a
// quarter of MaxPackSize (so the small packs of many commits merge into
// one); large packs holding only kept objects are left alone, so the
// cost of a repack follows what it frees. Loose objects are moved into
// packs or dropped. It publishes what this process has written first, so
// that the plan sees it.
func (p *Packed) PlanRepack(ctx context.Context, keep func(ID) bool) (*RepackPlan, error) {
	if err := p.Sync(ctx); err != nil {
		return nil, fmt.Errorf("plan repack: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.load(); err != nil {
		return nil, fmt.Errorf("plan repack: %w", err)
	}
	if len(p.broken) > 0 {
		return nil, fmt.Errorf("plan repack: %w (run sbuml fsck)", p.broken[0])
	}
	keep, err := p.keepBases(keep)
	if err != nil {
		return nil, fmt.Errorf("plan repack: %w", err)
	}
	pl := &RepackPlan{store: p, keep: keep}
	if err := p.planPacks(pl); err != nil {
		return nil, fmt.Errorf("plan repack: %w", err)
	}
	if err := p.planLoose(ctx, pl); err != nil {
		return nil, fmt.Errorf("plan repack: %w", err)
	}
	pl.planDead()
	pl.count()
	return pl, nil
}

// keepBases returns keep extended to the bases of the deltas it keeps:
// a base goes only with the last delta on it. Keeping one base (a whole
// page) costs less than rewriting whole every kept delta on it, which
// would also undo what the deltas saved. Callers hold mu.
func (p *Packed) keepBases(keep func(ID) bool) (func(ID) bool, error) {
	bases := map[ID]bool{}
	var header [DeltaHeaderSize]byte
	for id, loc := range p.index {
		if !loc.delta || !keep(id) {
			continue
		}
		pf := p.packs[loc.pack]
		if _, err := pf.f.ReadAt(header[:], int64(loc.off)); err != nil {
			return nil, fmt.Errorf("read the base of delta %s from %s at %d: %w (run sbuml fsck)", id, p.where(pf.name), loc.off, err)
		}
		base, ok := DeltaBase(header[:])
		if !ok {
			return nil, fmt.Errorf("object %s: %w: the index of %s says it is a delta, but its record is not (run sbuml fsck)", id, ErrCorrupt, p.where(pf.name))
		}
		bases[base] = true
	}
	if len(bases) == 0 {
		return keep, nil
	}
	return func(id ID) bool { return keep(id) || bases[id] }, nil
}

// planPacks reads the index of every published pack and decides which
// are rewritten. Callers hold mu.
func (p *Packed) planPacks(pl *RepackPlan) error {
	rewriting := 0
	for i, pf := range p.packs {
		idxName := strings.TrimSuffix(pf.name, ".pack") + ".idx"
		b, err := readAll(p.fs, path.Join(p.dir, idxName))
		if err != nil {
			return fmt.Errorf("read pack index %s: %w", p.where(idxName), err)
		}
		entries, err := decodePackIndex(b)
		if err != nil {
			return fmt.Errorf("pack index %s: %w: %v", p.where(idxName), ErrCorrupt, err)
		}
		size, err := fileSize(p.fs, path.Join(p.dir, pf.name))
		if err != nil {
			return err
		}
		pl.Stats.FileBytesBefore += size + int64(len(b))
		pp := plannedPack{pf: pf, entries: entries, size: size, rewrite: size < smallPack || !p.allLive(entries, int32(i), pl.keep)}
		if pp.rewrite {
			rewriting++
		}
		pl.packs = append(pl.packs, pp)
	}
	pl.Stats.PacksBefore = len(p.packs)
	// A single pack with nothing to drop gains nothing from a rewrite.
	if rewriting == 1 {
		for i := range pl.packs {
			if pl.packs[i].rewrite && p.allLive(pl.packs[i].entries, int32(i), pl.keep) {
				pl.packs[i].rewrite = false
			}
		}
	}
	return nil
}

// planLoose lists the loose objects and decides which are copied into
// packs. Callers hold mu.
func (p *Packed) planLoose(ctx context.Context, pl *RepackPlan) error {
	err := p.loose.List(ctx, func(id ID, size int64) error {
		if p.goneLoose[id] {
			return nil // an unfinished repack removes it (see Repack)
		}
		_, packed := p.index[id]
		pl.loose = append(pl.loose, plannedLoose{id: id, size: size, copy: !packed && pl.keep(id)})
		pl.Stats.FileBytesBefore += size
		return nil
	})
	if err != nil {
		return fmt.Errorf("list loose objects: %w", err)
	}
	pl.Stats.LooseBefore = len(pl.loose)
	return nil
}

// planDead marks the rewritten packs that hold nothing to keep, to be
// removed before anything is copied: on a full disk that frees the room
// the copies need. Where they are all there is to do, one removal at the
// end does for all.
func (pl *RepackPlan) planDead() {
	var dead []int
	rewriting := 0
	for i, pp := range pl.packs {
		if !pp.rewrite {
			continue
		}
		rewriting++
		if pl.store.noneLive(pp.entries, int32(i), pl.keep) {
			dead = append(dead, i)
		}
	}
	if len(dead) == 0 || len(dead) >= rewriting+len(pl.loose) {
		return
	}
	for _, i := range dead {
		pl.packs[i].dead = true
		pl.dead++
		pl.deadBytes += pl.packs[i].size
	}
}

// count fills in the plan's Stats: what is kept, removed and copied, and
// the packs and bytes expected after.
func (pl *RepackPlan) count() {
	st := &pl.Stats
	for i, pp := range pl.packs {
		for _, e := range pp.entries {
			switch {
			case !pl.store.liveIn(e, int32(i), pl.keep):
				st.Removed++
				st.RemovedBytes += int64(e.size)
			case pp.rewrite:
				st.Copied++
				st.CopiedBytes += int64(e.size)
				fallthrough
			default:
				st.Kept++
				st.KeptBytes += int64(e.size)
			}
		}
		if !pp.rewrite {
			st.PacksAfter++
		}
	}
	for _, lo := range pl.loose {
		if !lo.copy {
			st.Removed++ // a loose copy of a packed object, or garbage
			st.RemovedBytes += lo.size
			continue
		}
		st.Kept++
		st.KeptBytes += lo.size
		st.Copied++
		st.CopiedBytes += lo.size
	}
	st.PacksAfter += int((st.CopiedBytes + maxPackSize - 1) / maxPackSize)
	st.FileBytesAfter = st.FileBytesBefore - st.RemovedBytes // stored bytes, roughly
}

// Repack implements Repacker: it carries out a plan made by PlanRepack on
// this store. Packs that hold nothing to keep are removed first; the kept
// objects of the other rewritten packs and the loose ones are copied
// (verified, not decoded) into new packs, which are published and made
// durable before the packs they replace are removed, and what is removed
// vanishes at once (see journalFile): a crash leaves objects twice, never
// missing. The caller must ensure that no other process writes to the
// store meanwhile (see scrapbook.LockShared), and that keep holds every object
// reachable from every ref; Repack only keeps the closure of what it is
// told.
func (p *Packed) Repack(ctx context.Context, pl *RepackPlan, progress func(copied, total int64)) (RepackStats, error) {
	st := pl.Stats
	st.Copied, st.CopiedBytes = 0, 0
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.checkPlan(pl); err != nil {
		return st, err
	}
	if p.gonePacks != nil || p.goneLoose != nil {
		// A repack was killed while removing files: finish it.
		if err := p.removeJournaled(ctx); err != nil {
			return st, fmt.Errorf("repack: %w", err)
		}
	}
	copyFailed, err := p.removeDead(ctx, pl)
	if err != nil {
		return st, err
	}
	out := &packOutput{p: p}
	defer out.abort()
	if err := p.copyKept(ctx, pl, out, &st, progress); err != nil {
		return st, copyFailed(err)
	}
	if err := out.finish(); err != nil {
		return st, copyFailed(err)
	}
	if err := p.removeReplaced(ctx, pl, out.published); err != nil {
		return st, err
	}
	st.PacksAfter = len(out.published)
	for _, pp := range pl.packs {
		if !pp.rewrite {
			st.PacksAfter++
		}
	}
	return p.reloadAfterRepack(ctx, st)
}

// checkPlan refuses a plan made for another store, or before this store's
// packs changed. Callers hold mu.
func (p *Packed) checkPlan(pl *RepackPlan) error {
	if pl.store != p {
		return errors.New("repack: the plan was made for another store")
	}
	if err := p.load(); err != nil {
		return fmt.Errorf("repack: %w", err)
	}
	changed := len(p.packs) != len(pl.packs)
	for i := 0; !changed && i < len(p.packs); i++ {
		changed = p.packs[i] != pl.packs[i].pf
	}
	for _, w := range p.pending {
		changed = changed || w != nil
	}
	if changed {
		return errors.New("repack: the store changed since the repack was planned; plan it again")
	}
	return nil
}

// removeDead removes the packs the plan marks dead, before any copying,
// and returns how to describe a copy that fails afterwards. Callers hold
// mu.
func (p *Packed) removeDead(ctx context.Context, pl *RepackPlan) (copyFailed func(error) error, err error) {
	copyFailed = func(err error) error { return err }
	if pl.dead == 0 {
		return copyFailed, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err // nothing removed yet
	}
	if err := p.removeLeftovers(); err != nil {
		return nil, err
	}
	var dead []string
	for _, pp := range pl.packs {
		if pp.dead {
			dead = append(dead, pp.pf.name)
		}
	}
	if err := p.removeByJournal(ctx, dead, nil); err != nil {
		return nil, fmt.Errorf("repack: %w", err)
	}
	// Should copying fail now (the room freed was not enough), say what
	// was done.
	return func(err error) error {
		return fmt.Errorf("%w (the %d packs that held nothing to keep, %.1f MiB, were removed first)", err, pl.dead, float64(pl.deadBytes)/(1<<20))
	}, nil
}

// copyKept copies the kept objects of the rewritten packs and the loose
// objects to keep into out, counting them in st. Callers hold mu.
func (p *Packed) copyKept(ctx context.Context, pl *RepackPlan, out *packOutput, st *RepackStats, progress func(copied, total int64)) error {
	var reported int64
	copied := func(size int64) {
		st.Copied++
		st.CopiedBytes += size
		if progress != nil && st.CopiedBytes-reported >= 8<<20 {
			reported = st.CopiedBytes
			progress(st.CopiedBytes, pl.Stats.CopiedBytes)
		}
	}
	for i, pp := range pl.packs {
		if !pp.rewrite || pp.dead {
			continue
		}
		for _, e := range pp.entries {
			if !p.liveIn(e, int32(i), pl.keep) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err // out.abort removes the copies
			}
			if err := p.copyPacked(pp.pf, e, out); err != nil {
				return err
			}
			copied(int64(e.size))
		}
	}
	for _, lo := range pl.loose {
		if !lo.copy {
			continue
		}
		if err := p.copyLoose(ctx, lo.id, out); err != nil {
			return err
		}
		copied(lo.size)
	}
	return ctx.Err()
}

// copyPacked copies one record of a pack into out. It is copied, not
// decoded: a compressed form or a delta is checked by its CRC, any other
// against its ID, lest a damaged record replace the loose copy dropped
// later. A delta's base is kept too (see keepBases), so it stays a delta.
func (p *Packed) copyPacked(pf *packFile, e indexEntry, out *packOutput) error {
	b := make([]byte, e.size)
	if _, err := pf.f.ReadAt(b, int64(e.off)); err != nil {
		return fmt.Errorf("repack: read object %s from %s at %d: %w", e.id, p.where(pf.name), e.off, err)
	}
	bad := !crcMatches(b, e.crc)
	if !bad && !checksummedForm(b) {
		_, err := Unseal(e.id, b)
		bad = err != nil
	}
	if bad {
		return fmt.Errorf("repack: object %s: %w: checksum mismatch in %s at offset %d (run sbuml fsck)", e.id, ErrCorrupt, p.where(pf.name), e.off)
	}
	return out.add(e.id, b)
}

// copyLoose copies one loose object, verified against its ID, into out.
func (p *Packed) copyLoose(ctx context.Context, id ID, out *packOutput) error {
	b, err := p.loose.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("repack: %w", err)
	}
	if _, err := Unseal(id, b); err != nil {
		return fmt.Errorf("repack: loose object %s (%s): %w (run sbuml fsck)", id, p.loose.Locate(id), err)
	}
	return out.add(id, b)
}

// removeReplaced removes, through one journal, the rewritten packs that
// the new ones replace and every loose object, then what killed writers
// left. Callers hold mu.
func (p *Packed) removeReplaced(ctx context.Context, pl *RepackPlan, published []string) error {
	fresh := map[string]bool{}
	for _, name := range published {
		fresh[name+".pack"] = true
	}
	var gone []string
	for _, pp := range pl.packs {
		// A rewrite may give back an old pack byte for byte, under its
		// old name: that one stays.
		if pp.rewrite && !pp.dead && !fresh[pp.pf.name] {
			gone = append(gone, pp.pf.name)
		}
	}
	loose := make([]ID, len(pl.loose))
	for i, lo := range pl.loose {
		loose[i] = lo.id
	}
	if err := p.removeByJournal(ctx, gone, loose); err != nil {
		return fmt.Errorf("repack: %w", err)
	}
	return p.removeLeftovers()
}

// reloadAfterRepack starts afresh from what is on disk after a repack and
// completes its stats. The files of the old view are not closed here: a
// Get of this process may still read one; they close when no longer used.
// Callers hold mu.
func (p *Packed) reloadAfterRepack(ctx context.Context, st RepackStats) (RepackStats, error) {
	p.packs, p.index, p.known, p.broken, p.loaded, p.hasLoose = nil, map[ID]packLoc{}, map[string]bool{}, nil, false, false
	if err := p.load(); err != nil {
		return st, fmt.Errorf("repack: %w", err)
	}
	after, err := p.fileBytes(ctx)
	st.FileBytesAfter = after
	if err != nil {
		return st, fmt.Errorf("repack: %w", err)
	}
	return st, nil
}

// liveIn reports whether entry e of pack n is the copy to keep: the
// object is kept and the index finds it in this pack at this offset.
func (p *Packed) liveIn(e indexEntry, n int32, keep func(ID) bool) bool {
	loc, ok := p.index[e.id]
	return ok && loc.pack == n && loc.off == e.off && keep(e.id)
}

// noneLive reports whether no entry of pack n is the copy to keep.
func (p *Packed) noneLive(entries []indexEntry, n int32, keep func(ID) bool) bool {
	for _, e := range entries {
		if p.liveIn(e, n, keep) {
			return false
		}
	}
	return true
}

// removeByJournal removes packs (by file name) and loose objects so that
// they vanish at once for every reader: it lists them in the journal,
// makes it durable, then removes the files (see removeJournaled).
// Everything it removes must be durable elsewhere or dropped. Callers
// hold mu.
func (p *Packed) removeByJournal(ctx context.Context, packs []string, loose []ID) error {
	if len(packs) == 0 && len(loose) == 0 {
		return nil
	}
	if err := p.syncfs(); err != nil {
		return err
	}
	var journal strings.Builder
	for _, name := range packs {
		fmt.Fprintf(&journal, "pack %s\n", strings.TrimSuffix(name, ".pack"))
	}
	for _, id := range loose {
		fmt.Fprintf(&journal, "loose %s\n", id)
	}
	journal.WriteString("end\n")
	tmp := path.Join(p.dir, ".tmp-"+randomSuffix()+".journal")
	if err := writeWhole(p.fs, tmp, []byte(journal.String())); err != nil {
		return fmt.Errorf("write %s: %w", p.where(journalFile), err)
	}
	if err := p.syncfs(); err != nil {
		p.fs.Remove(tmp)
		return err
	}
	if err := p.fs.Rename(tmp, path.Join(p.dir, journalFile)); err != nil {
		p.fs.Remove(tmp)
		return fmt.Errorf("publish %s: %w", p.where(journalFile), err)
	}
	// The journal must be durable before any removal is: a file system
	// that reorders metadata after a power loss could otherwise keep a
	// removal and lose the journal.
	if err := p.syncfs(); err != nil {
		return err
	}
	return p.removeJournaled(ctx)
}

func (p *Packed) allLive(entries []indexEntry, n int32, keep func(ID) bool) bool {
	for _, e := range entries {
		if !p.liveIn(e, n, keep) {
			return false
		}
	}
	return true
}

// Leftovers lists what killed writers (or writers at work) leave in the
// pack directory, packs being written (.tmp-*) and packs without an
// index, with their total size. Repack removes them.
func (p *Packed) Leftovers() (names []string, size int64, err error) {
	des, err := p.fs.ReadDir(p.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, nil
		}
		return nil, 0, fmt.Errorf("list packs: %w", err)
	}
	have := map[string]bool{}
	for _, de := range des {
		have[de.Name()] = true
	}
	for _, de := range des {
		name := de.Name()
		orphan := strings.HasSuffix(name, ".pack") && !have[strings.TrimSuffix(name, ".pack")+".idx"]
		if strings.HasPrefix(name, ".tmp-") || orphan {
			names = append(names, name)
			size += de.Size()
		}
	}
	return names, size, nil
}

// removeLeftovers removes the Leftovers. Only safe while no other process
// writes. Callers hold mu.
func (p *Packed) removeLeftovers() error {
	names, _, err := p.Leftovers()
	if err != nil {
		return fmt.Errorf("repack: %w", err)
	}
	for _, name := range names {
		if err := p.fs.Remove(path.Join(p.dir, name)); err != nil {
			return fmt.Errorf("repack: remove %s: %w", p.where(name), err)
		}
	}
	return nil
}

// fileBytes sums the sizes of the pack files, their indexes and the
// loose objects. Callers hold mu.
func (p *Packed) fileBytes(ctx context.Context) (int64, error) {
	var total int64
	des, err := p.fs.ReadDir(p.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), "pack-") {
			total += de.Size()
		}
	}
	err = p.loose.List(ctx, func(_ ID, size int64) error {
		total += size
		return nil
	})
	return total, err
}

func fileSize(fsys interface {
	Stat(string) (os.FileInfo, error)
}, name string) (int64, error) {
	fi, err := fsys.Stat(name)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// packOutput writes the new packs of a repack, starting another when one
// reaches MaxPackSize. The packs are published together at the end
// (finish), so a repack that fails midway leaves only temporary files.
type packOutput struct {
	p   *Packed
	tmp string // the pack being written
	f   interface{ Close() error }
	enc *PackEncoder
	// written are the packs completed, not yet published.
	written []writtenPack
	// published are the names (pack-…) of the packs published.
	published []string
}

type writtenPack struct {
	tmp string
	idx []byte
}

func (o *packOutput) add(id ID, stored []byte) error {
	if o.enc != nil && o.enc.Size()+uint64(len(stored)) > maxPackSize {
		if err := o.complete(); err != nil {
			return err
		}
	}
	if o.enc == nil {
		if err := o.p.fs.MkdirAll(o.p.dir, 0o755); err != nil {
			return fmt.Errorf("repack: %w", err)
		}
		o.tmp = path.Join(o.p.dir, ".tmp-"+randomSuffix()+".pack")
		f, err := o.p.fs.OpenFile(o.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			return fmt.Errorf("repack: %w", err)
		}
		o.f = f
		if o.enc, err = NewPackEncoder(f); err != nil {
			return o.fail(err)
		}
	}
	if err := o.enc.Add(id, stored); err != nil {
		return o.fail(err)
	}
	return nil
}

func (o *packOutput) fail(err error) error {
	tmp := o.tmp
	o.abort()
	return fmt.Errorf("repack: write %s: %w", tmp, err)
}

// complete closes the pack being written, if any, to be published by
// finish.
func (o *packOutput) complete() error {
	if o.enc == nil {
		return nil
	}
	if err := o.f.Close(); err != nil {
		return o.fail(err)
	}
	idx, _ := o.enc.Index()
	o.written = append(o.written, writtenPack{tmp: o.tmp, idx: idx})
	o.enc, o.f, o.tmp = nil, nil, ""
	return nil
}

// finish publishes the packs written: made durable, then each renamed
// into place, then its index written and renamed.
func (o *packOutput) finish() error {
	if err := o.complete(); err != nil {
		return err
	}
	if len(o.written) == 0 {
		return nil
	}
	if err := o.p.syncfs(); err != nil {
		o.abort()
		return fmt.Errorf("repack: %w", err)
	}
	for len(o.written) > 0 {
		w := o.written[0]
		name, err := o.p.packName(w.idx)
		if err != nil {
			o.abort()
			return fmt.Errorf("repack: %w", err)
		}
		if err := o.p.fs.Rename(w.tmp, path.Join(o.p.dir, name+".pack")); err != nil {
			o.abort()
			return fmt.Errorf("repack: publish %s: %w", o.p.where(name+".pack"), err)
		}
		o.written = o.written[1:]
		tmpIdx := path.Join(o.p.dir, ".tmp-"+randomSuffix()+".idx")
		if err := writeWhole(o.p.fs, tmpIdx, w.idx); err != nil {
			o.abort()
			return fmt.Errorf("repack: write pack index %s: %w", o.p.where(name+".idx"), err)
		}
		if err := o.p.fs.Rename(tmpIdx, path.Join(o.p.dir, name+".idx")); err != nil {
			o.abort()
			return fmt.Errorf("repack: publish pack index %s: %w", o.p.where(name+".idx"), err)
		}
		o.published = append(o.published, name)
	}
	return nil
}

// abort removes the packs written and not published.
func (o *packOutput) abort() {
	if o.enc != nil {
		o.f.Close()
		o.p.fs.Remove(o.tmp)
		o.enc, o.f, o.tmp = nil, nil, ""
	}
	for _, w := range o.written {
		o.p.fs.Remove(w.tmp)
	}
	o.written = nil
}
