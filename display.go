package sbuml

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/sbuml/sbuml/vmm"
)

// NoVNCDir is where Debian's novnc package puts the noVNC web client;
// ServeVNCWeb serves it beside the websocket when it is there.
const NoVNCDir = "/usr/share/novnc"

// displayDir returns the directory of a machine with a display.
func (s *Scrapbook) displayDir(machine string) (string, error) {
	dir, err := s.existingMachineDir(machine)
	if err != nil {
		return "", err
	}
	cfg, err := vmm.LoadConfig(dir)
	if err != nil {
		return "", err
	}
	if cfg.Display == "" {
		return "", fmt.Errorf("machine %s has no display: boot it with --display vnc (a saved machine keeps its hardware)", machine)
	}
	if vmm.PIDOf(dir) == 0 {
		return "", fmt.Errorf("machine %s is not running", machine)
	}
	return dir, nil
}

// ServeVNC relays the VNC viewers that connect to ln to the screen of a
// machine (SBUML's sbumlvnc) until ctx ends or the machine halts.
func (s *Scrapbook) ServeVNC(ctx context.Context, machine string, ln net.Listener) error {
	dir, err := s.displayDir(machine)
	if err != nil {
		ln.Close()
		return fmt.Errorf("vnc: %w", err)
	}
	return vmm.ServeVNC(ctx, dir, ln)
}

// VNCWebHandler serves a machine's screen to browsers: the websocket at
// /websockify (RFB in binary messages, as noVNC speaks it) and, when
// Debian's novnc package is installed, the noVNC client at /vnc.html.
func (s *Scrapbook) VNCWebHandler(machine string) (http.Handler, error) {
	dir, err := s.displayDir(machine)
	if err != nil {
		return nil, fmt.Errorf("vnc: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/websockify", vmm.VNCWebsocket(dir))
	if fi, err := os.Stat(filepath.Join(NoVNCDir, "vnc.html")); err == nil && fi.Mode().IsRegular() {
		mux.Handle("/", http.FileServer(http.Dir(NoVNCDir)))
	} else if !errors.Is(err, os.ErrNotExist) && err != nil {
		return nil, err
	}
	return mux, nil
}
