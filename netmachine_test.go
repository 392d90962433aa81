package sbuml_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/vmm"
)

// hostServer serves body on 127.0.0.1 for the test's guests, which reach
// it as 10.0.2.2, and returns its port.
func hostServer(t testing.TB, body string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// getForward fetches / through a machine's forward and returns the body.
func getForward(t testing.TB, f vmm.Forward) (string, error) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/", f.HostAddr, f.HostPort))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// machineForwards returns a machine's forwards as ps reports them.
func machineForwards(t testing.TB, s *sbuml.Scrapbook, name string) []vmm.Forward {
	t.Helper()
	ms, err := s.Machines(guestContext(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Name == name {
			return m.Forwards
		}
	}
	t.Fatalf("ps does not list %s", name)
	return nil
}

// TestCheckoutKeepsNetworkApart boots a machine serving HTTP through a
// forward, commits it, and checks it out twice beside it: each checkout
// gets its forward on a new free host port, all three answer at once,
// and the guests' network works again within 5 s of the checkout,
// fetching from a server on the host. The second checkout claims a
// spare, which gets its forward only then.
func TestCheckoutKeepsNetworkApart(t *testing.T) {
	t.Parallel()
	s := guestScrapbook(t, 3)
	port := hostServer(t, "from the host\n")
	fwd, _ := vmm.ParseForward("0:80")
	bootGuestWith(t, s, "web", sbuml.BootOptions{Memory: 256 << 20, Accel: guestAccel, Forwards: []vmm.Forward{fwd}})
	fetch := fmt.Sprintf("timeout 10 wget -q -O - http://10.0.2.2:%d/", port)
	if got := sh(t, s, "web", fetch); got != "from the host\n" {
		t.Fatalf("the guest fetched %q", got)
	}
	sh(t, s, "web", "mkdir -p /www && hostname > /www/index.html && httpd -p 80 -h /www")
	orig := machineForwards(t, s, "web")
	if len(orig) != 1 || orig[0].HostPort == 0 || orig[0].GuestPort != 80 {
		t.Fatalf("forwards of web: %+v", orig)
	}
	ctx := guestContext(t)
	res, err := s.Commit(ctx, "web", sbuml.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ports := map[int]string{orig[0].HostPort: "web"}
	for _, name := range []string{"web2", "web3"} {
		// web3 takes a spare, whose forward is added once claimed.
		if name == "web3" {
			if _, err := s.StartSpares(ctx, res.ID.String(), 1, sbuml.SpareOptions{Accel: guestAccel}); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		_, co := checkoutGuest(t, s, res.ID.String(), name, sbuml.CheckoutOptions{Continue: true})
		if co.Spare != (name == "web3") {
			t.Errorf("%s: checkout claimed a spare: %v", name, co.Spare)
		}
		if len(co.Forwards) != 1 || co.Forwards[0].GuestPort != 80 || ports[co.Forwards[0].HostPort] != "" {
			t.Fatalf("%s forwards %+v; taken: %v", name, co.Forwards, ports)
		}
		ports[co.Forwards[0].HostPort] = name
		// The guest's network works again by itself.
		deadline := start.Add(5 * time.Second)
		for {
			out, _, code := execIn(t, s, name, "sh", "-c", fetch)
			if code == 0 && out == "from the host\n" {
				t.Logf("%s fetched from the host %v after its checkout began", name, time.Since(start).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no network 5 s after its checkout", name)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := machineForwards(t, s, name); len(got) != 1 || got[0] != co.Forwards[0] {
			t.Errorf("ps shows %s forwarding %+v, checkout said %+v", name, got, co.Forwards)
		}
	}
	// The checkouts draw different random numbers. (The guest kernel
	// parts them by itself too, from interrupt timings; the keeper's
	// reseed makes it so from the first read.)
	if a, b := sh(t, s, "web2", "head -c 16 /dev/urandom | od -An -tx1"), sh(t, s, "web3", "head -c 16 /dev/urandom | od -An -tx1"); a == b {
		t.Errorf("two checkouts of one snapshot read the same random bytes %s", a)
	}
	// All three serve at once, each on its own port (the page holds the
	// host name of the committed machine, so only the port tells).
	for port, name := range ports {
		body, err := getForward(t, vmm.Forward{HostAddr: "127.0.0.1", HostPort: port})
		if err != nil || strings.TrimSpace(body) != "sbuml" {
			t.Errorf("%s on port %d: %q, %v", name, port, body, err)
		}
	}
}
