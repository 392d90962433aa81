package vmm

// Restoring through QEMU's postcopy migration, sbuml acting as the
// source: the guest runs as soon as its device state is loaded, and its
// RAM arrives afterwards, the pages it touches first (see design.md,
// "Checkout"). The stream is the one SaveDeviceState writes (with
// x-ignore-shared), rewritten: no capabilities subsection, no block
// addresses, postcopy commands around it, and ram0's pages sent on demand
// and in the background.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Migration stream constants of QEMU 7.2 (migration/savevm.c, ram.c).
const (
	pcMagic   = 0x5145564d // "QEVM"
	pcVersion = 3

	pcSecStart   = 0x01
	pcSecPart    = 0x02
	pcSecEnd     = 0x03
	pcSecSub     = 0x05
	pcSecVMDesc  = 0x06
	pcSecConfig  = 0x07
	pcSecCommand = 0x08
	pcSecFooter  = 0x7e

	pcCmdOpenReturnPath = 1
	pcCmdAdvise         = 3
	pcCmdListen         = 4
	pcCmdRun            = 5
	pcCmdDiscard        = 6
	pcCmdPackaged       = 7

	pcRAMZero     = 0x02
	pcRAMMemSize  = 0x04
	pcRAMPage     = 0x08
	pcRAMEOS      = 0x10
	pcRAMContinue = 0x20
	pcRAMFlags    = 0xfff

	pcRPShut        = 1
	pcRPPong        = 2
	pcRPReqPagesID  = 3
	pcRPReqPages    = 4
	pcPage          = 4096
	pcMainBlock     = "ram0"
	pcPagesPerBatch = 32
)

// PageSize is the size of the guest RAM pages LoadPostcopy sends.
const PageSize = pcPage

// PageSource gives the pages of guest RAM a postcopy restore sends.
type PageSource interface {
	// ReadPage fills buf (4096 bytes) with the page at off and reports
	// whether it is all zeros (then buf need not be filled).
	ReadPage(off uint64, buf []byte) (zero bool, err error)
	// Data reports whether the page at off may hold data: pages that
	// cannot (holes) are sent only when the guest asks for them.
	Data(off uint64) bool
}

// savedStream is a device-state stream written by SaveDeviceState (with
// x-ignore-shared), taken apart.
type savedStream struct {
	config     []byte // configuration section, rewritten without x-ignore-shared
	ramSection uint32
	ramHeader  []byte // the start section header: id, "ram", instance, version
	blocks     []byte // the block list without addresses, after MEM_SIZE
	total      uint64
	mainSize   uint64
	pages      []byte // the other blocks' page records, without EOS
	devices    []byte // the device sections, up to QEMU_VM_EOF
	footers    bool
}

// parseSaved takes a saved device-state stream apart.
func parseSaved(b []byte) (*savedStream, error) {
	s := &savedStream{}
	r := bytes.NewReader(b)
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil || binary.BigEndian.Uint32(h[:4]) != pcMagic || binary.BigEndian.Uint32(h[4:]) != pcVersion {
		return nil, fmt.Errorf("not a QEMU 7.2 migration stream")
	}
	var cfg bytes.Buffer
	if t, _ := r.ReadByte(); t != pcSecConfig {
		return nil, fmt.Errorf("no configuration section")
	}
	cfg.WriteByte(pcSecConfig)
	var l [4]byte
	io.ReadFull(r, l[:])
	n := binary.BigEndian.Uint32(l[:])
	if n > 256 {
		return nil, fmt.Errorf("a machine type name of %d bytes", n)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(r, name); err != nil {
		return nil, fmt.Errorf("configuration section: %w", err)
	}
	cfg.Write(l[:])
	cfg.Write(name)
	for {
		t, _ := r.ReadByte()
		if t != pcSecSub {
			r.UnreadByte()
			break
		}
		sub := readStr(r)
		var size int
		switch sub {
		case "configuration/target-page-bits":
			size = 8
		case "configuration/uuid":
			size = 20
		case "configuration/capabilities":
			var v [8]byte // version, count
			io.ReadFull(r, v[:])
			for n := binary.BigEndian.Uint32(v[4:]); n > 0; n-- {
				readStr(r)
			}
			continue // dropped: the postcopy destination has no x-ignore-shared
		default:
			return nil, fmt.Errorf("configuration subsection %q", sub)
		}
		body := make([]byte, size)
		io.ReadFull(r, body)
		cfg.WriteByte(pcSecSub)
		writeStr(&cfg, sub)
		cfg.Write(body)
	}
	s.config = cfg.Bytes()
	return s, s.parseSections(r, b)
}

// parseSections reads the RAM sections and keeps the device sections.
func (s *savedStream) parseSections(r *bytes.Reader, all []byte) error {
	var pages bytes.Buffer
	started := false
	for {
		t, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("stream ends before the devices")
		}
		switch t {
		case pcSecStart:
			if started {
				return fmt.Errorf("a second iterative section")
			}
			started = true
			var hdr bytes.Buffer
			var id [4]byte
			io.ReadFull(r, id[:])
			s.ramSection = binary.BigEndian.Uint32(id[:])
			hdr.Write(id[:])
			idstr := readStr(r)
			if idstr != "ram" {
				return fmt.Errorf("iterative section %q", idstr)
			}
			writeStr(&hdr, idstr)
			var iv [8]byte
			io.ReadFull(r, iv[:])
			hdr.Write(iv[:])
			s.ramHeader = hdr.Bytes()
			if err := s.ramRecords(r, &pages); err != nil {
				return err
			}
		case pcSecPart, pcSecEnd:
			var id [4]byte
			io.ReadFull(r, id[:])
			if !started || binary.BigEndian.Uint32(id[:]) != s.ramSection {
				return fmt.Errorf("section %d is not RAM's", binary.BigEndian.Uint32(id[:]))
			}
			if err := s.ramRecords(r, &pages); err != nil {
				return err
			}
		default:
			r.UnreadByte()
			rest := all[len(all)-r.Len():]
			dev, err := devicesOf(rest)
			s.devices, s.pages = dev, pages.Bytes()
			return err
		}
		if t, err := r.ReadByte(); err == nil && t == pcSecFooter {
			var f [4]byte
			io.ReadFull(r, f[:])
			s.footers = true
		} else if err == nil {
			r.UnreadByte()
		}
	}
}

// devicesOf returns the device sections of the end of a stream: all up
// to QEMU_VM_EOF, which the JSON description of the devices may follow.
func devicesOf(rest []byte) ([]byte, error) {
	for p := len(rest) - 6; p > 0; p-- {
		if rest[p] == pcSecVMDesc && rest[p-1] == 0 && int(binary.BigEndian.Uint32(rest[p+1:])) == len(rest)-p-5 {
			return rest[:p-1], nil
		}
	}
	if n := len(rest); n > 0 && rest[n-1] == 0 {
		return rest[:n-1], nil
	}
	return nil, fmt.Errorf("no end of stream after the devices")
}

// ramRecords reads RAM records up to EOS: the block list goes to
// s.blocks, pages (never of the main block, which x-ignore-shared
// leaves out) to pages.
func (s *savedStream) ramRecords(r *bytes.Reader, pages *bytes.Buffer) error {
	for {
		var a [8]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return fmt.Errorf("RAM records: %w", err)
		}
		v := binary.BigEndian.Uint64(a[:])
		flags := v & pcRAMFlags
		switch {
		case flags&pcRAMEOS != 0:
			return nil
		case flags&pcRAMMemSize != 0:
			s.total = v &^ pcRAMFlags
			if err := s.blockList(r); err != nil {
				return err
			}
			continue
		}
		pages.Write(a[:])
		if flags&pcRAMContinue == 0 {
			name := readStr(r)
			if name == pcMainBlock {
				return fmt.Errorf("the stream holds pages of %s", pcMainBlock)
			}
			writeStr(pages, name)
		}
		switch flags &^ pcRAMContinue {
		case pcRAMZero:
			b, _ := r.ReadByte()
			pages.WriteByte(b)
		case pcRAMPage:
			p := make([]byte, pcPage)
			if _, err := io.ReadFull(r, p); err != nil {
				return err
			}
			pages.Write(p)
		default:
			return fmt.Errorf("RAM record flags %#x", flags)
		}
	}
}

// blockList reads the block list, each block with the address that
// x-ignore-shared adds, and keeps it without.
func (s *savedStream) blockList(r *bytes.Reader) error {
	var out bytes.Buffer
	for left := s.total; left > 0; {
		name := readStr(r)
		var sz, addr [8]byte
		io.ReadFull(r, sz[:])
		io.ReadFull(r, addr[:])
		size := binary.BigEndian.Uint64(sz[:])
		if size > left {
			return fmt.Errorf("RAM block %q exceeds the total", name)
		}
		left -= size
		if name == pcMainBlock {
			s.mainSize = size
		}
		writeStr(&out, name)
		out.Write(sz[:])
	}
	if s.mainSize == 0 {
		return fmt.Errorf("no RAM block %s", pcMainBlock)
	}
	s.blocks = out.Bytes()
	return nil
}

func readStr(r *bytes.Reader) string {
	n, _ := r.ReadByte()
	b := make([]byte, n)
	io.ReadFull(r, b)
	return string(b)
}

func writeStr(w *bytes.Buffer, s string) {
	w.WriteByte(byte(len(s)))
	w.WriteString(s)
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// command encodes a QEMU_VM_COMMAND.
func command(cmd uint16, data []byte) []byte {
	b := []byte{pcSecCommand}
	b = append(b, be16(cmd)...)
	b = append(b, be16(uint16(len(data)))...)
	return append(b, data...)
}

// Postcopy is a restore whose guest may run while its RAM arrives.
type Postcopy struct {
	m    *Machine
	conn *os.File
	done chan error // the page server's outcome
	// push is closed by Push: until then only the pages QEMU asks for
	// are sent, so that they do not queue behind others while the
	// device state loads.
	push     chan struct{}
	pushOnce sync.Once
}

// Push starts sending the pages nobody asked for yet (Wait waits for
// them). Until it is called, only the pages QEMU asks for are sent.
func (p *Postcopy) Push() { p.pushOnce.Do(func() { close(p.push) }) }

// LoadPostcopy loads the device state dev (written by SaveDeviceState)
// into a machine booted with Boot.Incoming whose RAM file is empty (all
// holes), as the destination of a postcopy migration whose source is this
// process: RAM pages come from pages, first those the guest asks for.
// It returns once the device state is loaded; Wait returns once every
// page is in place.
func (m *Machine) LoadPostcopy(ctx context.Context, dev []byte, pages PageSource) (*Postcopy, error) {
	s, err := parseSaved(dev)
	if err != nil {
		return nil, fmt.Errorf("postcopy: %w", err)
	}
	q, err := m.QMP(ctx)
	if err != nil {
		return nil, err
	}
	caps := []map[string]any{{"capability": "events", "state": true}, {"capability": "postcopy-ram", "state": true}}
	if _, err := q.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}); err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "postcopy"), os.NewFile(uintptr(fds[1]), "postcopy-qemu")
	err = q.SendFile(ctx, migrationFD, theirs)
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, err
	}
	if _, err := q.Execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:" + migrationFD}); err != nil {
		ours.Close()
		return nil, err
	}
	p := &Postcopy{m: m, conn: ours, done: make(chan error, 1), push: make(chan struct{})}
	reqs := make(chan uint64, 1024)
	go p.readReturnPath(reqs)
	go func() { p.done <- p.serve(s, pages, reqs) }()
	return p, nil
}

// readReturnPath passes the pages QEMU asks for to reqs, and closes it
// when QEMU ends the return path.
func (p *Postcopy) readReturnPath(reqs chan<- uint64) {
	defer close(reqs)
	r := bufio.NewReader(p.conn)
	for {
		var h [4]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		typ, n := binary.BigEndian.Uint16(h[:2]), binary.BigEndian.Uint16(h[2:])
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		switch typ {
		case pcRPReqPagesID, pcRPReqPages:
			if len(body) < 12 {
				return
			}
			start := binary.BigEndian.Uint64(body)
			length := binary.BigEndian.Uint32(body[8:])
			for off := start; off < start+uint64(length); off += pcPage {
				reqs <- off
			}
		case pcRPShut:
			return
		}
	}
}

// serve writes the stream: setup, the package holding the devices, then
// pages, asked-for ones first, and the end.
func (p *Postcopy) serve(s *savedStream, pages PageSource, reqs <-chan uint64) error {
	w := bufio.NewWriterSize(p.conn, 256<<10)
	w.Write(be32(pcMagic))
	w.Write(be32(pcVersion))
	w.Write(s.config)
	w.Write(command(pcCmdOpenReturnPath, nil))
	w.Write(command(pcCmdAdvise, append(be64(pcPage), be64(pcPage)...)))
	footer := func() {
		if s.footers {
			w.WriteByte(pcSecFooter)
			w.Write(be32(s.ramSection))
		}
	}
	w.WriteByte(pcSecStart)
	w.Write(s.ramHeader)
	w.Write(be64(s.total | pcRAMMemSize))
	w.Write(s.blocks)
	w.Write(be64(pcRAMEOS))
	footer()
	if len(s.pages) > 0 {
		w.WriteByte(pcSecPart)
		w.Write(be32(s.ramSection))
		w.Write(s.pages)
		w.Write(be64(pcRAMEOS))
		footer()
	}
	// QEMU 7.2 moves the postcopy state to LISTENING and then, if no
	// discard came before LISTEN, back to DISCARD (postcopy_ram_prepare_
	// discard), after which its listen thread loads pages as in precopy,
	// into registered RAM, and hangs. One discard of the first page (a
	// hole already: advise discarded all RAM) avoids that path.
	var discard bytes.Buffer
	discard.WriteByte(0) // version
	writeStr(&discard, pcMainBlock)
	discard.WriteByte(0) // nil
	discard.Write(be64(0))
	discard.Write(be64(pcPage))
	w.Write(command(pcCmdDiscard, discard.Bytes()))
	var pkg []byte
	pkg = append(pkg, command(pcCmdListen, nil)...)
	pkg = append(pkg, s.devices...)
	pkg = append(pkg, command(pcCmdRun, nil)...)
	w.Write(command(pcCmdPackaged, be32(uint32(len(pkg)))))
	w.Write(pkg)
	if err := w.Flush(); err != nil {
		return err
	}
	if err := p.sendPages(w, s, pages, reqs, footer); err != nil {
		return err
	}
	w.WriteByte(pcSecEnd)
	w.Write(be32(s.ramSection))
	w.Write(be64(pcRAMEOS))
	footer()
	w.WriteByte(0) // QEMU_VM_EOF
	return w.Flush()
}

// sendPages sends every page that may hold data, and every page asked
// for, in sections of a few pages; asked-for pages go first.
func (p *Postcopy) sendPages(w *bufio.Writer, s *savedStream, pages PageSource, reqs <-chan uint64, footer func()) error {
	sent := make([]bool, s.mainSize/pcPage)
	buf := make([]byte, pcPage)
	named := false
	put := func(off uint64) error {
		i := off / pcPage
		if i >= uint64(len(sent)) || sent[i] {
			return nil
		}
		sent[i] = true
		zero, err := pages.ReadPage(off, buf)
		if err != nil {
			return err
		}
		flag := uint64(pcRAMPage)
		if zero {
			flag = pcRAMZero
		}
		if named {
			flag |= pcRAMContinue
		}
		w.Write(be64(off | flag))
		if !named {
			w.WriteByte(byte(len(pcMainBlock)))
			w.WriteString(pcMainBlock)
			named = true
		}
		if zero {
			w.WriteByte(0)
		} else {
			w.Write(buf)
		}
		return nil
	}
	if err := p.answerUntilPush(w, reqs, put, s, footer); err != nil {
		return err
	}
	next := uint64(0)
	for next < s.mainSize {
		w.WriteByte(pcSecPart)
		w.Write(be32(s.ramSection))
		for n := 0; n < pcPagesPerBatch && next < s.mainSize; {
			select {
			case off, ok := <-reqs:
				if ok {
					if err := put(off); err != nil {
						return err
					}
					continue
				}
				reqs = nil
			default:
			}
			if pages.Data(next) {
				if err := put(next); err != nil {
					return err
				}
				n++
			}
			next += pcPage
		}
		w.Write(be64(pcRAMEOS))
		footer()
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// Wait returns once every page is in place and QEMU has completed the
// migration, or with the first failure; on failure the caller must halt
// the machine, whose guest would wait for pages that never come.
func (p *Postcopy) Wait(ctx context.Context) error {
	defer p.conn.Close()
	q, err := p.m.QMP(ctx)
	if err != nil {
		return err
	}
	select {
	case err = <-p.done:
	case <-ctx.Done():
		p.conn.Close() // ends a write QEMU does not read
		<-p.done
		return fmt.Errorf("postcopy: %w", ctx.Err())
	}
	if err != nil {
		if p.m.PID() == 0 {
			return p.m.exitedDuringMigration()
		}
		return fmt.Errorf("postcopy: %w", err)
	}
	for {
		raw, err := q.Execute(ctx, "query-migrate", nil)
		if err != nil {
			return err
		}
		if bytes.Contains(raw, []byte(`"completed"`)) {
			return nil
		}
		if bytes.Contains(raw, []byte(`"failed"`)) {
			return errors.New("postcopy: migration failed: " + string(raw))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ContinuePostcopy runs the guest of a machine whose device state
// LoadPostcopy is loading, as soon as QEMU has loaded it (its run state
// leaves inmigrate).
func (m *Machine) ContinuePostcopy(ctx context.Context) error {
	q, err := m.QMP(ctx)
	if err != nil {
		return err
	}
	for {
		rs, err := runState(ctx, q)
		if err != nil {
			return fmt.Errorf("continue %s: %w", m.cfg.Name, err)
		}
		if rs != "inmigrate" {
			return m.Continue(ctx)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("continue %s: device state not loaded: %w", m.cfg.Name, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// answerUntilPush sends the pages QEMU asks for, one section each, until
// Push is called.
func (p *Postcopy) answerUntilPush(w *bufio.Writer, reqs <-chan uint64, put func(uint64) error, s *savedStream, footer func()) error {
	for {
		select {
		case <-p.push:
			return nil
		case off, ok := <-reqs:
			if !ok {
				return errors.New("QEMU closed the return path before all pages were sent")
			}
			w.WriteByte(pcSecPart)
			w.Write(be32(s.ramSection))
			if err := put(off); err != nil {
				return err
			}
			w.Write(be64(pcRAMEOS))
			footer()
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}
