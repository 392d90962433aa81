package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort returns a TCP port of 127.0.0.1 that nobody listens on.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestMachineNetAndDisplay boots a machine without a kernel but with a
// network card, forwards and a display: QEMU's side of all of them works
// without a guest.
//
// It is long because one QEMU serves all these checks: each costs a second
// or two to start.
func TestMachineNetAndDisplay(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	fixed := freePort(t)
	cfg := idleConfig()
	cfg.Net = &Net{Mode: NetUser, Forwards: []Forward{{GuestPort: 80}, {HostAddr: "127.0.0.1", HostPort: fixed, GuestPort: 22}}}
	cfg.Display = DisplayVNC
	asked := cfg.Net.clone()
	m := bootTest(t, cfg)

	if !reflect.DeepEqual(cfg.Net, asked) {
		t.Errorf("Boot changed the caller's Net: %+v, was %+v", cfg.Net, asked)
	}
	got := m.Config().Net
	if got == nil || !strings.HasPrefix(got.MAC, "52:54:00:") || len(got.Forwards) != 2 ||
		got.Forwards[0].HostAddr != DefaultForwardAddr || got.Forwards[0].HostPort == 0 || got.Forwards[1].HostPort != fixed {
		t.Fatalf("machine's network: %+v", got)
	}
	m.Config().Net.Forwards[0].HostPort = 1
	if m.Config().Net.Forwards[0].HostPort == 1 {
		t.Error("changing the Config returned by Config changed the machine")
	}
	onDisk, err := readConfig(m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(onDisk.Net, got) || onDisk.Display != DisplayVNC {
		t.Errorf("config.json: net %+v display %q, want %+v", onDisk.Net, onDisk.Display, got)
	}
	for _, f := range got.Forwards {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(f.HostAddr, strconv.Itoa(f.HostPort)), 5*time.Second)
		if err != nil {
			t.Errorf("forward %s: %v", f, err)
			continue
		}
		c.Close()
	}

	// The events monitor sees what commands on the QMP socket do.
	events, err := DialEvents(ctx, m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	sub := events.Subscribe("STOP", "RESUME")
	defer sub.Close()
	if err := m.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Wait(ctx, "STOP"); err != nil {
		t.Fatal(err)
	}
	if err := m.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Wait(ctx, "RESUME"); err != nil {
		t.Fatal(err)
	}
	// One watcher at a time: a second one waits for the first to leave.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = DialEvents(short, m.Dir())
	cancel()
	if err == nil {
		t.Fatal("a second DialEvents succeeded while the first was connected")
	}
	events.Close()
	second, err := DialEvents(ctx, m.Dir())
	if err != nil {
		t.Fatalf("DialEvents after the first watcher left: %v", err)
	}
	second.Close()

	for _, up := range []bool{false, true} {
		if err := m.SetLink(ctx, up); err != nil {
			t.Fatal(err)
		}
	}
	shot := filepath.Join(t.TempDir(), "screen.ppm")
	if err := m.Screendump(ctx, shot); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(b, []byte("P6\n")) {
		t.Fatalf("screendump: %v, starts with %q", err, b[:min(len(b), 16)])
	}

	if err := m.Halt(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{EventsSocket, VNCSocket} {
		if _, err := os.Stat(filepath.Join(m.Dir(), f)); !os.IsNotExist(err) {
			t.Errorf("%s after Halt: %v", f, err)
		}
	}
	for _, f := range got.Forwards {
		if c, err := net.Dial("tcp", net.JoinHostPort(f.HostAddr, strconv.Itoa(f.HostPort))); err == nil {
			c.Close()
			t.Errorf("forward %s still listens after Halt", f)
		}
	}
}

// TestMachineWithoutNetOrDisplay checks the errors of the calls that need
// a network card or a display on a machine that has neither.
func TestMachineWithoutNetOrDisplay(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, time.Minute)
	m := bootTest(t, idleConfig())
	if err := m.SetLink(ctx, false); err == nil || !strings.Contains(err.Error(), "no network card") {
		t.Errorf("SetLink: %v", err)
	}
	if err := m.Screendump(ctx, filepath.Join(t.TempDir(), "s.ppm")); err == nil || !strings.Contains(err.Error(), "no display") {
		t.Errorf("Screendump: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ServeVNC(ctx, m.Dir(), ln); err == nil || !strings.Contains(err.Error(), "has no display") {
		t.Errorf("ServeVNC: %v", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("ServeVNC left its listener open after failing")
	}
}

func TestBootForwardPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	cfg := idleConfig()
	cfg.Net = &Net{Mode: NetUser, Forwards: []Forward{{HostPort: 0, GuestPort: 80}, {HostPort: port, GuestPort: 22}}}
	dir := filepath.Join(t.TempDir(), "m")
	m, err := Boot(testContext(t, time.Minute), dir, cfg)
	if err == nil {
		haltOnCleanup(t, m)
		t.Fatal("Boot with a forward from a busy port succeeded")
	}
	want := "host port 127.0.0.1:" + strconv.Itoa(port) + " is already in use"
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q, want one line containing %q", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		t.Error("failed Boot left config.json")
	}
}

// TestConfigJSONNet writes and reads back a Config with a network and a
// display, with the field names config.json has.
func TestConfigJSONNet(t *testing.T) {
	cfg := Config{Net: &Net{Mode: NetUser, MAC: "52:54:00:00:00:01", Forwards: []Forward{{"127.0.0.1", 8080, 80}}}, Display: DisplayVNC}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `"net":{"mode":"user","mac":"52:54:00:00:00:01","forwards":[{"host_addr":"127.0.0.1","host_port":8080,"guest_port":80}]},"display":"vnc"`
	if !strings.Contains(string(b), want) {
		t.Errorf("JSON %s lacks %s", b, want)
	}
	var back Config
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.Net, cfg.Net) || back.Display != cfg.Display {
		t.Errorf("read back %+v, %v", back, err)
	}
}
