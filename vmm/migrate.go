package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// migrationFD is the name under which the migration pipe is registered
// with QEMU (getfd), referred to as "fd:sbuml-migration".
const migrationFD = "sbuml-migration"

// DefaultMigrationTimeout bounds SaveDeviceState, LoadDeviceState,
// PrepareDeviceStateSave and DeviceStateSave.Save when ctx has no
// deadline.
const DefaultMigrationTimeout = 2 * DefaultQMPTimeout

// SaveDeviceState writes the frozen machine's vCPU and device state to w,
// in QEMU's migration stream format. Guest RAM is not in the stream: it is
// in the RAM file (x-ignore-shared), which together with the disks makes
// up the rest of the saved machine. The machine stays frozen and can be
// continued (QEMU saves it again only after it has run). A caller that
// freezes the machine itself keeps the freeze shorter with
// PrepareDeviceStateSave.
func (m *Machine) SaveDeviceState(ctx context.Context, w io.Writer) error {
	s, err := m.PrepareDeviceStateSave(ctx)
	if err != nil {
		return err
	}
	err = s.Save(ctx, w)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// DeviceStateSave is a save of a machine's device state made ready
// before the guest is frozen, so that the frozen guest waits only for
// QEMU writing its state. PrepareDeviceStateSave does what needs no
// frozen guest: it checks the machine's run state, sets the migration
// capabilities and hands QEMU the pipe it will write into. Save follows
// a Freeze; Close, which must always be called, writes the state out.
type DeviceStateSave struct {
	m  *Machine
	q  *QMP
	pr *os.File // the pipe's read end; QEMU holds the write end (migrationFD)
	// runs and migration receive QEMU's STOP and RESUME, and MIGRATION,
	// events since the preparation.
	runs, migration *Subscription
	running         bool            // the guest ran at the last STOP or RESUME seen
	w               io.Writer       // Save's writer
	read            chan streamRead // the stream read whole, once Save started
	saved           bool            // QEMU completed the save
}

// streamRead is the stream read from the pipe until QEMU closed it.
type streamRead struct {
	b   []byte
	err error
}

// pipeSize is the capacity asked for the pipe QEMU writes the device
// state into (Linux's default limit for F_SETPIPE_SZ): a state that fits
// is written without waiting for the reader, even when it is slow to be
// scheduled on a busy host.
const pipeSize = 1 << 20

// PrepareDeviceStateSave readies a save of the machine's device state
// while the guest may still run (see DeviceStateSave). The machine must
// be running or frozen, and not saved since it was frozen.
func (m *Machine) PrepareDeviceStateSave(ctx context.Context) (*DeviceStateSave, error) {
	s, err := m.prepareDeviceStateSave(ctx)
	if err != nil {
		return nil, fmt.Errorf("save device state of %s: %w", m.cfg.Name, err)
	}
	return s, nil
}

func (m *Machine) prepareDeviceStateSave(ctx context.Context) (*DeviceStateSave, error) {
	ctx, cancel := withDefaultTimeout(ctx, DefaultMigrationTimeout)
	defer cancel()
	q, err := m.QMP(ctx)
	if err != nil {
		return nil, err
	}
	// Subscribed before the run state is asked, so that no freeze or
	// continue after the answer goes unseen.
	s := &DeviceStateSave{m: m, q: q, runs: q.Subscribe("STOP", "RESUME"), migration: q.Subscribe("MIGRATION")}
	err = s.checkRunState(ctx)
	if err == nil {
		err = setMigrationCapabilities(ctx, q)
	}
	if err == nil {
		err = s.openPipe(ctx)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// checkRunState refuses a machine QEMU cannot save, and notes whether
// the guest runs.
func (s *DeviceStateSave) checkRunState(ctx context.Context) error {
	rs, err := runState(ctx, s.q)
	if err != nil {
		return err
	}
	switch rs {
	case "running":
		s.running = true
	case "paused":
	case "postmigrate":
		// QEMU refuses to migrate again before the guest has run.
		return errors.New("device state already saved since the machine was frozen: continue it before saving again")
	default:
		return fmt.Errorf("machine is in qemu run state %q, not frozen", rs)
	}
	return nil
}

// openPipe makes the pipe QEMU writes the stream into and passes its
// write end to QEMU.
func (s *DeviceStateSave) openPipe(ctx context.Context) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	// Best effort: a smaller pipe only makes QEMU wait for the reader.
	if rc, err := pw.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
	err = s.q.SendFile(ctx, migrationFD, pw)
	pw.Close() // QEMU holds its own copy; its closing is our EOF
	if err != nil {
		pr.Close()
		return err
	}
	s.pr = pr
	return nil
}

// Save has QEMU write the frozen machine's vCPU and device state, in
// QEMU's migration stream format (as SaveDeviceState), and returns once
// QEMU has written all of it: the guest may be continued from then on.
// The stream is read into memory as QEMU writes it, so QEMU never waits
// for w, and goes into w only in Close: called after the guest runs
// again, whatever w does with it (the store chunks, hashes and
// compresses it) takes no CPU from the frozen guest. Save may be called
// once.
func (s *DeviceStateSave) Save(ctx context.Context, w io.Writer) error {
	if err := s.save(ctx, w); err != nil {
		return fmt.Errorf("save device state of %s: %w", s.m.cfg.Name, err)
	}
	return nil
}

func (s *DeviceStateSave) save(ctx context.Context, w io.Writer) error {
	if s.read != nil {
		return errors.New("saved already: prepare another save")
	}
	if err := s.checkFrozen(); err != nil {
		return err
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultMigrationTimeout)
	defer cancel()
	s.w, s.read = w, make(chan streamRead, 1)
	go func() {
		b, err := io.ReadAll(s.pr)
		s.read <- streamRead{b, err}
	}()
	if _, err := s.q.Execute(ctx, "migrate", map[string]any{"uri": "fd:" + migrationFD}); err != nil {
		s.q.Execute(context.Background(), "closefd", map[string]string{"fdname": migrationFD})
		s.pr.Close()
		return err
	}
	if err := s.m.waitMigration(ctx, s.q, s.migration); err != nil {
		if ctx.Err() != nil {
			s.q.Execute(context.Background(), "migrate_cancel", nil)
		}
		s.pr.Close()
		return err
	}
	s.saved = true
	return nil
}

// checkFrozen refuses to save a guest that runs: the last STOP or
// RESUME event seen since the preparation says whether it does (QEMU
// sends them before its reply to stop or cont).
func (s *DeviceStateSave) checkFrozen() error {
	for {
		ev, ok := s.runs.poll()
		if !ok {
			break
		}
		s.running = ev.Name == "RESUME"
	}
	if s.running {
		return errors.New("machine is running: freeze it first")
	}
	return nil
}

// Close writes the stream of a successful Save into its writer, once
// QEMU has closed its end of the pipe (as it cleans up the migration),
// and releases what the preparation holds. It returns the error of
// writing the stream, if any. For a save never made, it takes the pipe
// back from QEMU. Closing again does nothing.
func (s *DeviceStateSave) Close() error {
	s.runs.Close()
	s.migration.Close()
	pr := s.pr
	if pr == nil {
		return nil
	}
	s.pr = nil
	if s.read == nil {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultQMPTimeout)
		defer cancel()
		s.q.Execute(ctx, "closefd", map[string]string{"fdname": migrationFD})
		pr.Close()
		return nil
	}
	r := <-s.read
	pr.Close()
	if !s.saved {
		return nil
	}
	if r.err != nil {
		return fmt.Errorf("save device state of %s: read stream: %w", s.m.cfg.Name, r.err)
	}
	if _, err := s.w.Write(r.b); err != nil {
		return fmt.Errorf("save device state of %s: write stream: %w", s.m.cfg.Name, err)
	}
	return nil
}

// LoadDeviceState feeds a stream written by SaveDeviceState to a machine
// booted with Boot.Incoming, whose RAM file holds the RAM saved with it.
// The machine is frozen afterwards; Continue resumes the guest where it
// stopped. If QEMU rejects the stream it exits, and the error says why.
func (m *Machine) LoadDeviceState(ctx context.Context, r io.Reader) error {
	if err := m.loadDeviceState(ctx, r); err != nil {
		return fmt.Errorf("load device state of %s: %w", m.cfg.Name, err)
	}
	return nil
}

func (m *Machine) loadDeviceState(ctx context.Context, r io.Reader) error {
	ctx, cancel := withDefaultTimeout(ctx, DefaultMigrationTimeout)
	defer cancel()
	q, err := m.QMP(ctx)
	if err != nil {
		return err
	}
	rs, err := runState(ctx, q)
	if err != nil {
		return err
	}
	if rs != "inmigrate" {
		return fmt.Errorf("machine is in qemu run state %q: boot it with Boot.Incoming to load device state", rs)
	}
	if err := setMigrationCapabilities(ctx, q); err != nil {
		return err
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pw.Close()
	err = q.SendFile(ctx, migrationFD, pr)
	pr.Close()
	if err != nil {
		return err
	}

	events := q.Subscribe("MIGRATION")
	defer events.Close()
	if _, err := q.Execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:" + migrationFD}); err != nil {
		return err
	}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(pw, r)
		pw.Close() // end of stream, or a truncated one on error
		copied <- err
	}()
	merr := m.waitMigration(ctx, q, events)
	if merr != nil {
		pw.Close() // unblock the copy if QEMU stopped reading
	}
	cerr := <-copied
	if cerr != nil && merr != nil {
		return fmt.Errorf("read stream: %w (qemu: %v)", cerr, merr)
	}
	if cerr != nil {
		return fmt.Errorf("read stream: %w", cerr)
	}
	return merr
}

func setMigrationCapabilities(ctx context.Context, q *QMP) error {
	caps := []map[string]any{
		// RAM is in a shared file that the other side maps itself.
		{"capability": "x-ignore-shared", "state": true},
		// MIGRATION events tell us when the stream is complete.
		{"capability": "events", "state": true},
		// A machine restored through postcopy (LoadPostcopy) still has
		// it, which QEMU refuses beside x-ignore-shared.
		{"capability": "postcopy-ram", "state": false},
	}
	if _, err := q.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}); err != nil {
		return err
	}
	// The default limit (32 MiB/s) would throttle large device states.
	_, err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(1) << 40})
	return err
}

// waitMigration waits for the migration to complete or fail, on either
// side. A QEMU that exits meanwhile (as a destination does when loading
// fails) is reported with the tail of its log.
func (m *Machine) waitMigration(ctx context.Context, q *QMP, events *Subscription) error {
	for {
		ev, err := events.Next(ctx)
		if err != nil {
			if errors.Is(err, ErrQMPClosed) {
				return m.exitedDuringMigration()
			}
			return fmt.Errorf("migration: %w", err)
		}
		var data struct {
			Status string `json:"status"`
		}
		json.Unmarshal(ev.Data, &data)
		switch data.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return m.migrationFailure(ctx, q, data.Status)
		}
	}
}

// migrationFailure asks QEMU why the migration failed. A destination
// QEMU exits right after a failed load; then its log says why.
func (m *Machine) migrationFailure(ctx context.Context, q *QMP, status string) error {
	raw, err := q.Execute(ctx, "query-migrate", nil)
	if errors.Is(err, ErrQMPClosed) {
		return m.exitedDuringMigration()
	}
	if err != nil {
		return fmt.Errorf("migration %s, and no detail: %w", status, err)
	}
	var info struct {
		ErrorDesc string `json:"error-desc"`
	}
	json.Unmarshal(raw, &info)
	if info.ErrorDesc == "" {
		info.ErrorDesc = "no detail from qemu"
	}
	return fmt.Errorf("migration %s: %s", status, info.ErrorDesc)
}

func (m *Machine) exitedDuringMigration() error {
	pid, _, _ := readPID(m.dir)
	m.waitExit(pid, DefaultQMPTimeout)
	return fmt.Errorf("qemu exited during migration: %s", m.crashDetail(pid))
}
