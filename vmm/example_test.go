package vmm_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"

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

// Forwards are written as on the command line; the host address defaults
// to 127.0.0.1, and host port 0 asks for any free port.
func ExampleParseForward() {
	for _, s := range []string{"8080:80", "0.0.0.0:0:22", "[::1]:8443:443"} {
		f, err := vmm.ParseForward(s)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-16s host %s port %d -> guest port %d\n", s, f.HostAddr, f.HostPort, f.GuestPort)
	}
	_, err := vmm.ParseForward("localhost:8080:80")
	fmt.Println(err)
	// Output:
	// 8080:80          host 127.0.0.1 port 8080 -> guest port 80
	// 0.0.0.0:0:22     host 0.0.0.0 port 0 -> guest port 22
	// [::1]:8443:443   host ::1 port 8443 -> guest port 443
	// port forward "localhost:8080:80": host address "localhost" is not an IP address; want [HOSTADDR:]HOSTPORT:GUESTPORT, e.g. 8080:80 or 127.0.0.1:0:22
}

// Boot a machine with a web server's port forwarded and a screen, and
// let VNC viewers on this host watch it.
func ExampleServeVNC() {
	ctx := context.Background()
	m, err := vmm.Boot(ctx, "/var/lib/sbuml/machines/web", vmm.Config{
		Kernel: "/img/kernel", Initrd: "/img/initrd", Cmdline: "console=ttyS0",
		Net:     &vmm.Net{Mode: vmm.NetUser, Forwards: []vmm.Forward{{GuestPort: 80}}},
		Display: vmm.DisplayVNC,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Println("web server on port", m.Config().Net.Forwards[0].HostPort)

	ln, err := net.Listen("tcp", "127.0.0.1:5900")
	if err != nil {
		log.Fatal(err)
	}
	if err := vmm.ServeVNC(ctx, m.Dir(), ln); err != nil {
		log.Fatal(err)
	}
}
