package vmm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// migrationFD is the name under which the migration pipe is registered
// with QEMU (getfd), referred to as "fd:sbuml-migration".
const migrationFD = "sbuml-migration"

// DefaultMigrationTimeout bounds SaveDeviceState and LoadDeviceState when
// ctx has no deadline.
const DefaultMigrationTimeout = 2 * DefaultQMPTimeout

// SaveDeviceState writes the frozen machine's vCPU and device state to w,
// in QEMU's migration stream format. Guest RAM is not in the stream: it is
// in the RAM file (x-ignore-shared), which together with the disks makes
// up the rest of the saved machine. The machine stays frozen and can be
// continued or saved again.
func (m *Machine) SaveDeviceState(ctx context.Context, w io.Writer) error {
	if err := m.saveDeviceState(ctx, w); err != nil {
		return fmt.Errorf("save device state of %s: %w", m.cfg.Name, err)
	}
	return nil
}

func (m *Machine) saveDeviceState(ctx context.Context, w io.Writer) error {
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
	switch rs {
	case "paused":
	case "postmigrate":
		// QEMU refuses to migrate again before the guest has run.
		return errors.New("device state already saved since the machine was frozen: continue it before saving again")
	case "running":
		return errors.New("machine is running: freeze it first")
	default:
		return fmt.Errorf("machine is in qemu run state %q, not frozen", rs)
	}
	if err := setMigrationCapabilities(ctx, q); err != nil {
		return err
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	err = q.SendFile(ctx, migrationFD, pw)
	pw.Close() // QEMU holds its own copy; its closing is our EOF
	if err != nil {
		return err
	}

	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(w, pr)
		if err != nil {
			pr.Close() // QEMU's writes now fail, and the migration with them
		}
		copied <- err
	}()

	events := q.Subscribe("MIGRATION")
	defer events.Close()
	if _, err := q.Execute(ctx, "migrate", map[string]any{"uri": "fd:" + migrationFD}); err != nil {
		q.Execute(context.Background(), "closefd", map[string]string{"fdname": migrationFD})
		pr.Close()
		<-copied
		return err
	}
	merr := m.waitMigration(ctx, q, events)
	if merr != nil && ctx.Err() != nil {
		q.Execute(context.Background(), "migrate_cancel", nil)
		pr.Close()
	}
	cerr := <-copied
	if cerr != nil {
		return fmt.Errorf("write stream: %w", cerr)
	}
	return merr
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
