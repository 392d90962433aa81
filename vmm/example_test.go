package vmm_test

import (
	"bytes"
	"context"
	"log"

	"github.com/sbuml/sbuml/vmm"
)

// Save a running machine and bring it back in another directory: freeze,
// save the device state, copy the RAM file (and the disks), then boot the
// copy with Incoming, load the state and continue.
func ExampleMachine_SaveDeviceState() {
	ctx := context.Background()
	m, err := vmm.Open("/var/lib/sbuml/machines/web")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	if err := m.Freeze(ctx); err != nil {
		log.Fatal(err)
	}
	var state bytes.Buffer
	if err := m.SaveDeviceState(ctx, &state); err != nil {
		log.Fatal(err)
	}
	ram, err := vmm.NewRAMFile("", "web-copy")
	if err != nil {
		log.Fatal(err)
	}
	if err := vmm.CloneFile(ram, m.RAMFile()); err != nil {
		log.Fatal(err)
	}
	if err := m.Continue(ctx); err != nil { // the original goes on
		log.Fatal(err)
	}

	cfg := m.Config() // same hardware; disks would be copied likewise
	cfg.Name, cfg.RAMFile = "web-copy", ram
	cfg.Boot.Incoming = true
	c, err := vmm.Boot(ctx, "/var/lib/sbuml/machines/web-copy", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.LoadDeviceState(ctx, &state); err != nil {
		log.Fatal(err)
	}
	if err := c.Continue(ctx); err != nil {
		log.Fatal(err)
	}
}

// Pick the accelerator once per host: KVM only if a real guest boots
// under it, remembered across runs.
func ExampleChooseAccel() {
	ctx := context.Background()
	cfg := vmm.Config{Kernel: "/img/kernel", Initrd: "/img/initrd", Cmdline: "console=ttyS0"}
	accel, err := vmm.ChooseAccel(ctx, "auto", "/root/.cache/sbuml/accel.json",
		vmm.BootProbe(cfg, "SBUML-READY"))
	if err != nil {
		log.Fatal(err)
	}
	cfg.Accel = accel
	m, err := vmm.Boot(ctx, "/var/lib/sbuml/machines/web", cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
}
