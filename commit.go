package sbuml

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	// DiskParams cuts disks like files: content-defined, 64 KiB average
	// (all choices measured within 5% on disks).
	DiskParams = stream.Files
)

// headFile, in a machine directory, records the snapshot the machine
// continues from and the branch its commits go to.
const headFile = "sbuml-head.json"

type machineHead struct {
	Snapshot objects.ID `json:"snapshot"`
	Branch   string     `json:"branch"`
	// Frozen says the machine has not run since Snapshot was saved
	// from it (commit -f): its device state is Snapshot's.
	Frozen bool `json:"frozen,omitempty"`
}

func readHead(dir string) (machineHead, error) {
	var h machineHead
	b, err := os.ReadFile(filepath.Join(dir, headFile))
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &h)
	}
	if err != nil {
		return h, fmt.Errorf("read %s: %w", filepath.Join(dir, headFile), err)
	}
	return h, nil
}

func writeHead(dir string, h machineHead) error {
	b, _ := json.MarshalIndent(h, "", "  ")
	return writeFileAtomic(filepath.Join(dir, headFile), append(b, '\n'))
}

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
	Force      bool
	OnProgress func(stream.Stats)
}

// CommitResult describes a machine snapshot just taken.
type CommitResult struct {
	Result
	// Downtime is how long the guest was frozen for the capture: zero
	// unless it was running before the commit and running after.
	Downtime time.Duration `json:"downtime_ns"`
	// Running says whether the machine runs after the commit (it is
	// left frozen by -f without -c, or if it was frozen before).
	Running bool `json:"running"`
	// DeviceStateBytes is the size of QEMU's device and vCPU state.
	DeviceStateBytes int64 `json:"device_state_bytes"`
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
	dir := m.Dir()
	name := machineName(dir)
	cfg := m.Config()
	head, err := readHead(dir)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	// A machine directory moved by hand is not seen by gc, which may have
	// removed the snapshot it continues from: then it has no parent.
	if !head.Snapshot.IsZero() {
		if ok, err := s.Objects.Has(ctx, head.Snapshot); err != nil {
			return nil, fmt.Errorf("commit %s: %w", name, err)
		} else if !ok {
			head = machineHead{Branch: head.Branch}
		}
	}
	branch := opts.Branch
	if branch == "" {
		branch = head.Branch
	}
	if branch == "" {
		branch = name
	}
	ref, err := s.branchRef(branch)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	tip, err := s.tip(ref)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	if !tip.IsZero() && tip != head.Snapshot && !opts.Force {
		return nil, fmt.Errorf("commit %s: branch %s is at %s, not at this machine's last snapshot %s; use --branch NEW to start a new branch here, or --force to move %s",
			name, branch, tip.Short(), shortOrNone(head.Snapshot), branch)
	}
	st, err := m.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	if st.State != vmm.StateRunning && st.State != vmm.StateFrozen {
		detail := ""
		if st.Detail != "" {
			detail = ": " + st.Detail
		}
		return nil, fmt.Errorf("commit %s: machine is %s, not running%s", name, st.State, detail)
	}
	wasRunning := st.State == vmm.StateRunning
	// A machine left frozen by a commit (-f) has not run since: QEMU will
	// not write its device state again, and it is the one already stored.
	var reuseDev *objects.TreeEntry
	if st.RunState == "postmigrate" {
		if !head.Frozen {
			return nil, fmt.Errorf("commit %s: the machine's device state was saved by a commit that did not finish, and QEMU saves it only once until the guest runs; continue it ('sbuml continue %s') and commit again", name, name)
		}
		if reuseDev, err = s.deviceStateOf(ctx, head.Snapshot); err != nil {
			return nil, fmt.Errorf("commit %s: the machine's device state was saved and it has not run since, but %w; continue it first", name, err)
		}
	}

	saver := stream.NewSaver(s.Objects, 0)
	defer saver.Close()

	// Scratch space for the private copies: RAM on the RAM file's file
	// system (tmpfs), disks beside the machine.
	ramCopyDir, err := os.MkdirTemp(filepath.Dir(filepath.Dir(m.RAMFile())), ".commit-")
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	defer os.RemoveAll(ramCopyDir)
	diskCopyDir, err := os.MkdirTemp(dir, ".commit-")
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	defer os.RemoveAll(diskCopyDir)

	// The capture: everything between Freeze and Continue is downtime.
	var (
		res      = &CommitResult{}
		devID    objects.ID
		devSize  uint64
		devErr   error
		devDone  = make(chan struct{})
		frozenAt time.Time
	)
	pr, pw := io.Pipe()
	go func() {
		defer close(devDone)
		if reuseDev != nil {
			devID, devSize = reuseDev.ID, reuseDev.Size
			return
		}
		id, st, err := saver.SaveStream(ctx, pr, DiskParams)
		pr.CloseWithError(err)
		if err == nil {
			devID, devSize = id, st.Length
		}
		devErr = err
	}()
	// Pre-copy while the guest runs; frozen, only the pages that changed
	// since are copied again (see mirror).
	type copyJob struct{ dst, src string }
	copies := []copyJob{{filepath.Join(ramCopyDir, snapRAM), m.RAMFile()}}
	for _, d := range cfg.Disks {
		copies = append(copies, copyJob{filepath.Join(diskCopyDir, filepath.Base(d)), resolvePath(dir, d)})
	}
	mirrorAll := func() error {
		for _, c := range copies {
			if _, err := mirror(c.dst, c.src); err != nil {
				return err
			}
		}
		return nil
	}
	captureErr := mirrorAll()
	if captureErr == nil {
		captureErr = func() error {
			if wasRunning {
				if err := m.Freeze(ctx); err != nil {
					return err
				}
			}
			frozenAt = time.Now()
			// QEMU writes the device state while the copies catch up:
			// neither touches guest RAM or disks.
			mirrored := make(chan error, 1)
			go func() { mirrored <- mirrorAll() }()
			var err error
			if reuseDev == nil {
				err = m.SaveDeviceState(ctx, pw)
				pw.CloseWithError(err)
			}
			if merr := <-mirrored; err == nil {
				err = merr
			}
			return err
		}()
	}
	if captureErr != nil {
		pw.CloseWithError(captureErr)
	}
	// Continue as soon as the state is safe, even after a failed capture:
	// a commit must not leave a running machine frozen.
	leaveFrozen := opts.Freeze && !opts.Continue
	continued := !frozenAt.IsZero() && (wasRunning && !leaveFrozen || opts.Continue)
	if continued {
		// Also when interrupted: the guest must not stay frozen.
		if err := m.Continue(context.WithoutCancel(ctx)); err != nil && captureErr == nil {
			captureErr = err
		}
	}
	if continued && wasRunning {
		res.Downtime = time.Since(frozenAt)
	}
	res.Running = continued || (wasRunning && frozenAt.IsZero())
	<-devDone
	if captureErr != nil {
		return nil, fmt.Errorf("commit %s: %w", name, captureErr)
	}
	if devErr != nil {
		return nil, fmt.Errorf("commit %s: store device state: %w", name, devErr)
	}
	res.DeviceStateBytes = int64(devSize)

	// After the guest continues: chunk, hash and store the copies.
	tree, size, err := s.storeMachine(ctx, saver, opts.OnProgress, dir, cfg, ramCopyDir, diskCopyDir, devID, devSize)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	labels := map[string]string{"kind": "machine", "machine": name}
	msg := opts.Message
	if msg == "" {
		msg = "commit " + name
	}
	id, err := s.record(ctx, saver, ref, tip, head.Snapshot, tree, SnapshotOptions{Message: msg, Labels: labels})
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", name, err)
	}
	if err := writeHead(dir, machineHead{Snapshot: id, Branch: branch, Frozen: !continued}); err != nil {
		return nil, fmt.Errorf("commit %s: snapshot %s stored, but: %w", name, id.Short(), err)
	}
	res.Result = Result{ID: id, Branch: ref, Parent: head.Snapshot, LogicalBytes: size, Stats: saver.Stats(), Duration: time.Since(start)}
	return res, nil
}

// deviceStateOf returns the device-state entry of machine snapshot id.
func (s *Scrapbook) deviceStateOf(ctx context.Context, id objects.ID) (*objects.TreeEntry, error) {
	if id.IsZero() {
		return nil, errors.New("no snapshot of it is known")
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return nil, err
	}
	t, err := objects.LoadTree(ctx, s.Objects, sn.Tree)
	if err != nil {
		return nil, err
	}
	e := t.Find(snapDeviceState)
	if e == nil {
		return nil, fmt.Errorf("snapshot %s has no %s", id.Short(), snapDeviceState)
	}
	return e, nil
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
// returns the snapshot tree: machine.json, device-state, ram, kernel,
// initrd, disks/.
func (s *Scrapbook) storeMachine(ctx context.Context, saver *stream.Saver, progress func(stream.Stats), dir string, cfg vmm.Config,
	ramCopyDir, diskCopyDir string, devID objects.ID, devSize uint64) (objects.ID, uint64, error) {
	type item struct {
		name   string
		path   string
		params stream.Params
		entry  *objects.TreeEntry
	}
	top := &objects.Tree{}
	disks := &objects.Tree{}
	var items []item
	add := func(t *objects.Tree, name, path string, p stream.Params) {
		t.Entries = append(t.Entries, objects.TreeEntry{Name: name, Kind: objects.EntryFile, Mode: 0o644})
		items = append(items, item{name: name, path: path, params: p})
	}
	add(top, snapRAM, filepath.Join(ramCopyDir, snapRAM), RAMParams)
	if cfg.Kernel != "" {
		add(top, snapKernel, resolvePath(dir, cfg.Kernel), stream.Files)
	}
	if cfg.Initrd != "" {
		add(top, snapInitrd, resolvePath(dir, cfg.Initrd), stream.Files)
	}
	for _, d := range cfg.Disks {
		add(disks, filepath.Base(d), filepath.Join(diskCopyDir, filepath.Base(d)), DiskParams)
	}
	// Bind entries after all appends (the slices no longer move).
	i := 0
	for k := range top.Entries {
		items[i].entry = &top.Entries[k]
		i++
	}
	for k := range disks.Entries {
		items[i].entry = &disks.Entries[k]
		i++
	}

	errs := make([]error, len(items))
	err := withProgress(saver, progress, func() error {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 2)
		for k := range items {
			it := &items[k]
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				f, err := os.Open(it.path)
				if err != nil {
					errs[k] = err
					return
				}
				defer f.Close()
				id, st, err := saver.SaveStream(ctx, f, it.params)
				if err != nil {
					errs[k] = fmt.Errorf("store %s: %w", it.name, err)
					return
				}
				it.entry.ID, it.entry.Size = id, st.Length
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	if err != nil {
		return objects.Zero, 0, err
	}
	// machine.json: the configuration needed to start the same virtual
	// hardware again, with paths made relative to the snapshot.
	mc := cfg
	mc.RAMFile, mc.RAMDir = "", ""
	if mc.Kernel != "" {
		mc.Kernel = snapKernel
	}
	if mc.Initrd != "" {
		mc.Initrd = snapInitrd
	}
	for k, d := range mc.Disks {
		mc.Disks[k] = snapDisks + "/" + filepath.Base(d)
	}
	mj, _ := json.MarshalIndent(mc, "", "  ")
	mjStream, mjSt, err := saver.SaveStream(ctx, bytes.NewReader(mj), stream.Files)
	if err != nil {
		return objects.Zero, 0, err
	}
	top.Entries = append(top.Entries,
		objects.TreeEntry{Name: snapMachine, Kind: objects.EntryFile, Mode: 0o644, Size: mjSt.Length, ID: mjStream},
		objects.TreeEntry{Name: snapDeviceState, Kind: objects.EntryFile, Mode: 0o644, Size: devSize, ID: devID})
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
