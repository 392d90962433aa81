package sbuml

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/stream"
	"github.com/sbuml/sbuml/transport"
	"github.com/sbuml/sbuml/vmm"
)

// CheckoutOptions control Checkout.
type CheckoutOptions struct {
	// Continue starts the guest once its state is loaded (SBUML's -c);
	// otherwise the machine stays frozen.
	Continue bool
	// Accel is kvm, tcg or auto (default): a snapshot restores under
	// either accelerator.
	Accel string
	// Branch is where the new machine's commits go (default: its name).
	Branch string
	// RAMInDir keeps guest RAM in the machine directory instead of tmpfs.
	RAMInDir bool
	// Net, if set, states the network the snapshot's machine must have:
	// "user" or "none". A saved machine keeps its hardware, so this only
	// guards against surprises.
	Net string
	// Forwards replaces the port forwards recorded in the snapshot. When
	// nil, the recorded ones are made again on free host ports, so that a
	// checkout never takes the ports of the machine it came from.
	Forwards []vmm.Forward
	// Progress receives a line per slow step (the accelerator probe).
	Progress io.Writer
	// OnTransfer, if set, is called a few times a second while the
	// objects of a snapshot elsewhere (URL#SNAPSHOT, a link file) download.
	OnTransfer func(transport.Progress)
	// OnProgress, if set, is called about five times a second while the
	// snapshot's RAM, disks and boot files are written, file by file.
	OnProgress func(StoreProgress)
}

// CheckoutResult describes a machine brought back from a snapshot.
type CheckoutResult struct {
	Machine  string     `json:"machine"`
	Dir      string     `json:"dir"`
	Snapshot objects.ID `json:"snapshot"`
	// Child is the machine's number among the machines checked out of
	// a snapshot that a guest's ckpt() took (what ckpt() returns in it),
	// 0 for other snapshots.
	Child   int  `json:"child,omitempty"`
	Running bool `json:"running"`
	// Forwards are the machine's port forwards, with the host ports
	// chosen.
	Forwards []vmm.Forward `json:"forwards"`
	// Spare says a spare QEMU (see StartSpares) was claimed for the
	// machine, rather than one started.
	Spare bool `json:"spare,omitempty"`
	// Fetched says what was downloaded for a snapshot elsewhere.
	Fetched *transport.Stats `json:"fetched,omitempty"`
	// Duration is checkout-to-running: from the call to the guest
	// running (or ready to continue, without Continue).
	Duration time.Duration `json:"duration_ns"`
}

// machineSource is where a checkout reads a machine snapshot from: the
// store, or a directory written by Export.
type machineSource interface {
	// extractInto writes the file at name (a path in the snapshot) into
	// f, which holds no data yet (new, or only holes), leaving holes as
	// holes; f ends up as long as the file.
	extractInto(ctx context.Context, name string, f *os.File) error
	// copyTo writes the file at name to w.
	copyTo(ctx context.Context, name string, w io.Writer) error
	// readFile returns a small file.
	readFile(ctx context.Context, name string) ([]byte, error)
	// size returns the length of the file at name.
	size(ctx context.Context, name string) (int64, error)
}

// storeSource reads a snapshot from the scrapbook.
type storeSource struct {
	s     *Scrapbook
	files map[string]objects.ID // path -> stream
}

func (s *Scrapbook) newStoreSource(ctx context.Context, id objects.ID) (*storeSource, error) {
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return nil, err
	}
	src := &storeSource{s: s, files: map[string]objects.ID{}}
	var walk func(prefix string, tree objects.ID) error
	walk = func(prefix string, tree objects.ID) error {
		t, err := objects.LoadTree(ctx, s.Objects, tree)
		if err != nil {
			return err
		}
		for _, e := range t.Entries {
			switch e.Kind {
			case objects.EntryFile:
				src.files[path.Join(prefix, e.Name)] = e.ID
			case objects.EntryDir:
				if err := walk(path.Join(prefix, e.Name), e.ID); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("", sn.Tree); err != nil {
		return nil, err
	}
	return src, nil
}

func (src *storeSource) stream(name string) (objects.ID, error) {
	id, ok := src.files[name]
	if !ok {
		return objects.Zero, fmt.Errorf("snapshot has no %s", name)
	}
	return id, nil
}

func (src *storeSource) extractInto(ctx context.Context, name string, f *os.File) error {
	id, err := src.stream(name)
	if err != nil {
		return err
	}
	return stream.Extract(ctx, src.s.Objects, id, f)
}

func (src *storeSource) copyTo(ctx context.Context, name string, w io.Writer) error {
	id, err := src.stream(name)
	if err != nil {
		return err
	}
	_, err = stream.Copy(ctx, src.s.Objects, id, w)
	return err
}

func (src *storeSource) size(ctx context.Context, name string) (int64, error) {
	id, err := src.stream(name)
	if err != nil {
		return 0, err
	}
	st, err := objects.LoadStream(ctx, src.s.Objects, id)
	if err != nil {
		return 0, err
	}
	return int64(st.Length), nil
}

func (src *storeSource) readFile(ctx context.Context, name string) ([]byte, error) {
	var b strings.Builder
	if err := src.copyTo(ctx, name, &b); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

// dirSource reads a machine snapshot exported into a directory.
type dirSource struct{ dir string }

func (d dirSource) extractInto(_ context.Context, name string, f *os.File) error {
	return vmm.CloneInto(f, filepath.Join(d.dir, filepath.FromSlash(name)))
}

func (d dirSource) copyTo(_ context.Context, name string, w io.Writer) error {
	f, err := os.Open(filepath.Join(d.dir, filepath.FromSlash(name)))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

func (d dirSource) readFile(_ context.Context, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(name)))
}

func (d dirSource) size(_ context.Context, name string) (int64, error) {
	fi, err := os.Stat(filepath.Join(d.dir, filepath.FromSlash(name)))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// IsLink reports whether arg names a snapshot in another scrapbook: a
// URL ("http://host/book/#SNAPSHOT") or a .sbuml link file.
func IsLink(arg string) bool {
	return strings.Contains(arg, "://") || strings.HasSuffix(arg, LinkExtension)
}

// isExportedMachine reports whether arg is a directory holding an
// exported machine snapshot.
func isExportedMachine(arg string) bool {
	fi, err := os.Stat(filepath.Join(arg, snapMachine))
	return err == nil && fi.Mode().IsRegular() && strings.ContainsRune(arg, '/')
}

// Checkout brings a machine snapshot back as a new machine (SBUML's
// sbumlrestore): RAM and disks are materialized (holes stay holes), QEMU
// starts waiting for its device state, which is fed from the store, and
// with Continue the guest carries on from the instant it was saved.
// Several machines may be checked out from one snapshot and run at once.
//
// rev is a revision (see Resolve), a directory made by Export, or a link to
// a snapshot in another scrapbook (see IsLink), whose missing objects are
// fetched first.
func (s *Scrapbook) Checkout(ctx context.Context, rev, machine string, opts CheckoutOptions) (*CheckoutResult, error) {
	start := time.Now()
	dir, err := s.MachineDir(machine)
	if err != nil {
		return nil, err
	}
	name := machineName(dir)
	if err := checkFreeMachineDir(dir); err != nil {
		return nil, fmt.Errorf("checkout: %w", err)
	}
	release, err := s.lockObjects()
	if err != nil {
		return nil, fmt.Errorf("checkout: %w", err)
	}
	defer release()
	var fetchStats *transport.Stats
	if IsLink(rev) {
		if rev, fetchStats, err = s.fetchMachineLink(ctx, rev, opts); err != nil {
			return nil, fmt.Errorf("checkout: %w", err)
		}
	}
	plan, err := s.planCheckout(ctx, rev)
	if err != nil {
		return nil, fmt.Errorf("checkout %w", err)
	}
	m, running, spare, err := s.restore(ctx, plan, dir, opts)
	if err != nil {
		if m != nil {
			m.Halt(context.Background())
			m.Close()
		}
		removeMachineFiles(dir)
		os.Remove(dir) // only if nothing else is in it
		if werr := s.explainFailure(ctx, plan.id, nil); werr != nil {
			return nil, fmt.Errorf("checkout %w", werr)
		}
		return nil, fmt.Errorf("checkout %s: %w", rev, err)
	}
	defer m.Close()
	s.rememberMachine(dir)
	branch := opts.Branch
	if branch == "" {
		branch = name
	}
	head, err := s.checkoutHead(ctx, plan.id, name, branch)
	if err != nil {
		return nil, fmt.Errorf("checkout %s: %w", rev, err)
	}
	if err := writeHead(dir, head); err != nil {
		return nil, err
	}
	res := &CheckoutResult{Machine: name, Dir: dir, Snapshot: plan.id, Child: head.Child, Running: opts.Continue, Spare: spare,
		Fetched: fetchStats, Duration: running.Sub(start)}
	if n := m.Config().Net; n != nil {
		res.Forwards = n.Forwards
	}
	s.keepMachine(dir, opts.Progress)
	return res, nil
}

// fetchMachineLink fetches a snapshot elsewhere, only the objects this
// scrapbook lacks, and returns its ID as a revision. It looks before it
// downloads: a directory snapshot is no machine.
func (s *Scrapbook) fetchMachineLink(ctx context.Context, link string, opts CheckoutOptions) (string, *transport.Stats, error) {
	isMachine := func(t *objects.Tree) error {
		if t.Find(snapMachine) == nil {
			return fmt.Errorf("not a machine snapshot (it has no %s); 'sbuml fetch' and 'sbuml export' get directory snapshots", snapMachine)
		}
		return nil
	}
	id, st, err := s.fetchLink(ctx, link, TransferOptions{Progress: opts.OnTransfer}, isMachine)
	if err != nil {
		return "", nil, err
	}
	return id.String(), st, nil
}

// checkoutPlan is what a checkout restores, checked before anything is
// made (all but the presence of every object: see planCheckout): where
// the machine snapshot is read from, which snapshot it is (Zero for a
// directory made by Export) and the machine it recorded, whose QEMU
// machine type this host's QEMU has.
type checkoutPlan struct {
	src machineSource
	id  objects.ID
	cfg vmm.Config
}

// planCheckout checks that rev can be restored as a machine here: a
// machine snapshot, or an exported one, that this QEMU can run. Its
// errors start with what rev names. Whether every object of the snapshot
// is in the store is not walked for here: restoring reads them all, and
// only if that fails does explainFailure look for missing ones.
func (s *Scrapbook) planCheckout(ctx context.Context, rev string) (*checkoutPlan, error) {
	p := &checkoutPlan{}
	what := rev
	if isExportedMachine(rev) {
		p.src = dirSource{dir: rev}
	} else {
		id, err := s.Resolve(ctx, rev)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rev, err)
		}
		what = id.Short()
		ss, err := s.newStoreSource(ctx, id)
		if err != nil {
			return nil, s.explainFailure(ctx, id, fmt.Errorf("%s: %w", what, err))
		}
		if _, ok := ss.files[snapMachine]; !ok {
			return nil, fmt.Errorf("%s: not a machine snapshot (it has no %s; use 'sbuml export' for directory snapshots)", what, snapMachine)
		}
		p.src, p.id = ss, id
	}
	raw, err := p.src.readFile(ctx, snapMachine)
	if err == nil {
		err = json.Unmarshal(raw, &p.cfg)
	}
	if err != nil {
		return nil, s.explainFailure(ctx, p.id, fmt.Errorf("%s: %s: %w", what, snapMachine, err))
	}
	qi, err := vmm.InspectQEMU(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !qi.HasMachineType(p.cfg.MachineType) {
		return nil, fmt.Errorf("%s: the snapshot needs QEMU machine type %s, which QEMU %s here does not have (its newest q35 is %s): restore it on a host whose QEMU has %s, such as the version that saved it",
			what, p.cfg.MachineType, qi.Version, qi.Q35(), p.cfg.MachineType)
	}
	return p, nil
}

// checkoutHead returns the head of a machine checked out of snapshot id
// (Zero for an exported directory): if a guest's ckpt() took the
// snapshot, the machine gets the next child number of it, which is its
// answer to that ckpt() request.
func (s *Scrapbook) checkoutHead(ctx context.Context, id objects.ID, machine, branch string) (machineHead, error) {
	head := machineHead{Snapshot: id, Branch: branch}
	if id.IsZero() {
		return head, nil
	}
	sn, err := objects.LoadSnapshot(ctx, s.Objects, id)
	if err != nil {
		return head, err
	}
	req := ckptRequestOf(sn)
	if req == 0 {
		return head, nil
	}
	if head.Child, err = s.claimChild(ctx, id, machine); err != nil {
		return head, err
	}
	return head.withAnswer(req, head.Child), nil
}

// restore carries out a checkout plan, and returns the machine, when
// its guest began to run (or was ready to, without Continue), and
// whether it claimed a spare for it. A spare of the machine's shape, if
// one waits, is claimed and takes the files; otherwise QEMU starts,
// waiting for its device state, as soon as the boot files are written,
// while the disks are still being written into the files it has opened.
// The RAM of a snapshot in the store arrives through postcopy (lazyRAM):
// QEMU loads the device state while the disks are written, the guest
// runs once both are done, and restore returns once every page is in
// place. Otherwise (an exported machine, or RAM
// kept in the machine directory) the RAM is written like the disks,
// into the file QEMU maps (share=on: it sees the writes), and the device
// state is loaded once all is there.
func (s *Scrapbook) restore(ctx context.Context, p *checkoutPlan, dir string, opts CheckoutOptions) (*vmm.Machine, time.Time, bool, error) {
	cfg := p.cfg
	if err := checkoutNet(&cfg, opts); err != nil {
		return nil, time.Time{}, false, err
	}
	cfg.Name = machineName(dir)
	lr := prepareLazyRAM(ctx, p.src, cfg.Memory, opts.RAMInDir)
	lay := layout{ramInDir: opts.RAMInDir, lazyRAM: lr != nil}
	// A spare's directory becomes dir before the files are laid out.
	m, has := s.claimSpare(ctx, p, dir, cfg, opts)
	if m != nil {
		lay.spareRAM, lay.spareHas = m.RAMFile(), has
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, time.Time{}, false, err
	}
	spare := m != nil
	mz, err := newMaterializer(ctx, p.src, dir, &cfg, lay)
	if err != nil {
		return m, time.Time{}, spare, err
	}
	mz.start(ctx)
	defer mz.cancel()
	var pc *vmm.Postcopy
	err = reportWhile(mz.progress, opts.OnProgress, func() error {
		var err error
		if spare {
			err = m.Adopt(ctx, cfg)
		} else {
			m, err = s.startRestored(ctx, mz, dir, cfg, opts)
		}
		if err == nil && lr != nil {
			// The device state loads while the disks fill.
			pc, err = lr.start(ctx, m)
		}
		if err != nil {
			return err
		}
		return mz.wait(anyFile)
	})
	if err != nil {
		mz.abort()
		if pc != nil {
			abortPostcopy(ctx, pc)
		}
		if m == nil {
			mz.removeRAM() // otherwise the machine owns it, and Halt removes it
		}
		return m, time.Time{}, spare, err
	}
	if pc != nil {
		running, err := finishPostcopy(ctx, m, pc, opts.Continue)
		return m, running, spare, err
	}
	running, err := loadState(ctx, p.src, m, opts.Continue)
	return m, running, spare, err
}

// loadState loads the device state of a machine whose RAM is in place
// and, with cont, runs the guest; it returns when.
func loadState(ctx context.Context, src machineSource, m *vmm.Machine, cont bool) (time.Time, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(src.copyTo(ctx, snapDeviceState, pw)) }()
	err := m.LoadDeviceState(ctx, pr)
	pr.Close()
	if err != nil {
		return time.Time{}, err
	}
	if cont {
		if err := m.Continue(ctx); err != nil {
			return time.Time{}, err
		}
	}
	return time.Now(), nil
}

// startRestored chooses the accelerator and starts QEMU, waiting for its
// device state, once the boot files are written; the RAM and disks may
// still be filling. The accelerator probe (once per host) boots the
// machine's own kernel and first disk, and waits for them; a machine that
// boots by BIOS has no kernel, and is probed with the default image.
func (s *Scrapbook) startRestored(ctx context.Context, mz *materializer, dir string, cfg vmm.Config, opts CheckoutOptions) (*vmm.Machine, error) {
	img := &image.Image{}
	if cfg.Kernel != "" {
		img = &image.Image{Kernel: filepath.Join(dir, machineKernel), Cmdline: cfg.Cmdline, ReadyMarker: image.ReadyMarker}
		if cfg.Initrd != "" {
			img.Initrd = filepath.Join(dir, machineInitrd)
		}
		if len(cfg.Disks) > 0 {
			img.Disk = filepath.Join(dir, cfg.Disks[0])
		}
	}
	probe, err := s.probeImage(ctx, opts.Accel, img, opts.Progress)
	if err == nil {
		// A failed file ends mz.ctx, and with it the probe, which
		// then leaves no verdict.
		filesReady := func(context.Context) error { return mz.wait(notRAM) }
		cfg.Accel, err = chooseAccel(mz.ctx, opts.Accel, probe, opts.Progress, filesReady)
	}
	if err != nil {
		if mz.ctx.Err() != nil && ctx.Err() == nil {
			return nil, mz.wait(anyFile)
		}
		return nil, err
	}
	if err := mz.wait(bootOnly); err != nil {
		return nil, err
	}
	cfg.Created = time.Time{}
	cfg.Boot = vmm.BootOptions{Incoming: true}
	return vmm.Boot(ctx, dir, cfg)
}

// checkoutNet sets the port forwards of a machine being checked out: the
// ones asked for, else those recorded in the snapshot on free host ports.
func checkoutNet(cfg *vmm.Config, opts CheckoutOptions) error {
	switch {
	case opts.Net == "none" && cfg.Net != nil:
		return fmt.Errorf("the snapshot's machine has a network card (a saved machine keeps its hardware); check it out without --net none")
	case opts.Net != "" && opts.Net != "none" && cfg.Net == nil:
		return fmt.Errorf("the snapshot's machine has no network card, and a saved machine keeps its hardware: --net %s cannot add one", opts.Net)
	case opts.Forwards != nil && cfg.Net == nil:
		return fmt.Errorf("the snapshot's machine has no network card to forward ports to")
	case cfg.Net == nil:
		return nil
	}
	if opts.Forwards != nil {
		cfg.Net.Forwards = append([]vmm.Forward(nil), opts.Forwards...)
		return nil
	}
	for i := range cfg.Net.Forwards {
		cfg.Net.Forwards[i].HostPort = 0
	}
	return nil
}

// Missing walks snapshot id's content (not its history) and returns the
// objects that are not in the store, each with the kind its referrer
// expects. Chunks are checked for presence without being read.
func (s *Scrapbook) Missing(ctx context.Context, id objects.ID) ([]objects.Ref, error) {
	var missing []objects.Ref
	seen := objects.Seen{}
	root := true
	err := objects.Walk(ctx, s.Objects, objects.Ref{ID: id, Kind: objects.KindSnapshot}, func(r objects.Ref) (bool, error) {
		if r.Kind == objects.KindSnapshot && !root {
			return false, nil
		}
		root = false
		if !seen.Add(r.ID) {
			return false, nil
		}
		ok, err := s.Objects.Has(ctx, r.ID)
		if err != nil {
			return false, err
		}
		if !ok {
			missing = append(missing, r)
		}
		return ok, nil
	})
	return missing, err
}

// explainFailure returns why planning or restoring snapshot id failed:
// the objects of it that are missing, if any (then that is the cause),
// else err. A whole snapshot, the usual case, is thus walked only once,
// as it is restored.
func (s *Scrapbook) explainFailure(ctx context.Context, id objects.ID, err error) error {
	if id.IsZero() {
		return err
	}
	if missing, werr := s.Missing(ctx, id); werr == nil && len(missing) > 0 {
		return incompleteError(id, missing)
	}
	return err
}

// incompleteError says which objects of snapshot id are missing.
func incompleteError(id objects.ID, missing []objects.Ref) error {
	return fmt.Errorf("%s: snapshot is incomplete: %s", id.Short(), describeMissing(missing))
}

func describeMissing(refs []objects.Ref) string {
	var parts []string
	for i, r := range refs {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(refs)-5))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %s", r.Kind, r.ID))
	}
	return fmt.Sprintf("%d object%s missing: %s", len(refs), plural(len(refs)), strings.Join(parts, ", "))
}

// Rewind replaces a machine in place with a snapshot: the machine is
// checked out again from rev under the same name, running if it was
// running, and its old self halted. Its commits continue on its branch,
// with rev as parent.
//
// The old machine is lost only once the new one runs: rev is checked
// first (present, whole, a machine snapshot this QEMU can restore), and
// the old machine is frozen and its directory moved aside while the new
// one is made; if that fails, the old one is put back as it was.
func (s *Scrapbook) Rewind(ctx context.Context, machine, rev string, opts CheckoutOptions) (*CheckoutResult, error) {
	dir, err := s.MachineDir(machine)
	if err != nil {
		return nil, err
	}
	// From the check that rev is whole to its checkout, gc must not run.
	release, err := s.holdObjects()
	if err != nil {
		return nil, fmt.Errorf("rewind: %w", err)
	}
	defer release()
	target, err := s.rewindTarget(ctx, rev)
	if err != nil {
		return nil, fmt.Errorf("rewind %s: %w", machine, err)
	}
	old, err := s.setAside(ctx, machine, dir)
	if err != nil {
		return nil, fmt.Errorf("rewind %s: %w", machine, err)
	}
	if opts.Branch == "" {
		opts.Branch = old.head.Branch
	}
	opts.Continue = opts.Continue || old.running
	res, err := s.Checkout(ctx, target, machine, opts)
	if err != nil {
		if rerr := old.restore(ctx); rerr != nil {
			return nil, fmt.Errorf("rewind %s: %w; and putting the machine back failed: %v (it is in %s)", machine, err, rerr, old.aside)
		}
		return nil, fmt.Errorf("rewind %s: %w (the machine is as it was)", machine, err)
	}
	if err := old.halt(ctx); err != nil {
		return res, fmt.Errorf("rewind %s: the new machine runs, but halting the old one in %s failed: %w", machine, old.aside, err)
	}
	return res, nil
}

// rewindTarget checks that rev can be checked out as a machine, and is
// whole, before the machine is set aside; it returns what to pass to
// Checkout.
func (s *Scrapbook) rewindTarget(ctx context.Context, rev string) (string, error) {
	p, err := s.planCheckout(ctx, rev)
	if err != nil {
		return "", err
	}
	if p.id.IsZero() {
		return rev, nil // a directory made by Export
	}
	missing, err := s.Missing(ctx, p.id)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p.id.Short(), err)
	}
	if len(missing) > 0 {
		return "", incompleteError(p.id, missing)
	}
	return p.id.String(), nil
}

// asideMachine is a machine moved out of its directory's name while a
// rewind makes its successor there.
type asideMachine struct {
	dir, aside string
	head       machineHead
	running    bool // it ran before the rewind froze it
}

// setAside freezes a machine (so that neither its guest nor its keeper
// does anything meanwhile) and moves its directory to a hidden name
// beside it. QEMU and its sockets move with the directory.
func (s *Scrapbook) setAside(ctx context.Context, machine, dir string) (*asideMachine, error) {
	m, err := s.OpenMachine(machine)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	st, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	a := &asideMachine{dir: m.Dir(), running: st.State == vmm.StateRunning}
	if a.head, err = readHead(a.dir); err != nil {
		return nil, err
	}
	if a.running {
		if err := m.Freeze(ctx); err != nil {
			return nil, err
		}
	}
	a.aside = filepath.Join(filepath.Dir(a.dir), fmt.Sprintf(".rewind-%s-%d", filepath.Base(a.dir), os.Getpid()))
	if err := os.Rename(a.dir, a.aside); err != nil {
		if a.running {
			m.Continue(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	return a, nil
}

// restore puts a machine set aside back under its name, running if it ran.
func (a *asideMachine) restore(ctx context.Context) error {
	if err := os.Rename(a.aside, a.dir); err != nil {
		return err
	}
	if !a.running {
		return nil
	}
	m, err := vmm.Open(a.dir)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Continue(context.WithoutCancel(ctx))
}

// halt stops the machine set aside and removes its files; anything else
// its directory held (a directory of the user's choosing may hold more)
// goes back beside the new machine, unless the new one has a file of the
// same name.
func (a *asideMachine) halt(ctx context.Context) error {
	m, err := vmm.Open(a.aside)
	if err != nil {
		return err
	}
	herr := m.Halt(ctx)
	m.Close()
	if herr != nil {
		return herr
	}
	if err := removeMachineFiles(a.aside); err != nil {
		return err
	}
	rest, err := os.ReadDir(a.aside)
	if err != nil {
		return err
	}
	for _, e := range rest {
		to := filepath.Join(a.dir, e.Name())
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			os.Rename(filepath.Join(a.aside, e.Name()), to)
		}
	}
	return os.RemoveAll(a.aside)
}
