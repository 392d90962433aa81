package vmm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseQ35Types(t *testing.T) {
	help, err := os.ReadFile("testdata/machine-help-7.2.txt")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"qemu 7.2", string(help), nil},
		{"numeric order", "pc-q35-9.2  x\npc-q35-10.0  x\npc-q35-10.0.1 x\nq35  alias of pc-q35-10.0\npc-i440fx-10.1 x\n",
			[]string{"pc-q35-10.0.1", "pc-q35-10.0", "pc-q35-9.2"}},
		{"none", "microvm  x\npc  x\n", []string{}},
	}
	for _, tt := range tests {
		got := parseQ35Types([]byte(tt.in))
		if tt.name == "qemu 7.2" {
			if len(got) < 20 || got[0] != "pc-q35-7.2" || got[1] != "pc-q35-7.1" || !slices.Contains(got, "pc-q35-4.0.1") {
				t.Errorf("%s: %v", tt.name, got)
			}
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseQEMUVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright", "7.2.22"},
		{"QEMU emulator version 10.0.0\n", "10.0.0"},
		{"QEMU emulator version 8.1\n", "8.1"},
		{"something else\n", ""},
	}
	for _, tt := range tests {
		got, err := parseQEMUVersion([]byte(tt.in))
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("parseQEMUVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestQEMUArgs(t *testing.T) {
	cfg := Config{
		Name: "web", Memory: 256 << 20, CPUs: 2, Accel: "kvm", MachineType: "pc-q35-7.2",
		CPUModel: DefaultCPUModel, Kernel: "/img/kernel", Initrd: "/img/initrd",
		Cmdline: "console=ttyS0 quiet", Disks: []string{"root.raw", "/data/scratch.raw"},
		RAMFile: "/dev/shm/sbuml/web-1/ram", Agent: true,
	}
	cfg.Boot.Incoming = true
	args := strings.Join(cfg.qemuArgs(), " ")
	for _, want := range []string{
		"-nodefaults -no-user-config -display none -no-reboot",
		"-machine pc-q35-7.2,memory-backend=ram0",
		"-accel kvm -cpu qemu64,-svm,kvm=off -smp 2 -m 256M",
		"-object memory-backend-file,id=ram0,size=268435456,mem-path=/dev/shm/sbuml/web-1/ram,share=on,prealloc=off",
		"-chardev socket,id=qmp,path=qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control",
		"-chardev socket,id=console,path=console.sock,server=on,wait=off,logfile=console.log,logappend=on -serial chardev:console",
		"-kernel /img/kernel -initrd /img/initrd -append console=ttyS0 quiet",
		"-drive file=root.raw,format=raw,if=none,id=disk0,cache=writeback,file.drop-cache=off,discard=unmap -device virtio-blk-pci,drive=disk0,serial=disk0",
		"-drive file=/data/scratch.raw,format=raw,if=none,id=disk1,cache=writeback,file.drop-cache=off,discard=unmap -device virtio-blk-pci,drive=disk1,serial=disk1",
		"-device virtio-serial-pci,id=vser0 -chardev socket,id=agent,path=agent.sock,server=on,wait=off -device virtserialport,bus=vser0.0,chardev=agent,name=org.sbuml.agent.0",
		"-S -incoming defer",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("command line lacks %q:\n%s", want, args)
		}
	}
	// The -append value is one argument.
	a := cfg.qemuArgs()
	if i := slices.Index(a, "-append"); i < 0 || a[i+1] != "console=ttyS0 quiet" {
		t.Errorf("-append argument: %q", a)
	}
	cfg.Kernel, cfg.Initrd, cfg.Cmdline, cfg.Boot.Incoming, cfg.Agent = "", "", "", false, false
	cfg.Boot.Snapshot = true
	args = strings.Join(cfg.qemuArgs(), " ")
	if strings.Contains(args, "-kernel") || strings.Contains(args, "-incoming") || strings.Contains(args, "virtio-serial") || !strings.Contains(args, "discard=unmap,snapshot=on") {
		t.Errorf("command line without kernel, with snapshot disks:\n%s", args)
	}
}

func TestEscaper(t *testing.T) {
	const esc = EscapeChar
	tests := []struct {
		name   string
		chunks []string
		send   string
		detach bool
	}{
		{"plain", []string{"ls\n"}, "ls\n", false},
		{"detach", []string{"ls\n", string([]byte{esc, 'q'})}, "ls\n", true},
		{"detach with dot", []string{string([]byte{esc, '.'})}, "", true},
		{"split across reads", []string{"a" + string(rune(esc)), "q"}, "a", true},
		{"escape the escape", []string{string([]byte{esc, esc}), "x"}, string([]byte{esc}) + "x", false},
		{"escape then other", []string{string([]byte{esc, 'x'})}, string([]byte{esc, 'x'}), false},
		{"input after detach is dropped", []string{string([]byte{'a', esc, 'q', 'b'})}, "a", true},
	}
	for _, tt := range tests {
		var e escaper
		var send []byte
		detach := false
		for _, c := range tt.chunks {
			s, d := e.filter([]byte(c))
			send = append(send, s...)
			if d {
				detach = true
				break
			}
		}
		if string(send) != tt.send || detach != tt.detach {
			t.Errorf("%s: sent %q detach %v; want %q %v", tt.name, send, detach, tt.send, tt.detach)
		}
	}
}

func TestCloneFileKeepsHoles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	data := bytes.Repeat([]byte("sbuml"), 1000)
	for _, off := range []int64{0, 10 << 20, size - int64(len(data))} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := CloneFile(dst, src); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) || len(b) != size {
		t.Fatal("clone differs from source")
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 4<<20 {
		t.Errorf("clone uses %d bytes for 15 KB of data: holes were filled", used)
	}
	if err := CloneFile(dst, src); err == nil {
		t.Error("CloneFile over an existing file succeeded")
	}
	if err := CloneFile(filepath.Join(dir, "x"), filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("CloneFile of a missing file: %v", err)
	}
}

func TestGuestEnd(t *testing.T) {
	tests := []struct{ console, want string }{
		{"[ 1.0] Kernel panic - not syncing: Attempted to kill init!", "panicked"},
		{"[ 5.2] reboot: Power down", "powered off"},
		{"[ 5.2] reboot: System halted", "powered off"},
		{"[ 5.2] reboot: Restarting system", "rebooted"},
		{"/ # echo tick 41\ntick 41", "QEMU was killed"},
		{"", "QEMU was killed"},
	}
	for _, tt := range tests {
		if got := guestEnd(tt.console); !strings.Contains(got, tt.want) {
			t.Errorf("guestEnd(%q) = %q, want it to say %q", tt.console, got, tt.want)
		}
	}
}

// TestOpenWaitsOutBriefHolds holds a machine's lock the way a forked
// child that has not exec'd yet does after its parent let go, and
// checks that Open waits for it while Inspect only glances.
func TestOpenWaitsOutBriefHolds(t *testing.T) {
	dir := t.TempDir()
	if err := writeConfig(dir, &Config{Name: "m", MachineType: "pc", Memory: 1 << 20, RAMFile: filepath.Join(dir, "ram")}); err != nil {
		t.Fatal(err)
	}
	hold := func() *os.File {
		f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// Released after 600 ms, within lockWait: Open gets the machine.
	f := hold()
	release := time.AfterFunc(600*time.Millisecond, func() { f.Close() })
	defer release.Stop()
	m, err := Open(dir)
	if err != nil {
		t.Fatalf("Open while a brief holder lets go: %v", err)
	}
	m.Close()
	// Held throughout: Inspect says busy without waiting for lockWait,
	// and Open fails with ErrBusy.
	f = hold()
	defer f.Close()
	start := time.Now()
	if info := Inspect(context.Background(), dir); info.Err != nil || info.Status.State != StateHalted {
		t.Errorf("Inspect of a held machine without QEMU: %+v", info)
	}
	if d := time.Since(start); d >= lockWait {
		t.Errorf("Inspect of a held machine took %v, as long as a driver waits", d)
	}
	if _, err := Open(dir); !errors.Is(err, ErrBusy) {
		t.Errorf("Open of a held machine: %v, want ErrBusy", err)
	}
}
