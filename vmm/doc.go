// Package vmm drives qemu-system-x86_64: it boots Linux machines in machine
// directories, talks to QEMU over QMP, freezes and continues guests, saves
// and loads their vCPU and device state, and halts them. Machines may have
// a user-mode network card with TCP port forwards, and a VGA screen that
// VNC viewers reach through ServeVNC or a websocket (VNCWebsocket).
//
// A machine directory is a plain directory holding config.json, QEMU's
// sockets (qmp.sock, console.sock, events.sock and, with a display,
// vnc.sock), logs (console.log, qemu.log), qemu.pid and a lock file;
// guest RAM is a file, on tmpfs by default. QEMU runs in a session of its
// own and outlives the process that booted it; Open takes a machine over
// later, from any process. See docs/vmm.md for the layout,
// the QEMU command line and the save/restore protocol.
package vmm
