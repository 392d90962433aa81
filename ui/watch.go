package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/vmm"
	"golang.org/x/sys/unix"
)

// changes counts the changes seen in the scrapbook and wakes those
// waiting for the next one.
type changes struct {
	mu   sync.Mutex
	gen  uint64
	subs map[chan struct{}]struct{}
}

func newChanges() *changes {
	return &changes{subs: map[chan struct{}]struct{}{}}
}

// bump records a change.
func (c *changes) bump() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default: // already woken
		}
	}
}

// current returns the number of changes so far.
func (c *changes) current() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// subscribe returns a channel woken after each change (several changes
// may wake it once), and the function that ends the subscription.
func (c *changes) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.subs[ch] = struct{}{}
	c.mu.Unlock()
	return ch, func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}
}

// eventsPing is how often the events stream says it is alive, so that
// proxies keep it open and the page notices a dead server.
const eventsPing = 20 * time.Second

// getEvents streams server-sent events: "change" with the generation each
// time the scrapbook changes. The page then asks for the graph again.
func (s *Server) getEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "events: the connection cannot stream")
		return
	}
	woken, stop := s.changes.subscribe()
	defer stop()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	fmt.Fprintf(w, "event: change\ndata: %d\n\n", s.changes.current())
	flusher.Flush()
	ping := time.NewTicker(eventsPing)
	defer ping.Stop()
	for {
		select {
		case <-woken:
			fmt.Fprintf(w, "event: change\ndata: %d\n\n", s.changes.current())
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case <-r.Context().Done():
			return
		case <-s.ctx.Done():
			return
		}
		flusher.Flush()
	}
}

// settle is how long the watcher waits after a file event for more to
// come before it reports one change: a commit or a boot touches many
// files.
const settle = 50 * time.Millisecond

// watcher reports changes to a scrapbook's refs and machine directories,
// through inotify: HEAD, every directory under refs/, machines/ and each
// machine's directory.
type watcher struct {
	root     string
	f        *os.File
	fd       int
	onChange func()

	mu      sync.Mutex
	dirs    map[int]string // watch descriptor -> directory
	pending *time.Timer
	done    chan struct{}
}

// watchMask is what a watched directory reports: files and directories
// made, removed, renamed into place, written and closed.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE | unix.IN_ONLYDIR

// watchScrapbook starts a watcher of the scrapbook in dir that calls
// onChange once the files have settled after a change.
func watchScrapbook(dir string, onChange func()) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w := &watcher{root: dir, f: os.NewFile(uintptr(fd), "inotify"), fd: fd, onChange: onChange,
		dirs: map[int]string{}, done: make(chan struct{})}
	if err := w.add(dir); err != nil {
		w.f.Close()
		return nil, err
	}
	for _, sub := range []string{"refs", "machines"} {
		w.addTree(filepath.Join(dir, sub))
	}
	go w.run()
	return w, nil
}

// add watches one directory.
func (w *watcher) add(dir string) error {
	wd, err := unix.InotifyAddWatch(w.fd, dir, watchMask)
	if err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	w.mu.Lock()
	w.dirs[wd] = dir
	w.mu.Unlock()
	return nil
}

// addTree watches dir and the directories below it, if there. A
// directory that goes away meanwhile is simply not watched.
func (w *watcher) addTree(dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if w.add(p) != nil {
			return filepath.SkipDir
		}
		return nil
	})
}

// close stops the watcher.
func (w *watcher) close() {
	w.f.Close()
	<-w.done
	w.mu.Lock()
	if w.pending != nil {
		w.pending.Stop()
	}
	w.mu.Unlock()
}

// run reads events until the watcher is closed.
func (w *watcher) run() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		changed := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			name := strings.TrimRight(string(nameBytes), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if w.handle(int(ev.Wd), ev.Mask, name) {
				changed = true
			}
		}
		if changed {
			w.schedule()
		}
	}
}

// handle takes in one event and reports whether it is a change to tell.
func (w *watcher) handle(wd int, mask uint32, name string) bool {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		return true
	}
	w.mu.Lock()
	dir, ok := w.dirs[wd]
	if mask&unix.IN_IGNORED != 0 {
		delete(w.dirs, wd)
	}
	w.mu.Unlock()
	if !ok || name == "" {
		return false
	}
	path := filepath.Join(dir, name)
	if dir == w.root {
		if mask&unix.IN_ISDIR != 0 && (name == "refs" || name == "machines") {
			w.addTree(path)
			return true
		}
		return name == "HEAD"
	}
	if mask&unix.IN_ISDIR != 0 && mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
		w.addTree(path)
		return true
	}
	return !quietFile(name)
}

// quietFile reports whether changes to a file named so are no change to
// tell: lock files, logs that grow all the time, temporary files.
func quietFile(name string) bool {
	switch name {
	case vmm.LockFile, vmm.ConsoleLock, vmm.ConsoleLog, vmm.QEMULog:
		return true
	}
	return strings.HasSuffix(name, ".lock") || strings.HasSuffix(name, ".tmp") || strings.HasSuffix(name, ".log")
}

// schedule calls onChange once events have settled.
func (w *watcher) schedule() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		w.pending = time.AfterFunc(settle, func() {
			w.mu.Lock()
			w.pending = nil
			w.mu.Unlock()
			w.onChange()
		})
	}
}

// machineEvents watches the QMP events of running machines that have no
// keeper (STOP, RESUME, SHUTDOWN, ...), which no file shows: a machine
// frozen or continued from the command line. It holds each such
// machine's events monitor (vmm.DialEvents), which serves one client at
// a time. A machine's keeper holds that monitor itself and writes each
// such event to a file of the machine directory, which the watcher sees.
type machineEvents struct {
	ctx      context.Context
	onChange func()
	mu       sync.Mutex
	watched  map[string]bool // machine directories
	wg       sync.WaitGroup
}

func newMachineEvents(ctx context.Context, onChange func()) *machineEvents {
	return &machineEvents{ctx: ctx, onChange: onChange, watched: map[string]bool{}}
}

// watch starts watching the events of each machine listed whose QEMU
// runs, unless it is watched already.
func (e *machineEvents) watch(machines []sbuml.MachineInfo) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range machines {
		if m.PID == 0 || m.Keeper || e.watched[m.Dir] || e.ctx.Err() != nil {
			continue
		}
		e.watched[m.Dir] = true
		e.wg.Add(1)
		go e.follow(m.Dir)
	}
}

// follow reports every event of the machine in dir until its QEMU exits
// or the server closes.
func (e *machineEvents) follow(dir string) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.watched, dir)
		e.mu.Unlock()
	}()
	q, err := vmm.DialEvents(e.ctx, dir)
	if err != nil {
		return
	}
	defer q.Close()
	sub := q.Subscribe(runStateEvents...)
	for {
		if _, err := sub.Next(e.ctx); err != nil {
			if !errors.Is(err, context.Canceled) {
				e.onChange() // QEMU exited
			}
			return
		}
		e.onChange()
	}
}

// runStateEvents are the QMP events after which a machine's state may
// read differently; others (a guest setting its clock, say) are no news.
var runStateEvents = []string{"STOP", "RESUME", "SHUTDOWN", "RESET", "GUEST_PANICKED", "SUSPEND", "WAKEUP"}

// wait waits for the watchers to end, once the server's context has.
func (e *machineEvents) wait() { e.wg.Wait() }
