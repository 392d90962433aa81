// Package cpio reads and writes cpio archives in the SVR4 "newc" format
// (magic 070701), the format the Linux kernel unpacks as an initramfs.
//
// The API follows archive/tar: a Writer takes a Header followed by the
// entry's contents, and a Reader returns a Header per entry and then reads
// that entry's contents.
package cpio

import (
	"fmt"
	"io/fs"
)

const (
	magic      = "070701"
	headerSize = 110
	// trailerName names the entry that ends every archive.
	trailerName = "TRAILER!!!"
)

// Unix file type bits as stored in the c_mode field.
const (
	typeMask    = 0o170000
	typeSocket  = 0o140000
	typeSymlink = 0o120000
	typeRegular = 0o100000
	typeBlock   = 0o060000
	typeDir     = 0o040000
	typeChar    = 0o020000
	typeFIFO    = 0o010000
	setuid      = 0o4000
	setgid      = 0o2000
	sticky      = 0o1000
)

// Header describes one archive entry.
type Header struct {
	// Name is the entry's path inside the archive, without a leading slash
	// (for example "bin/busybox").
	Name string
	// Mode holds the file type and permission bits. Regular files have no
	// type bit; directories, symlinks, devices, FIFOs and sockets carry
	// fs.ModeDir, fs.ModeSymlink, fs.ModeDevice (plus fs.ModeCharDevice for
	// character devices), fs.ModeNamedPipe and fs.ModeSocket.
	Mode fs.FileMode
	// UID and GID are the numeric owner and group.
	UID, GID int
	// ModTime is the modification time in seconds since the Unix epoch.
	ModTime int64
	// Size is the length of a regular file's contents. For symlinks the
	// Writer sets it from Linkname; for other types it must be zero.
	Size int64
	// Linkname is the target of a symlink.
	Linkname string
	// Devmajor and Devminor identify a device node.
	Devmajor, Devminor int
	// Nlink is the link count. The Writer stores 1 for non-directories and
	// 2 for directories when it is zero.
	Nlink int
}

// unixMode converts an fs.FileMode to the c_mode field.
func unixMode(m fs.FileMode) (uint32, error) {
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= setuid
	}
	if m&fs.ModeSetgid != 0 {
		bits |= setgid
	}
	if m&fs.ModeSticky != 0 {
		bits |= sticky
	}
	switch m.Type() {
	case 0:
		bits |= typeRegular
	case fs.ModeDir:
		bits |= typeDir
	case fs.ModeSymlink:
		bits |= typeSymlink
	case fs.ModeDevice:
		bits |= typeBlock
	case fs.ModeDevice | fs.ModeCharDevice:
		bits |= typeChar
	case fs.ModeNamedPipe:
		bits |= typeFIFO
	case fs.ModeSocket:
		bits |= typeSocket
	default:
		return 0, fmt.Errorf("unsupported file type %v", m.Type())
	}
	return bits, nil
}

// fileMode converts a c_mode field to an fs.FileMode.
func fileMode(bits uint32) (fs.FileMode, error) {
	m := fs.FileMode(bits & 0o777)
	if bits&setuid != 0 {
		m |= fs.ModeSetuid
	}
	if bits&setgid != 0 {
		m |= fs.ModeSetgid
	}
	if bits&sticky != 0 {
		m |= fs.ModeSticky
	}
	switch bits & typeMask {
	case typeRegular:
	case typeDir:
		m |= fs.ModeDir
	case typeSymlink:
		m |= fs.ModeSymlink
	case typeBlock:
		m |= fs.ModeDevice
	case typeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case typeFIFO:
		m |= fs.ModeNamedPipe
	case typeSocket:
		m |= fs.ModeSocket
	default:
		return 0, fmt.Errorf("unknown file type bits %#o", bits&typeMask)
	}
	return m, nil
}

// pad4 returns how many zero bytes follow n bytes to reach a multiple of 4.
func pad4(n int64) int64 {
	return (4 - n%4) % 4
}
