package vmm

import (
	"context"
	"fmt"
	"path/filepath"
)

// DisplayVNC is the Config.Display of a machine with a screen: a standard
// VGA card whose picture QEMU's VNC server shows on VNCSocket.
const DisplayVNC = "vnc"

// displayArgs returns QEMU's arguments for a VGA card and a VNC server on
// VNCSocket. force-shared lets several viewers watch at once: one asking
// for exclusive access does not disconnect the others.
func displayArgs() []string {
	return []string{
		"-device", "VGA",
		"-vnc", "unix:" + VNCSocket + ",share=force-shared",
	}
}

// Screendump writes the machine's screen to path as a binary PPM image
// (P6). It works on a frozen machine too, which then shows the screen as
// it was saved.
func (m *Machine) Screendump(ctx context.Context, path string) error {
	if m.cfg.Display == "" {
		return fmt.Errorf("screendump of %s: the machine has no display", m.cfg.Name)
	}
	// QEMU runs in the machine directory: give it an absolute name.
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("screendump of %s: %w", m.cfg.Name, err)
	}
	q, err := m.QMP(ctx)
	if err != nil {
		return fmt.Errorf("screendump: %w", err)
	}
	if _, err := q.Execute(ctx, "screendump", map[string]string{"filename": abs}); err != nil {
		return fmt.Errorf("screendump of %s: %w", m.cfg.Name, m.explain(err))
	}
	return nil
}
