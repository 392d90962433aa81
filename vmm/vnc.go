package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/coder/websocket"
)

// ServeVNC relays every connection accepted on ln to the VNC server of the
// machine in dir (VNCSocket), so that a VNC viewer can connect over TCP.
// It serves until ctx is done, then closes ln and the relayed connections
// and returns nil. It fails at once if the machine has no display, and
// returns an error when the machine's VNC server can no longer be reached
// (the machine was halted), or when ln fails.
func ServeVNC(ctx context.Context, dir string, ln net.Listener) error {
	sock := filepath.Join(dir, VNCSocket)
	if err := checkVNCSocket(sock); err != nil {
		ln.Close()
		return fmt.Errorf("serve vnc of machine %s: %w", dir, err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	context.AfterFunc(sctx, func() { ln.Close() })

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		dialErr error // the first failure to reach the VNC server
	)
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			stop()
			mu.Lock()
			derr := dialErr
			mu.Unlock()
			switch {
			case ctx.Err() != nil:
				return nil
			case derr != nil:
				return fmt.Errorf("serve vnc of machine %s: connect to its vnc server: %w", dir, derr)
			}
			return fmt.Errorf("serve vnc of machine %s: %w", dir, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			vnc, err := dialUnix(sctx, sock)
			if err != nil {
				c.Close()
				mu.Lock()
				if dialErr == nil {
					dialErr = err
				}
				mu.Unlock()
				stop()
				return
			}
			relay(sctx, c, vnc)
		}()
	}
}

// checkVNCSocket says whether a machine has a VNC server.
func checkVNCSocket(sock string) error {
	if _, err := os.Stat(sock); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no %s: the machine is halted or has no display (boot it with Display %q)", VNCSocket, DisplayVNC)
		}
		return err
	}
	return nil
}

// relay copies bytes both ways between a and b until either side closes
// or ctx ends, and then closes both.
func relay(ctx context.Context, a, b net.Conn) {
	closeBoth := func() {
		a.Close()
		b.Close()
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(a, b)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(b, a)
		done <- struct{}{}
	}()
	<-done
	closeBoth()
	<-done
}

// VNCWebsocket returns an http.Handler that relays a websocket to the VNC
// server of the machine in dir (VNCSocket), for browser viewers such as
// noVNC. RFB travels in binary messages; the handler accepts the
// subprotocol "binary" when the client asks for it. Browsers are only let
// in from pages of the same origin (host) as the request, so that no other
// web site can drive the machine; put the viewer's page on the same server.
// A relay ends when either side closes or the request's context ends.
func VNCWebsocket(dir string) http.Handler {
	return vncWebsocket{sock: filepath.Join(dir, VNCSocket)}
}

type vncWebsocket struct {
	sock string
}

func (h vncWebsocket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := checkVNCSocket(h.sock); err != nil {
		http.Error(w, "vnc of machine "+filepath.Dir(h.sock)+": "+err.Error(), http.StatusNotFound)
		return
	}
	vnc, err := dialUnix(ctx, h.sock)
	if err != nil {
		http.Error(w, "vnc of machine "+filepath.Dir(h.sock)+": "+err.Error(), http.StatusBadGateway)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		// Accept has answered the client.
		vnc.Close()
		return
	}
	relay(ctx, websocket.NetConn(ctx, ws, websocket.MessageBinary), vnc)
}
