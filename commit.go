package sbuml

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sbuml/sbuml/chunker"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/vmm"
)

// Names in the tree of a machine snapshot. See docs/format.md.
const (
	snapMachine     = "machine.json" // the machine's vmm.Config
	snapDeviceState = "device-state" // QEMU's migration stream: vCPUs and devices
	snapRAM         = "ram"          // guest RAM
	snapKernel      = "kernel"
	snapInitrd      = "initrd"
	snapDisks       = "disks" // one file per disk, by the disk's file name
)

// Stream parameters per stream kind, recorded in every stream object.
var (
	// RAMParams cuts guest RAM into 4 KiB pages: RAM does not shift, and
	// an idle guest dirties scattered pages. Measured on a 512 MiB guest
	// idling 5 s: 0.83 MiB new data with 4 KiB pages, 1.86 MiB with
	// FastCDC 4 KiB, 11.75 MiB with FastCDC 64 KiB. Small index nodes
	// keep the index cost of one changed page small too.
	RAMParams = stream.Params{Chunking: chunker.RAM, Fanout: 32}
	// DiskParams cuts machine disks and base images' disks on the file
	// system's 4 KiB block grid, like RAM: a block a guest wrote is then
	// the same chunk as the page holding it in the guest's page cache,
	// stored once (writing a 20 MiB file added 40.6 MiB with FastCDC
	// 64 KiB chunks). A disk is stored as a version of the machine's
	// last snapshot's, a patch on its tree, like RAM.
	DiskParams = stream.Params{Chunking: chunker.RAM, Fanout: 32}
	// DeviceStateParams cuts QEMU's device state (about 420 KiB for the
	// tiny guest) into small content-defined chunks: an idle guest's
	// commits change a few scattered KiB of it (timers, vCPU registers).
	// Measured on consecutive snapshots of an idle 512 MiB guest, new
	// compressed chunk bytes per commit: 28-32 KiB with 64 KiB chunks,
	// 8-11 with 16 KiB, 4-5 with 4 KiB, 1.7-3 with 2 KiB. A small fanout
	// keeps the index nodes a change rewrites small too.
	DeviceStateParams = stream.Params{Chunking: chunker.Params{Kind: chunker.FastCDC, Min: 512, Avg: 2 << 10, Max: 8 << 10}, Fanout: 16}
)

// CommitOptions control Commit.
type CommitOptions struct {
	// Freeze leaves the machine frozen after the commit (SBUML's -f);
	// with Continue too it is continued (-c). With neither, the machine
	// is frozen only for the capture.
	Freeze, Continue bool
	Message          string
	// Branch receives the snapshot; default: the machine's branch (its
	// name, or the branch it was checked out for).
	Branch string
	// Force moves a branch whose tip is not the machine's previous
	// snapshot (its history stays reachable from the reflog only).
	Force bool
	// Auto takes an automatic snapshot (thinkback): it goes to the
	// machine's index of automatic snapshots, not its branch, and its
	// parent is the machine's last snapshot that is not automatic (see
	// autosnap.go). Branch and Force do not apply.
	Auto bool
	// Ckpt is the ID of the guest's ckpt() request the snapshot answers
	// (0: none). It is recorded in the snapshot's labels and in the
	// machine, whose answer to it is then 0.
	Ckpt       uint64
	OnProgress func(StoreProgress)
}

// CommitResult describes a machine snapshot just taken.
type CommitResult struct {
	Result
	// Downtime is how long the guest was frozen for the capture: zero
	// unless it was running before the commit and running after. It is
	// the time between the timestamps of QEMU's STOP and RESUME events,
	// by QEMU's clock: from just after the vCPUs stopped to just before
	// they run again. Where QEMU sent no event, the wall clock stands in
	// for it: when the freeze returned, or when the continue did. Frozen
	// are the wall-clock parts.
	Downtime time.Duration `json:"downtime_ns"`
	// Running says whether the machine runs after the commit (it is
	// left frozen by -f without -c, or if it was frozen before).
	Running bool `json:"running"`
	// Frozen says where the downtime went.
	Frozen FrozenPhases `json:"frozen"`
	// HashedRAMPages is the number of RAM pages the commit read and
	// hashed: those that changed since the machine's last snapshot, or
	// every page with data when it had no copy of that snapshot's RAM
	// (see docs/design.md).
	HashedRAMPages int64 `json:"hashed_ram_pages"`
	// DirtyLog says the frozen pass compared only the RAM pages the
	// machine's dirty-page log reported (vmm.DirtyLog), not all of RAM.
	DirtyLog bool `json:"dirty_log"`
	// DeviceStateBytes is the size of QEMU's device and vCPU state.
	DeviceStateBytes int64 `json:"device_state_bytes"`
	// Auto says the snapshot is automatic (CommitOptions.Auto).
	Auto bool `json:"auto,omitempty"`
}

// Commit saves the complete state of a running or frozen machine (SBUML's
// sbumlsave): vCPU and device state, RAM and disks, captured at one
// instant, and records it as a snapshot whose parent is the machine's
// previous snapshot.
//
// The RAM file and disks are first copied aside while the guest runs. The
// guest is then frozen only while its device state is saved (QEMU
// migration with x-ignore-shared into a pipe that feeds the store) and,
// at the same time, the pages that changed since the first copy are
// copied again. It continues before the copies are chunked, hashed and
// stored.
func (s *Scrapbook) Commit(ctx context.Context, machine string, opts CommitOptions) (*CommitResult, error) {
	start := time.Now()
	m, err := s.OpenMachine(machine)
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	defer m.Close()
	release, err := s.lockObjects()
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	defer release()
	plan, err := s.planCommit(ctx, m, opts)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", machineName(m.Dir()), err)
	}
	res, err := s.commit(ctx, m, plan, opts)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", plan.name, err)
	}
	res.Duration = time.Since(start)
	return res, nil
}

// commitPlan is what Commit decided before touching the machine.
type commitPlan struct {
	name   string
	head   machineHead
	branch string     // the machine's branch after the commit
	ref    string     // the ref the snapshot goes to (a branch), "" for an automatic one
	tip    objects.ID // ref's tip when the commit started
	parent objects.ID
	// wasRunning says the guest ran before the commit.
	wasRunning bool
	// reuseDev is the device state to store again, for a machine left
	// frozen by a commit that has not run since.
	reuseDev *objects.TreeEntry
	// bases are the RAM and disk streams of the machine's last snapshot
	// by their path in its tree ("ram", "disks/NAME"): the new RAM and
	// disks are stored as versions of them.
	bases map[string]objects.ID
}

// planCommit reads the machine's head and state and decides where the
// snapshot goes, refusing what cannot be committed.
func (s *Scrapbook) planCommit(ctx context.Context, m *vmm.Machine, opts CommitOptions) (*commitPlan, error) {
	p := &commitPlan{name: machineName(m.Dir())}
	head, err := readHead(m.Dir())
	if err != nil {
		return nil, err
	}
	// A machine directory moved by hand is not seen by gc, which may have
	// removed the snapshot it continues from: then it has no parent.
	if !head.Snapshot.IsZero() {
		if ok, err := s.Objects.Has(ctx, head.Snapshot); err != nil {
			return nil, err
		} else if !ok {
			head = machineHead{Branch: head.Branch}
		}
	}
	p.head = head
	p.branch = opts.Branch
	if p.branch == "" || opts.Auto {
		p.branch = head.Branch
	}
	if p.branch == "" {
		p.branch = p.name
	}
	if opts.Auto {
		p.parent = head.base()
	} else if err := s.planBranch(p, opts.Force); err != nil {
		return nil, err
	}
	st, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.State != vmm.StateRunning && st.State != vmm.StateFrozen {
		detail := ""
		if st.Detail != "" {
			detail = ": " + st.Detail
		}
		return nil, fmt.Errorf("machine is %s, not running%s", st.State, detail)
	}
	p.wasRunning = st.State == vmm.StateRunning
	if p.bases, err = s.versionBases(ctx, head.Snapshot); err != nil {
		return nil, err
	}
	// A machine left frozen by a commit (-f) has not run since: QEMU will
	// not write its device state again, and it is the one already stored.
	if st.RunState == "postmigrate" {
		if !head.Frozen {
			return nil, fmt.Errorf("the machine's device state was saved by a commit that did not finish, and QEMU saves it only once until the guest runs; continue it ('sbuml continue %s') and commit again", p.name)
		}
		if p.reuseDev, err = s.deviceStateOf(ctx, head.Snapshot); err != nil {
			return nil, fmt.Errorf("the machine's device state was saved and it has not run since, but %w; continue it first", err)
		}
	}
	return p, nil
}

// planBranch checks that the snapshot may go to the plan's branch: a
// new branch, or one whose tip is the machine's last snapshot on it.
func (s *Scrapbook) planBranch(p *commitPlan, force bool) error {
	ref, err := s.branchRef(p.branch)
	if err != nil {
		return err
	}
	tip, err := s.tip(ref)
	if err != nil {
		return err
	}
	if base := p.head.base(); !tip.IsZero() && tip != base && !force {
		return fmt.Errorf("branch %s is at %s, not at this machine's last snapshot %s; use --branch NEW to start a new branch here, or --force to move %s",
			p.branch, tip.Short(), shortOrNone(base), p.branch)
	}
	p.ref, p.tip, p.parent = ref, tip, p.head.Snapshot
	return nil
}

// commit captures the machine, stores the capture and records the
// snapshot, as planned.
func (s *Scrapbook) commit(ctx context.Context, m *vmm.Machine, p *commitPlan, opts CommitOptions) (*CommitResult, error) {
	saver := stream.NewSaver(s.Objects, 0)
	defer saver.Close()
	c, err := s.capture(ctx, m, p, saver, opts)
	if c != nil {
		defer c.remove()
	}
	if err != nil {
		return nil, err
	}
	tree, size, err := s.storeMachine(ctx, saver, opts.OnProgress, m, c, p.bases)
	if err != nil {
		return nil, err
	}
	id, err := s.recordCommit(ctx, saver, p, tree, opts)
	if err != nil {
		return nil, err
	}
	head := machineHead{Snapshot: id, Branch: p.branch, Frozen: !c.running, Child: p.head.Child, Answers: p.head.Answers}
	if opts.Auto {
		head.Auto, head.Base = true, p.head.base()
	}
	if opts.Ckpt != 0 {
		head = head.withAnswer(opts.Ckpt, 0)
	}
	if err := writeHead(m.Dir(), head); err != nil {
		return nil, fmt.Errorf("snapshot %s stored, but: %w", id.Short(), err)
	}
	branch := p.ref
	if opts.Auto {
		branch = autosnapRef(p.name)
	}
	return &CommitResult{
		Result:   Result{ID: id, Branch: branch, Parent: p.parent, LogicalBytes: size, Stats: saver.Stats()},
		Downtime: c.downtime, Frozen: c.frozen, HashedRAMPages: c.hashedPages(), DirtyLog: c.useLog, Running: c.running, DeviceStateBytes: int64(c.devSize), Auto: opts.Auto,
	}, nil
}

// FrozenPhases are the parts of a commit's downtime. While the guest is
// frozen, QEMU writes its device state at the same time as the copies of
// RAM and then of the disks catch up; the guest continues when both are
// done: downtime is about max(DeviceState, RAM+Disks) + Continue.
type FrozenPhases struct {
	// DeviceState is QEMU's saving of the device and vCPU state.
	DeviceState time.Duration `json:"device_state_ns"`
	// RAM is the comparison of RAM with its copy, rewriting what differs.
	RAM time.Duration `json:"ram_ns"`
	// Disks is the same for the disks.
	Disks time.Duration `json:"disks_ns"`
	// Continue is QEMU's answer to continuing the guest.
	Continue time.Duration `json:"continue_ns"`
}

// recordCommit records the snapshot of tree: on the plan's branch, or in
// the machine's automatic snapshots.
func (s *Scrapbook) recordCommit(ctx context.Context, saver *stream.Saver, p *commitPlan, tree objects.ID, opts CommitOptions) (objects.ID, error) {
	labels := map[string]string{labelKind: kindMachine, labelMachine: p.name}
	msg := opts.Message
	if opts.Auto {
		labels[labelAuto] = "true"
		if msg == "" {
			msg = "autosnap " + p.name
		}
	}
	if opts.Ckpt != 0 {
		labels[labelCkpt] = requestKey(opts.Ckpt)
	}
	if msg == "" {
		msg = "commit " + p.name
	}
	sopts := SnapshotOptions{Message: msg, Labels: labels}
	if !opts.Auto {
		return s.record(ctx, saver, p.ref, p.tip, p.parent, tree, sopts)
	}
	id, err := s.saveSnapshot(ctx, saver, p.parent, tree, sopts)
	if err != nil {
		return objects.Zero, err
	}
	return id, s.addAutosnap(ctx, saver, p.name, id)
}

// deviceStateOf returns the device-state entry of machine snapshot id.
func (s *Scrapbook) deviceStateOf(ctx context.Context, id objects.ID) (*objects.TreeEntry, error) {
	if id.IsZero() {
		return nil, errors.New("no snapshot of it is known")
	}
	e, err := s.snapshotEntry(ctx, id, snapDeviceState)
	if err == nil && e == nil {
		err = fmt.Errorf("snapshot %s has no %s", id.Short(), snapDeviceState)
	}
	return e, err
}

// versionBases returns the RAM and disk streams of machine snapshot id
// by their path in its tree ("ram", "disks/NAME"); none if id is Zero.
func (s *Scrapbook) versionBases(ctx context.Context, id objects.ID) (map[string]objects.ID, error) {
	bases := map[string]objects.ID{}
	if id.IsZero() {
		return bases, nil
	}
	if e, err := s.snapshotEntry(ctx, id, snapRAM); err != nil {
		return nil, err
	} else if e != nil && e.Kind == objects.EntryFile {
		bases[snapRAM] = e.ID
	}
	d, err := s.snapshotEntry(ctx, id, snapDisks)
	if err != nil || d == nil || d.Kind != objects.EntryDir {
		return bases, err
	}
	t, err := objects.LoadTree(ctx, s.Objects, d.ID)
	if err != nil {
		return nil, err
	}
	for _, e := range t.Entries {
		if e.Kind == objects.EntryFile {
			bases[snapDisks+"/"+e.Name] = e.ID
		}
	}
	return bases, nil
}

// snapshotEntry returns the entry name at the top of snapshot id's tree,
// or nil if there is none.
func (s *Scrapbook) snapshotEntry(ctx context.Context, id objects.ID, name string) (*objects.TreeEntry, error) {
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return nil, err
	}
	t, err := objects.LoadTree(ctx, s.Objects, sn.Tree)
	if err != nil {
		return nil, err
	}
	return t.Find(name), nil
}

func shortOrNone(id objects.ID) string {
	if id.IsZero() {
		return "(none)"
	}
	return id.Short()
}

func resolvePath(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// storeMachine stores the captured state and the machine's boot files and
// returns the snapshot tree and its size: machine.json, device-state,
// ram, kernel, initrd, disks/. The RAM and disks are stored as versions
// of the streams in bases at their paths.
func (s *Scrapbook) storeMachine(ctx context.Context, saver *stream.Saver, progress func(StoreProgress), m *vmm.Machine, c *captured, bases map[string]objects.ID) (objects.ID, uint64, error) {
	cfg := m.Config()
	files := machineFiles(m.Dir(), cfg, c)
	for _, f := range files {
		f.base = bases[f.treePath()]
	}
	var total int64
	for _, f := range files {
		if fi, err := os.Stat(f.path); err == nil {
			total += fi.Size()
		}
	}
	// The device state, stored meanwhile, counts too.
	total += int64(c.devSize)
	if err := withProgress(saver, progress, total, func() error { return storeFiles(ctx, saver, files) }); err != nil {
		return objects.Zero, 0, err
	}
	// The copy of RAM now holds a stored stream (files[0]): the next
	// commit hashes only the pages that change. Without the table it
	// hashes them all, so a failure to write it fails nothing.
	c.ram.save(files[0].entry.ID, c.ramChanged)
	top, disks := &objects.Tree{}, &objects.Tree{}
	for _, f := range files {
		t := top
		if f.disk {
			t = disks
		}
		t.Entries = append(t.Entries, f.entry)
	}
	mj, err := storeMachineJSON(ctx, saver, cfg)
	if err != nil {
		return objects.Zero, 0, err
	}
	top.Entries = append(top.Entries, mj,
		objects.TreeEntry{Name: snapDeviceState, Kind: objects.EntryFile, Mode: 0o644, Size: c.devSize, ID: c.devID})
	if len(disks.Entries) > 0 {
		disks.Sort()
		did, err := saver.SaveObject(ctx, disks.Encode())
		if err != nil {
			return objects.Zero, 0, err
		}
		top.Entries = append(top.Entries, objects.TreeEntry{Name: snapDisks, Kind: objects.EntryDir, Mode: 0o755, Size: disks.Size(), ID: did})
	}
	top.Sort()
	id, err := saver.SaveObject(ctx, top.Encode())
	return id, top.Size(), err
}

// machineFile is one file of a machine snapshot stored as a stream: its
// tree entry, filled in once stored.
type machineFile struct {
	path   string
	params stream.Params
	// base is the stream the file is a new version of (Zero: none).
	base  objects.ID
	disk  bool // in disks/, not at the top
	entry objects.TreeEntry
	// save stores the file, if set; else it is stored with
	// SaveStreamFrom(params, base).
	save func(ctx context.Context, saver *stream.Saver, in *os.File, base objects.ID) (objects.ID, *objects.Stream, error)
}

// treePath is the file's path in the snapshot's tree.
func (f *machineFile) treePath() string {
	if f.disk {
		return snapDisks + "/" + f.entry.Name
	}
	return f.entry.Name
}

// machineFiles lists the files of a machine snapshot that are stored as
// streams: the captured RAM (first) and disks, the kernel and initrd.
func machineFiles(dir string, cfg vmm.Config, c *captured) []*machineFile {
	file := func(name, path string, p stream.Params, disk bool) *machineFile {
		return &machineFile{path: path, params: p, disk: disk, entry: objects.TreeEntry{Name: name, Kind: objects.EntryFile, Mode: 0o644}}
	}
	ram := file(snapRAM, c.ram.copyPath(), RAMParams, false)
	ram.save = func(ctx context.Context, saver *stream.Saver, f *os.File, base objects.ID) (objects.ID, *objects.Stream, error) {
		return saver.SavePages(ctx, f, RAMParams, c.ram.ids, c.ramChanged, base, c.ram.valid)
	}
	files := []*machineFile{ram}
	if cfg.Kernel != "" {
		files = append(files, file(snapKernel, resolvePath(dir, cfg.Kernel), stream.Files, false))
	}
	if cfg.Initrd != "" {
		files = append(files, file(snapInitrd, resolvePath(dir, cfg.Initrd), stream.Files, false))
	}
	for _, d := range cfg.Disks {
		files = append(files, file(filepath.Base(d), filepath.Join(c.diskDir, filepath.Base(d)), DiskParams, true))
	}
	return files
}

// storeFiles stores files, two at a time, and fills in their entries.
func storeFiles(ctx context.Context, saver *stream.Saver, files []*machineFile) error {
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for k, f := range files {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			in, err := os.Open(f.path)
			if err != nil {
				errs[k] = err
				return
			}
			defer in.Close()
			save := f.save
			if save == nil {
				save = func(ctx context.Context, saver *stream.Saver, in *os.File, base objects.ID) (objects.ID, *objects.Stream, error) {
					return saver.SaveStreamFrom(ctx, in, f.params, base)
				}
			}
			id, st, err := save(ctx, saver, in, f.base)
			if err != nil {
				errs[k] = fmt.Errorf("store %s: %w", f.entry.Name, err)
				return
			}
			f.entry.ID, f.entry.Size = id, st.Length
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// storeMachineJSON stores machine.json: the configuration needed to start
// the same virtual hardware again, with paths made relative to the
// snapshot.
func storeMachineJSON(ctx context.Context, saver *stream.Saver, cfg vmm.Config) (objects.TreeEntry, error) {
	mc := cfg
	mc.RAMFile, mc.RAMDir = "", ""
	if mc.Kernel != "" {
		mc.Kernel = snapKernel
	}
	if mc.Initrd != "" {
		mc.Initrd = snapInitrd
	}
	mc.Disks = make([]string, len(cfg.Disks))
	for k, d := range cfg.Disks {
		mc.Disks[k] = snapDisks + "/" + filepath.Base(d)
	}
	mj, _ := json.MarshalIndent(mc, "", "  ")
	id, st, err := saver.SaveStream(ctx, bytes.NewReader(mj), stream.Files)
	if err != nil {
		return objects.TreeEntry{}, err
	}
	return objects.TreeEntry{Name: snapMachine, Kind: objects.EntryFile, Mode: 0o644, Size: st.Length, ID: id}, nil
}
