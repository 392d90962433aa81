package vmm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		in      string
		want    Forward
		wantErr string // part of the error; "" for success
	}{
		{"8080:80", Forward{"127.0.0.1", 8080, 80}, ""},
		{"0:22", Forward{"127.0.0.1", 0, 22}, ""},
		{"127.0.0.2:0:22", Forward{"127.0.0.2", 0, 22}, ""},
		{"0.0.0.0:65535:65535", Forward{"0.0.0.0", 65535, 65535}, ""},
		{"[::1]:8080:80", Forward{"::1", 8080, 80}, ""},
		{"[fe80::1]:1:1", Forward{"fe80::1", 1, 1}, ""},
		{"80", Forward{}, "too few parts"},
		{"", Forward{}, "too few parts"},
		{"1.2.3.4:1:2:3", Forward{}, "too many parts"},
		{"[::1]:1:2:3", Forward{}, "too many parts"},
		{"::1:8080:80", Forward{}, "IPv6 host address goes in brackets"},
		{"[::1]8080:80", Forward{}, "must be followed by :HOSTPORT"},
		{"[1.2.3.4]:8080:80", Forward{}, "in brackets is not IPv6"},
		{"localhost:8080:80", Forward{}, `host address "localhost" is not an IP address`},
		{":8080:80", Forward{}, `host address "" is not an IP address`},
		{"[fe80::1%eth0]:1:1", Forward{}, "is not an IP address"},
		{"65536:80", Forward{}, "host port 65536 is out of range 0-65535"},
		{"8080:0", Forward{}, "guest port 0 is out of range 1-65535"},
		{"8080:65536", Forward{}, "guest port 65536 is out of range"},
		{"-1:80", Forward{}, `host port: "-1" is not a number`},
		{"+80:80", Forward{}, `host port: "+80" is not a number`},
		{"http:80", Forward{}, `host port: "http" is not a number`},
		{"8080:", Forward{}, `guest port: "" is not a number`},
	}
	for _, tt := range tests {
		got, err := ParseForward(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseForward(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if back, err := ParseForward(got.String()); err != nil || back != got {
				t.Errorf("ParseForward(%q.String() = %q) = %+v, %v", tt.in, got.String(), back, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) ||
			!strings.Contains(err.Error(), "want [HOSTADDR:]HOSTPORT:GUESTPORT") || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseForward(%q) = %+v, %v; want one line saying %q", tt.in, got, err, tt.wantErr)
		}
	}
}

func TestNetValidate(t *testing.T) {
	tests := []struct {
		name    string
		net     Net
		wantErr string
	}{
		{"ok", Net{Mode: "user", MAC: "52:54:00:ab:CD:ef", Forwards: []Forward{{"::1", 0, 80}}}, ""},
		{"mode", Net{Mode: "tap", MAC: "52:54:00:00:00:01"}, `network mode "tap": want "user"`},
		{"no mode", Net{MAC: "52:54:00:00:00:01"}, `network mode ""`},
		{"multicast MAC", Net{Mode: "user", MAC: "01:00:5e:00:00:01"}, "not a multicast one"},
		{"short MAC", Net{Mode: "user", MAC: "52:54:00:00:01"}, "MAC address"},
		{"dashed MAC", Net{Mode: "user", MAC: "52-54-00-00-00-01"}, "MAC address"},
		{"forward", Net{Mode: "user", MAC: "52:54:00:00:00:01", Forwards: []Forward{{"127.0.0.1", 1, 0}}}, "port forward 127.0.0.1:1:0: guest port 0"},
	}
	for _, tt := range tests {
		err := tt.net.validate()
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: validate = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestNetDefaults(t *testing.T) {
	seen := make(map[string]bool)
	for range 20 {
		n := &Net{Mode: NetUser, Forwards: []Forward{{HostPort: 1, GuestPort: 2}}}
		n.setDefaults()
		if err := n.validate(); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(n.MAC, "52:54:00:") || n.Forwards[0].HostAddr != DefaultForwardAddr {
			t.Fatalf("defaults: %+v", n)
		}
		seen[n.MAC] = true
	}
	if len(seen) < 15 {
		t.Errorf("20 made-up MAC addresses hold only %d different ones", len(seen))
	}
	n := &Net{Mode: NetUser, MAC: "52:54:00:00:00:01"}
	n.setDefaults()
	if n.MAC != "52:54:00:00:00:01" {
		t.Errorf("setDefaults replaced the MAC: %s", n.MAC)
	}
}

func TestQEMUArgsNetDisplay(t *testing.T) {
	cfg := Config{
		Name: "web", MachineType: "pc-q35-7.2", Memory: 64 << 20, RAMFile: "ram", Disks: []string{"root.raw"},
		Net: &Net{Mode: NetUser, MAC: "52:54:00:12:34:56", Forwards: []Forward{
			{"127.0.0.1", 8080, 80}, {"0.0.0.0", 0, 22}, {"::1", 0, 80},
		}},
		Display: DisplayVNC,
	}
	args := strings.Join(cfg.qemuArgs(), " ")
	want := "-device virtio-blk-pci,drive=disk0,serial=disk0" +
		" -netdev user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:0.0.0.0:0-:22,hostfwd=tcp:[::1]:0-:80" +
		" -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile=" +
		" -device VGA -vnc unix:vnc.sock,share=force-shared"
	if !strings.Contains(args, want) {
		t.Errorf("command line lacks\n%s\n%s", want, args)
	}
	if !strings.Contains(args, "-chardev socket,id=events,path=events.sock,server=on,wait=off -mon chardev=events,mode=control") {
		t.Errorf("command line lacks the events monitor:\n%s", args)
	}

	cfg.Net, cfg.Display = nil, ""
	args = strings.Join(cfg.qemuArgs(), " ")
	for _, no := range []string{"-netdev", "virtio-net", "VGA", "-vnc"} {
		if strings.Contains(args, no) {
			t.Errorf("machine without network and display: command line has %s:\n%s", no, args)
		}
	}
}

// TestConfigWithoutNet reads a config.json written before machines had a
// network card or a display: it describes the same hardware as before.
func TestConfigWithoutNet(t *testing.T) {
	dir := t.TempDir()
	old := `{"name":"old","memory":67108864,"cpus":1,"accel":"tcg","qemu_version":"7.2.22",` +
		`"machine_type":"pc-q35-7.2","cpu_model":"qemu64,-svm,kvm=off","ram_file":"ram","created":"2026-11-22T04:30:00Z"}`
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := readConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Net != nil || cfg.Display != "" {
		t.Errorf("old config read as net %+v, display %q", cfg.Net, cfg.Display)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "net") || strings.Contains(string(b), "display") {
		t.Errorf("old config written back with new fields: %s", b)
	}
}

func TestParseUsernet(t *testing.T) {
	out := "Hub -1 (net0):\r\n" +
		"  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
		"  TCP[HOST_FORWARD]  11       127.0.0.1 43173       10.0.2.15    80     0     0\r\n" +
		"  TCP[HOST_FORWARD]   9       127.0.0.1 41685       10.0.2.15    22     0     0\r\n" +
		"  TCP[ESTABLISHED]   14       10.0.2.15 35010        10.0.2.2  8000     0     0\r\n" +
		"  UDP[236 sec]       15       10.0.2.15 68        10.0.2.2    67     0     0\r\n" +
		"  TCP[HOST_FORWARD]   8               * 46169       10.0.2.15    80     0     0\r\n"
	got := parseUsernet(out)
	want := []hostForward{{"127.0.0.1", 43173, 80}, {"127.0.0.1", 41685, 22}, {"*", 46169, 80}}
	if len(got) != len(want) {
		t.Fatalf("parseUsernet = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("parseUsernet[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestAssignPorts(t *testing.T) {
	listening := []hostForward{
		{"127.0.0.1", 43173, 80}, {"127.0.0.1", 8080, 80}, {"*", 46169, 80}, {"127.0.0.1", 41685, 22},
	}
	n := &Net{Forwards: []Forward{
		{"127.0.0.1", 0, 80}, {"0.0.0.0", 0, 80}, {"127.0.0.1", 0, 22}, {"127.0.0.1", 8080, 80},
	}}
	if err := n.assignPorts(listening); err != nil {
		t.Fatal(err)
	}
	want := []int{43173, 46169, 41685, 8080}
	for i, f := range n.Forwards {
		if f.HostPort != want[i] {
			t.Errorf("forward %d: host port %d, want %d (%+v)", i, f.HostPort, want[i], n.Forwards)
		}
	}

	n = &Net{Forwards: []Forward{{"127.0.0.1", 0, 80}, {"127.0.0.1", 0, 80}, {"127.0.0.1", 0, 80}}}
	err := n.assignPorts(listening)
	if err == nil || !strings.Contains(err.Error(), "port forward 127.0.0.1:0:80: qemu's user network does not listen for it") {
		t.Errorf("three forwards for two sockets: %v", err)
	}
}
