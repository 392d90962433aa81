package vmm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// fileSource serves pages from a saved RAM file.
type fileSource struct {
	f    *os.File
	data []extent64
}

type extent64 struct{ start, end uint64 }

func newFileSource(t *testing.T, path string) *fileSource {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	s := &fileSource{f: f}
	for off := int64(0); off < fi.Size(); {
		d, err := f.Seek(off, seekData)
		if errors.Is(err, syscall.ENXIO) {
			break
		}
		h, _ := f.Seek(d, seekHole)
		s.data = append(s.data, extent64{uint64(d), uint64(h)})
		off = h
	}
	return s
}

func (s *fileSource) Data(off uint64) bool {
	for _, e := range s.data {
		if off >= e.start && off < e.end {
			return true
		}
	}
	return false
}

func (s *fileSource) ReadPage(off uint64, buf []byte) (bool, error) {
	if !s.Data(off) {
		return true, nil
	}
	if _, err := s.f.ReadAt(buf, int64(off)); err != nil {
		return false, err
	}
	return bytes.Count(buf, []byte{0}) == len(buf), nil
}

// savedCounter boots a guest running a counter, saves it (device state,
// copies of its RAM and disk) and halts it. It returns the device state,
// the saved RAM file, a config for an incoming copy on an empty RAM file,
// and the last counter value printed before the save.
func savedCounter(t *testing.T, ctx context.Context) (state []byte, saved string, cfg Config, last int) {
	t.Helper()
	src, _ := bootGuest(t)
	if err := src.SendLine(ctx, "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done"); err != nil {
		t.Fatal(err)
	}
	if err := src.WaitConsole(ctx, "tick-5\r"); err != nil {
		t.Fatal(err)
	}
	if err := src.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := src.SaveDeviceState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk")
	if err := CloneFile(disk, resolve(src.Dir(), src.Config().Disks[0])); err != nil {
		t.Fatal(err)
	}
	before := ticks(t, src.ConsoleLog())
	saved = filepath.Join(t.TempDir(), "saved-ram")
	if err := CloneFile(saved, src.RAMFile()); err != nil {
		t.Fatal(err)
	}
	if err := src.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	ram, err := NewRAMFile("", "postcopy")
	if err == nil {
		err = os.WriteFile(ram, nil, 0o644)
	}
	cfg = src.Config()
	if err == nil {
		err = os.Truncate(ram, cfg.Memory)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Name, cfg.RAMFile, cfg.RAMDir, cfg.Disks = "", ram, "", []string{disk}
	cfg.Boot.Incoming = true
	return buf.Bytes(), saved, cfg, before[len(before)-1]
}

// TestPostcopyRestore restores a guest running a counter through
// postcopy, its pages served from a saved RAM file, and checks that the
// counter carries on.
func TestPostcopyRestore(t *testing.T) {
	ctx := testContext(t, 2*time.Minute)
	state, saved, cfg, last := savedCounter(t, ctx)
	dst, err := Boot(ctx, filepath.Join(t.TempDir(), "restored"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	haltOnCleanup(t, dst)
	start := time.Now()
	p, err := dst.LoadPostcopy(ctx, state, newFileSource(t, saved))
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.ContinuePostcopy(ctx); err != nil {
		t.Fatal(err)
	}
	p.Push()
	t.Logf("running after %v", time.Since(start))
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("all pages in place after %v", time.Since(start))
	requireCountsOn(t, ctx, dst, last)
	// The copy saves like any machine (postcopy-ram stays set after the
	// restore, and QEMU refuses it beside x-ignore-shared).
	if err := dst.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dst.SaveDeviceState(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}
}
