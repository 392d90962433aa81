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

// RepackOptions tune Repack.
type RepackOptions struct {
	// DryRun writes and removes nothing; the stats say what would happen.
	DryRun bool
	// Progress, if set, is called now and then while objects are copied
	// with the bytes copied so far and the bytes to copy in all.
	Progress func(copied, total int64)
}

// Repack drops every object for which keep returns false and merges
// small packs. Packs holding a dropped object, a second copy of an
// object, or under a quarter of MaxPackSize are rewritten, their kept
// objects copied (verified, not decoded) into new packs; loose objects are
// moved into packs or removed. Large packs holding only kept objects are
// left alone, so the cost of a repack follows what it frees.
//
// Packs that hold nothing to keep are removed first, so that a full disk
// gets room for the copies. The new packs are published and made durable
// before the packs they replace are removed, and what is removed vanishes
// at once (see journalFile): a crash leaves objects twice, never missing. The caller must ensure that
// no other process writes to the store meanwhile (see internal/gclock),
// and that keep holds every object reachable from every ref; Repack only
// keeps the closure of what it is told.
func (p *Packed) Repack(ctx context.Context, keep func(ID) bool, opts RepackOptions) (RepackStats, error) {
	dryRun := opts.DryRun
	var st RepackStats
	if err := p.Sync(ctx); err != nil {
		return st, fmt.Errorf("repack: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.load(); err != nil {
		return st, fmt.Errorf("repack: %w", err)
	}
	if !dryRun && (p.gonePacks != nil || p.goneLoose != nil) {
		// A repack was killed while removing files: finish it.
		if err := p.removeJournaled(ctx); err != nil {
			return st, fmt.Errorf("repack: %w", err)
		}
	}
	if len(p.broken) > 0 {
		return st, fmt.Errorf("repack: %w (run sbuml fsck)", p.broken[0])
	}

	// Decide, pack by pack, what goes.
	type oldPack struct {
		pf      *packFile
		entries []indexEntry
		rewrite bool
		removed bool // holds nothing to keep, removed before any copying
	}
	olds := make([]oldPack, len(p.packs))
	rewriting := 0
	for i, pf := range p.packs {
		idxName := strings.TrimSuffix(pf.name, ".pack") + ".idx"
		b, err := readAll(p.fs, path.Join(p.dir, idxName))
		if err != nil {
			return st, fmt.Errorf("repack: read pack index %s: %w", p.where(idxName), err)
		}
		entries, err := decodePackIndex(b)
		if err != nil {
			return st, fmt.Errorf("repack: pack index %s: %w: %v", p.where(idxName), ErrCorrupt, err)
		}
		size, err := fileSize(p.fs, path.Join(p.dir, pf.name))
		if err != nil {
			return st, fmt.Errorf("repack: %w", err)
		}
		st.FileBytesBefore += size + int64(len(b))
		op := oldPack{pf: pf, entries: entries, rewrite: size < smallPack}
		for _, e := range entries {
			if !p.liveIn(e, int32(i), keep) {
				op.rewrite = true
				break
			}
		}
		if op.rewrite {
			rewriting++
		}
		olds[i] = op
	}
	st.PacksBefore = len(p.packs)

	// A single pack with nothing to drop gains nothing from a rewrite.
	if rewriting == 1 {
		for i := range olds {
			if olds[i].rewrite && p.allLive(olds[i].entries, int32(i), keep) {
				olds[i].rewrite = false
				rewriting = 0
			}
		}
	}

	var loose []ID
	var total int64 // bytes to copy, for Progress
	if err := p.loose.List(ctx, func(id ID, size int64) error {
		loose = append(loose, id)
		st.FileBytesBefore += size
		total += size
		return nil
	}); err != nil {
		return st, fmt.Errorf("repack: list loose objects: %w", err)
	}
	st.LooseBefore = len(loose)
	for i, op := range olds {
		for _, e := range op.entries {
			if op.rewrite && p.liveIn(e, int32(i), keep) {
				total += int64(e.size)
			}
		}
	}
	var reported int64
	progress := func() {
		if opts.Progress != nil && st.CopiedBytes-reported >= 8<<20 {
			reported = st.CopiedBytes
			opts.Progress(st.CopiedBytes, total)
		}
	}

	// Packs that hold nothing to keep go first, with nothing to copy: on
	// a full disk, that frees the room the copies below need.
	copyFailed := func(err error) error { return err }
	if !dryRun {
		var dead []string
		for i := range olds {
			if olds[i].rewrite && p.noneLive(olds[i].entries, int32(i), keep) {
				dead = append(dead, olds[i].pf.name)
				olds[i].removed = true
			}
		}
		if len(dead) > 0 && len(dead) < rewriting+len(loose) {
			if err := ctx.Err(); err != nil {
				return st, err // nothing removed yet
			}
			if err := p.removeLeftovers(); err != nil {
				return st, err
			}
			var size int64
			for _, name := range dead {
				n, _ := fileSize(p.fs, path.Join(p.dir, name))
				size += n
			}
			if err := p.removeByJournal(ctx, dead, nil); err != nil {
				return st, fmt.Errorf("repack: %w", err)
			}
			// Should copying fail now (the room freed was not enough),
			// say what was done.
			copyFailed = func(err error) error {
				return fmt.Errorf("%w (the %d packs that held nothing to keep, %.1f MiB, were removed first)", err, len(dead), float64(size)/(1<<20))
			}
		} else {
			for i := range olds {
				olds[i].removed = false // one journal below does for all
			}
		}
	}

	out := &packOutput{p: p, dryRun: dryRun}
	defer out.abort()
	copied := map[ID]bool{}
	for i, op := range olds {
		for _, e := range op.entries {
			live := p.liveIn(e, int32(i), keep)
			switch {
			case !live:
				st.Removed++
				st.RemovedBytes += int64(e.size)
			case !op.rewrite:
				st.Kept++
				st.KeptBytes += int64(e.size)
			default:
				if err := ctx.Err(); err != nil {
					return st, err
				}
				b := make([]byte, e.size)
				if _, err := op.pf.f.ReadAt(b, int64(e.off)); err != nil {
					return st, fmt.Errorf("repack: read object %s from %s at %d: %w", e.id, p.where(op.pf.name), e.off, err)
				}
				// Copied, not decoded: a compressed form is checked by
				// its CRC, any other against its ID, lest a damaged
				// record replace the loose copy dropped below.
				bad := !crcMatches(b, e.crc)
				if !bad && !IsCompressed(b) {
					_, err := Unseal(e.id, b)
					bad = err != nil
				}
				if bad {
					return st, fmt.Errorf("repack: object %s: %w: checksum mismatch in %s at offset %d (run sbuml fsck)", e.id, ErrCorrupt, p.where(op.pf.name), e.off)
				}
				if err := out.add(e.id, b); err != nil {
					return st, copyFailed(err)
				}
				copied[e.id] = true
				st.Kept++
				st.KeptBytes += int64(e.size)
				st.Copied++
				st.CopiedBytes += int64(e.size)
				progress()
			}
		}
	}
	for _, id := range loose {
		if _, ok := p.index[id]; ok || !keep(id) || copied[id] {
			st.Removed++ // a loose copy of a packed object, or garbage
			continue
		}
		b, err := p.loose.Get(ctx, id)
		if err != nil {
			return st, fmt.Errorf("repack: %w", err)
		}
		if _, err := Unseal(id, b); err != nil {
			return st, fmt.Errorf("repack: loose object %s (%s): %w (run sbuml fsck)", id, p.loose.Locate(id), err)
		}
		if err := out.add(id, b); err != nil {
			return st, copyFailed(err)
		}
		copied[id] = true
		st.Kept++
		st.KeptBytes += int64(len(b))
		st.Copied++
		st.CopiedBytes += int64(len(b))
		progress()
	}
	if err := ctx.Err(); err != nil {
		return st, err // out.abort removes the copies
	}
	if err := out.finish(); err != nil {
		return st, copyFailed(err)
	}

	st.PacksAfter = len(out.published)
	for _, op := range olds {
		if !op.rewrite {
			st.PacksAfter++
		}
	}
	if dryRun {
		st.FileBytesAfter = st.FileBytesBefore - st.RemovedBytes // stored bytes, roughly
		return st, nil
	}

	// The new packs are durable: what they replace goes.
	fresh := map[string]bool{}
	for _, name := range out.published {
		fresh[name+".pack"] = true
	}
	var gone []string
	for _, op := range olds {
		// A rewrite may give back an old pack byte for byte, under its
		// old name: that one stays.
		if op.rewrite && !op.removed && !fresh[op.pf.name] {
			gone = append(gone, op.pf.name)
		}
	}
	if err := p.removeByJournal(ctx, gone, loose); err != nil {
		return st, fmt.Errorf("repack: %w", err)
	}
	if err := p.removeLeftovers(); err != nil {
		return st, err
	}

	// Start afresh from what is on disk now. The files of the old view
	// are not closed here: a Get of this process may still read one; they
	// close when no longer used.
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
	p      *Packed
	dryRun bool
	tmp    string // the pack being written
	f      interface{ Close() error }
	enc    *PackEncoder
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
	if o.dryRun {
		if len(o.published) == 0 {
			o.published = append(o.published, "") // one pack, at least
		}
		return nil
	}
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
