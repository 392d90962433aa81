package ui_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/testimage"
	"github.com/sbuml/sbuml/ui"
	"github.com/sbuml/sbuml/vmm"
)

// guestWait bounds what waits for a guest: a boot, checkout or commit
// under TCG on a busy host.
const guestWait = 3 * time.Minute

// TestBrowser drives the page in Chromium against real guests, and does
// each action twice, once on the page and once with the sbuml command on
// a twin, comparing what sbuml log --all --json and sbuml ps --json say
// of both. The page boots m1 (with a screen) and the command line commits
// it; the page shows the graph with every snapshot, a commit made in a
// shell appears without a reload, the page shows m1's screen through
// noVNC; the page checks out the newest snapshot as m2 (the shell as m3);
// the page is told m2's console is busy while a shell shows it, and the
// shell is refused while the page shows it; the page types into m2's
// console and reads the guest's answer, commits, tags,
// freezes, continues, rewinds and halts m2, deletes its branch and runs
// gc. Last, the same browser opens the site sbuml publish writes, on a
// plain static server, and finds its graph.
//
// It is long because one browser and one pair of guests serve all these
// checks: each costs seconds to start.
func TestBrowser(t *testing.T) {
	s := guestScrapbook(t)
	dir := s.Dir
	p := &page{t: t, ctx: browser(t, 15*time.Minute)}
	base := serve(t, dir, "", ui.Options{Accel: "tcg"})
	p.open(base)
	p.requireGraph(dir)

	p.boot("m1", "256")
	p.waitState("m1", "running")
	if ms := cliJSON[[]sbuml.MachineInfo](t, dir, "ps"); len(ms) != 1 || ms[0].Name != "m1" || ms[0].Memory != 256<<20 || ms[0].Display != "vnc" {
		t.Fatalf("after booting m1 with 256 MiB and a screen on the page, ps --json says %+v", ms)
	}
	mustCLI(t, dir, "commit", "m1", "-m", "first, from the shell")
	p.requireGraph(dir)

	// Live updates: a commit and a halt in a shell show without a reload.
	mustCLI(t, dir, "commit", "m1", "-m", "second, from the shell")
	p.requireGraph(dir)
	p.click(machineButton("m1", "display"))
	p.wait("m1's screen in noVNC", `document.querySelector("#display canvas") !== null && document.querySelector("#screen-status").textContent.startsWith("connected")`, time.Minute)
	p.shot("ui-screen")
	mustCLI(t, dir, "halt", "m1")
	p.wait("m1 gone from the page", `document.querySelector('#machines li[data-machine="m1"]') === null`, time.Minute)
	newest := cliLog(t, dir)[0]

	p.checkout(newest.ID.String(), "m2")
	mustCLI(t, dir, "checkout", newest.ID.String(), "m3", "-c", "--accel", "tcg")
	p.waitState("m2", "running")
	requireTwins(t, dir, "m2", "m3", newest.ID.String(), newest.ID.String())

	p.console(dir, "m2")
	p.shot("ui-console")

	p.commit("m2", "from the page")
	mustCLI(t, dir, "commit", "m3", "-m", "from the shell")
	fromPage, fromShell := requireTwinCommits(t, dir, "from the page", "from the shell")

	p.tag(fromPage.ID.String(), "page-tag")
	mustCLI(t, dir, "tag", "shell-tag", fromShell.ID.String())
	p.wait("the page's tag in the graph", `document.querySelector('.node-label .badge.tag') !== null`, time.Minute)
	requireTags(t, dir, map[string]string{"refs/tags/page-tag": fromPage.ID.String(), "refs/tags/shell-tag": fromShell.ID.String()})
	p.shot("ui-graph")

	for _, change := range []struct{ action, state string }{{"freeze", "frozen"}, {"continue", "running"}} {
		// A freeze in a shell changes no file: the page hears it from
		// QEMU's events.
		mustCLI(t, dir, change.action, "m3")
		p.waitState("m3", change.state)
		p.click(machineButton("m2", change.action))
		p.waitState("m2", change.state)
		requireTwins(t, dir, "m2", "m3", fromPage.ID.String(), fromShell.ID.String())
	}

	p.rewind(newest.ID.String(), "m2")
	mustCLI(t, dir, "rewind", "m3", newest.ID.String(), "--accel", "tcg")
	requireTwins(t, dir, "m2", "m3", newest.ID.String(), newest.ID.String())

	p.click(machineButton("m2", "halt"))
	p.confirm()
	mustCLI(t, dir, "halt", "m3")
	p.wait("m2 gone from the page", `document.querySelector('#machines li[data-machine="m2"]') === null`, time.Minute)
	p.wait("m2's console closed", `document.querySelector("#terminal").dataset.state === "closed"`, time.Minute)
	if ms := cliJSON[[]sbuml.MachineInfo](t, dir, "ps"); len(ms) != 0 {
		t.Errorf("after halting m2 on the page and m3 in the shell, ps lists %v", ms)
	}

	p.deleteBranch(fromPage.ID.String(), "m2")
	mustCLI(t, dir, "branch", "-d", "m3")
	if bs := cliJSON[[]struct{ Name string }](t, dir, "branch"); !reflect.DeepEqual(bs, []struct{ Name string }{{"refs/heads/m1"}}) {
		t.Errorf("after deleting m2 on the page and m3 in the shell, the branches are %v, want m1 only", bs)
	}
	p.gc()
	if r := cliJSON[sbuml.GcReport](t, dir, "gc", "--dry-run"); r.Removed != 0 {
		t.Errorf("after gc on the page, gc --dry-run would still remove %d objects", r.Removed)
	}
	p.requireGraph(dir)

	p.openPublished(dir)
	p.shot("published")
}

// guestScrapbook returns a scrapbook holding the test image as its
// default image; every machine of it is halted when the test ends.
func guestScrapbook(t *testing.T) *sbuml.Scrapbook {
	t.Helper()
	img := testimage.Get(t)
	s, err := sbuml.Init(filepath.Join(t.TempDir(), "scrapbook"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), guestWait)
	defer cancel()
	if _, err := s.AddImage(ctx, sbuml.DefaultImage, filepath.Dir(img.Kernel)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if names, err := s.HaltAll(context.Background()); err != nil {
			t.Errorf("cleanup: halt %v: %v", names, err)
		}
		s.Close()
	})
	return s
}

// cliLog is sbuml log --all --json.
func cliLog(t testing.TB, dir string) []sbuml.LogEntry {
	return cliJSON[[]sbuml.LogEntry](t, dir, "log", "--all")
}

// requireTwins checks that sbuml ps --json says the same of machines a
// and b, but for their names and host ports, and that they continue from
// snapshots snapA and snapB.
func requireTwins(t testing.TB, dir, a, b, snapA, snapB string) {
	t.Helper()
	same := func(m sbuml.MachineInfo, snap string) string {
		if m.Snapshot == snap {
			m.Snapshot = "as expected"
		}
		return fmt.Sprintf("state %s, snapshot %s, child %d, memory %d, cpus %d, accel %s, net %s, %d forwards, display %q, agent %v, keeper %v",
			m.State, m.Snapshot, m.Child, m.Memory, m.CPUs, m.Accel, m.Net, len(m.Forwards), m.Display, m.Agent, m.Keeper)
	}
	eventually(t, time.Minute, "ps --json alike for "+a+" and "+b, func() error {
		byName := map[string]sbuml.MachineInfo{}
		for _, m := range cliJSON[[]sbuml.MachineInfo](t, dir, "ps") {
			byName[m.Name] = m
		}
		ma, oka := byName[a]
		mb, okb := byName[b]
		if !oka || !okb {
			return fmt.Errorf("ps lists %v", byName)
		}
		if same(ma, snapA) != same(mb, snapB) || same(ma, snapA) == same(ma, "") {
			return fmt.Errorf("%s: %s\n%s: %s", a, same(ma, snapA), b, same(mb, snapB))
		}
		return nil
	})
}

// requireTwinCommits finds the commits with the two messages in sbuml log
// --all --json and checks that they are alike but for their machine:
// same parent, each on its machine's branch, same labels.
func requireTwinCommits(t testing.TB, dir, msgA, msgB string) (a, b sbuml.LogEntry) {
	t.Helper()
	for _, e := range cliLog(t, dir) {
		switch e.Message {
		case msgA:
			a = e
		case msgB:
			b = e
		}
	}
	if a.ID.IsZero() || b.ID.IsZero() {
		t.Fatalf("log --all lacks %q or %q", msgA, msgB)
	}
	norm := func(e sbuml.LogEntry) string {
		labels := map[string]string{}
		for k, v := range e.Labels {
			labels[k] = v
		}
		delete(labels, "machine")
		return fmt.Sprintf("parents %v, %d refs, labels %v, auto %v, author %s@%s", e.Parents, len(e.Refs), labels, e.Auto, e.Author, e.Host)
	}
	if norm(a) != norm(b) {
		t.Errorf("the commit made on the page and the one made in the shell differ:\n%s\n%s", norm(a), norm(b))
	}
	if !reflect.DeepEqual(a.Refs, []string{"refs/heads/m2"}) || !reflect.DeepEqual(b.Refs, []string{"refs/heads/m3"}) {
		t.Errorf("the page's commit is on %v, the shell's on %v; want m2 and m3", a.Refs, b.Refs)
	}
	return a, b
}

// requireTags checks sbuml tag --json.
func requireTags(t testing.TB, dir string, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, tag := range cliJSON[[]struct{ Name, ID string }](t, dir, "tag") {
		got[tag.Name] = tag.ID
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tags: %v, want %v", got, want)
	}
}

// page is the browser tab showing sbuml ui.
type page struct {
	t   *testing.T
	ctx context.Context
}

// do runs browser actions, failing the test on error.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

func (p *page) open(url string) {
	p.t.Helper()
	p.do("open "+url, chromedp.Navigate(url))
}

// wait waits until the JavaScript expression is true.
func (p *page) wait(what, expr string, timeout time.Duration) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		p.shot("failed")
		p.t.Fatalf("%s: not within %v: %v\npage says: %s\nconsole shows: %s", what, timeout, err,
			p.eval(`document.querySelector("#toast").textContent`), p.eval(`(document.querySelector("#terminal .xterm-rows") || {}).textContent || ""`))
	}
}

// eval returns the string value of a JavaScript expression.
func (p *page) eval(expr string) string {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// click clicks the element sel selects, again if the page redrew it
// between finding and clicking it.
func (p *page) click(sel string) {
	p.t.Helper()
	var err error
	for range 5 {
		if err = chromedp.Do(p.ctx, chromedp.Click(sel)); err == nil || !strings.Contains(err.Error(), "Could not find node") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		p.t.Fatalf("click %s: %v", sel, err)
	}
}

// fill sets an input of the open dialog.
func (p *page) fill(id, value string) {
	p.t.Helper()
	p.do("fill "+id, chromedp.SetValue("#dialog #"+id, value))
}

// confirm presses the dialog's main button.
func (p *page) confirm() {
	p.t.Helper()
	p.wait("the dialog", `document.querySelector("#dialog").open`, 10*time.Second)
	p.click(`#dialog button[value="ok"]`)
}

// shot saves a screenshot of the page as NAME.png in the directory
// $SBUML_UI_SCREENSHOTS, if set (docs/ holds those the docs show).
func (p *page) shot(name string) {
	p.t.Helper()
	out := os.Getenv("SBUML_UI_SCREENSHOTS")
	if out == "" {
		return
	}
	b, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(out, name+".png"), b, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// graphJS lists the snapshots on the page: every item of the accessible
// list with its ID and message, and the nodes drawn in the graph.
const graphJS = `JSON.stringify({
	list: [...document.querySelectorAll("#snapshot-list > li")].map(li => ({id: li.dataset.id, text: li.textContent})),
	nodes: [...document.querySelectorAll("#graph circle[data-id]")].map(c => c.dataset.id),
})`

// requireGraph waits until the page shows exactly the snapshots sbuml log
// --all --json lists, each with its message, and draws them.
func (p *page) requireGraph(dir string) {
	p.t.Helper()
	want := cliLog(p.t, dir)
	var last string
	deadline := time.Now().Add(time.Minute)
	for {
		var got struct {
			List  []struct{ ID, Text string }
			Nodes []string
		}
		last = p.eval(graphJS)
		if err := json.Unmarshal([]byte(last), &got); err != nil {
			p.t.Fatal(err)
		}
		ok := len(got.List) == len(want) && len(got.Nodes) == len(want)
		for i := 0; ok && i < len(want); i++ {
			msg := strings.SplitN(want[i].Message, "\n", 2)[0]
			ok = got.List[i].ID == want[i].ID.String() && strings.Contains(got.List[i].Text, msg)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the page does not show the %d snapshots of log --all: %s", len(want), last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// machineButton selects a button of a machine in the machines panel.
func machineButton(machine, action string) string {
	return fmt.Sprintf(`#machines li[data-machine=%q] button[data-m=%q]`, machine, action)
}

// waitState waits until the page shows the machine in state.
func (p *page) waitState(machine, state string) {
	p.t.Helper()
	p.wait(machine+" "+state+" on the page", fmt.Sprintf(`document.querySelector('#machines li[data-machine=%q].%s') !== null`, machine, state), guestWait)
}

// selectSnapshot chooses a snapshot in the accessible list.
func (p *page) selectSnapshot(id string) {
	p.t.Helper()
	p.click(fmt.Sprintf(`#snapshot-list li[data-id=%q] button`, id))
	p.wait("details of "+id[:12], fmt.Sprintf(`(document.querySelector("#details .full-id") || {}).textContent === %q && document.querySelector("#details table.files") !== null`, id), 10*time.Second)
}

// checkout checks a snapshot out from the page, continuing it.
func (p *page) checkout(id, machine string) {
	p.t.Helper()
	p.selectSnapshot(id)
	p.click(`#details [data-act="checkout"]`)
	p.wait("the checkout dialog", `document.querySelector("#dialog").open`, 10*time.Second)
	p.fill("f-machine", machine)
	if p.eval(`String(document.querySelector("#f-continue").checked)`) != "true" {
		p.t.Fatal("the checkout dialog does not continue the machine by default")
	}
	p.confirm()
}

// console checks that the page cannot open the machine's console while a
// shell shows it, and is told why; opens it once the shell has let go;
// checks that a shell cannot attach it meanwhile; types a command and
// reads the answer.
func (p *page) console(dir, machine string) {
	p.t.Helper()
	shell := exec.Command(sbumlCommand(p.t), "--scrapbook", dir, "console", machine)
	typing, err := shell.StdinPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := shell.Start(); err != nil {
		p.t.Fatal(err)
	}
	lock := filepath.Join(dir, "machines", machine, vmm.ConsoleLock)
	eventually(p.t, time.Minute, "sbuml console holds "+lock, func() error {
		if !flocked(lock) {
			return errNotYet
		}
		return nil
	})
	p.click(machineButton(machine, "console"))
	p.wait("the page told the console is busy", `document.querySelector("#terminal").dataset.state === "busy" && document.querySelector("#screen-status").textContent.includes("another sbuml process")`, time.Minute)
	typing.Close()
	if err := shell.Wait(); err != nil {
		p.t.Fatalf("sbuml console, its input ended: %v", err)
	}
	p.click(machineButton(machine, "console"))
	p.wait("the console attached", `document.querySelector("#terminal").dataset.state === "attached"`, time.Minute)
	_, err = cli(p.t, dir, "true\n", "console", machine)
	if err == nil || !strings.Contains(err.Error(), "attached in another sbuml process") {
		p.t.Errorf("sbuml console while the page shows the console: %v, want it refused", err)
	}
	p.click("#terminal .xterm-screen")
	p.do("type into the console", typeKeys("echo ui-$((6*7))\n"))
	p.wait("the guest's answer in the page's console", `document.querySelector("#terminal .xterm-rows").textContent.includes("ui-42")`, time.Minute)
}

// flocked reports whether another process holds the flock on path.
func flocked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}
	return errors.Is(err, syscall.EWOULDBLOCK)
}

// typeKeys types text on the keyboard as a browser's user would: per key
// a keydown carrying the key's text, then a keyup. chromedp.KeyEvent sends
// the text in a char event of its own after the keydown instead, which
// xterm.js takes as two keystrokes.
func typeKeys(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for _, r := range text {
			if r == '\n' {
				r = '\r'
			}
			k, ok := kb.Keys[r]
			if !ok {
				return fmt.Errorf("type %q: no key for it", r)
			}
			down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Key: k.Key, Code: k.Code,
				WindowsVirtualKeyCode: k.Windows, NativeVirtualKeyCode: k.Native, Text: k.Text, UnmodifiedText: k.Unmodified}
			if k.Shift {
				down.Modifiers = int64(kb.ModifierShift)
			}
			up := down
			up.Type, up.Text, up.UnmodifiedText = input.DispatchKeyEventTypeKeyUp, "", ""
			for _, ev := range []input.DispatchKeyEventParams{down, up} {
				if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, ev); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// commit commits a machine from the page with a message.
func (p *page) commit(machine, message string) {
	p.t.Helper()
	p.click(machineButton(machine, "commit"))
	p.wait("the commit dialog", `document.querySelector("#dialog").open`, 10*time.Second)
	p.fill("f-message", message)
	p.confirm()
	p.wait("the page's commit in the list", fmt.Sprintf(`[...document.querySelectorAll("#snapshot-list li")].some(li => li.textContent.includes(%q))`, message), guestWait)
}

// boot boots a machine with a screen from the page.
func (p *page) boot(machine, mib string) {
	p.t.Helper()
	p.click("#boot")
	p.wait("the boot dialog", `document.querySelector("#dialog").open`, 10*time.Second)
	p.fill("f-machine", machine)
	p.fill("f-memory", mib)
	p.click("#f-display")
	p.confirm()
}

// rewind rewinds a machine from the page to a snapshot.
func (p *page) rewind(id, machine string) {
	p.t.Helper()
	p.selectSnapshot(id)
	p.click(`#details [data-act="rewind"]`)
	p.wait("the rewind dialog", `document.querySelector("#dialog").open`, 10*time.Second)
	p.fill("f-machine", machine)
	p.confirm()
	p.wait(machine+" rewound", fmt.Sprintf(`document.querySelector("#toast").textContent.startsWith(%q)`, machine+" rewound"), guestWait)
}

// tag tags a snapshot from the page.
func (p *page) tag(id, name string) {
	p.t.Helper()
	p.selectSnapshot(id)
	p.click(`#details [data-act="tag"]`)
	p.wait("the tag dialog", `document.querySelector("#dialog").open`, 10*time.Second)
	p.fill("f-name", name)
	p.confirm()
}

// deleteBranch deletes a branch from the details of its snapshot.
func (p *page) deleteBranch(id, branch string) {
	p.t.Helper()
	p.selectSnapshot(id)
	p.click(fmt.Sprintf(`#details button[data-delete-ref=%q]`, "refs/heads/"+branch))
	p.confirm()
	p.wait("branch "+branch+" gone", fmt.Sprintf(`document.querySelector('#details button[data-delete-ref=%q]') === null`, "refs/heads/"+branch), time.Minute)
}

// gc runs gc from the page: a dry run first, then the real one.
func (p *page) gc() {
	p.t.Helper()
	p.click("#gc")
	p.wait("the gc dialog", `document.querySelector("#dialog").open && document.querySelector("#dialog").textContent.includes("gc would remove")`, time.Minute)
	p.confirm()
	p.wait("gc done", `document.querySelector("#toast").textContent.startsWith("gc removed")`, time.Minute)
}

// openPublished publishes the scrapbook into a directory that python3's
// plain static server serves, opens it and finds its graph: a node and a
// list item per published snapshot, and the checkout line.
func (p *page) openPublished(dir string) {
	p.t.Helper()
	python, err := exec.LookPath("python3")
	if err != nil {
		p.t.Fatal("python3 serves the published site in this test: apt-get install python3 (make deps does)")
	}
	pub := p.t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	mustCLI(p.t, dir, "publish", pub, "--url", url)
	srv := exec.Command(python, "-m", "http.server", fmt.Sprint(port), "--bind", "127.0.0.1", "--directory", pub)
	if err := srv.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() {
		srv.Process.Kill()
		srv.Wait()
	})
	eventually(p.t, 30*time.Second, "python3 -m http.server answers", func() error {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err
	})
	published := cliJSON[[]sbuml.LogEntry](p.t, dir, "log", "m1", "page-tag", "shell-tag")
	p.open(url)
	p.wait("the published graph", fmt.Sprintf(`document.querySelectorAll("#snapshot-list > li").length === %d && document.querySelectorAll("#graph circle[data-id]").length === %d`, len(published), len(published)), time.Minute)
	want := fmt.Sprintf("sbuml checkout %s#%s", url, published[0].ID)
	if got := p.eval(`document.querySelector("#site-details .cmd").textContent`); !strings.HasPrefix(got, want) {
		p.t.Errorf("the published page says %q, want %q…", got, want)
	}
}
