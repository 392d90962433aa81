package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sbuml/sbuml/agent"
)

// SocketPath is where the daemon serves programs of the guest.
const SocketPath = "/run/sbuml-guest.sock"

// MaxMessage bounds a checkpoint message, in bytes.
const MaxMessage = 4096

// The local protocol is a line protocol on a unix stream socket. A
// request is one line:
//
//	ckpt[ MESSAGE]   ask the host for a checkpoint; MESSAGE is escaped
//	ping             check that the daemon is there
//
// and its reply one line, "ok VALUE" (the checkpoint's number, or the
// agent version) or "err TEXT". Lines end with a newline; in MESSAGE a
// backslash is written "\\" and a newline "\n". A connection may carry
// several requests, one after the other. A client that closes its
// connection withdraws its pending checkpoint request, so it must not
// shut its writing side down while it waits.

// ServeLocal serves the local protocol on ln until ctx ends or accepting
// fails; it closes ln.
func (d *Daemon) ServeLocal(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("local socket: accept: %w", err)
		}
		go d.serveClient(ctx, conn)
	}
}

func (d *Daemon) serveClient(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 2*MaxMessage+64)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				fmt.Fprintf(conn, "err request longer than %d bytes\n", r.Size())
			}
			return
		}
		cmd, arg, _ := strings.Cut(strings.TrimSuffix(string(line), "\n"), " ")
		var reply string
		switch cmd {
		case "ping":
			reply = "ok " + agent.Version
		case "ckpt":
			msg := unescape(arg)
			if len(msg) > MaxMessage {
				reply = fmt.Sprintf("err message longer than %d bytes", MaxMessage)
				break
			}
			var ok bool
			if reply, ok = d.localCkpt(ctx, conn, r, msg); !ok {
				return // the client went away
			}
		default:
			reply = fmt.Sprintf("err unknown request %q: want ckpt or ping", cmd)
		}
		if _, err := fmt.Fprintf(conn, "%s\n", reply); err != nil {
			return
		}
	}
}

// localCkpt runs a checkpoint for a client, withdrawing it if the client
// closes its connection meanwhile. It reports false in that case.
func (d *Daemon) localCkpt(ctx context.Context, conn net.Conn, r *bufio.Reader, msg string) (string, bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		if _, err := r.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			cancel()
		}
	}()
	n, err := d.Checkpoint(ctx, msg)
	conn.SetReadDeadline(time.Now())
	<-watched
	conn.SetReadDeadline(time.Time{})
	if ctx.Err() != nil {
		return "", false
	}
	if err != nil {
		return "err " + strings.ReplaceAll(err.Error(), "\n", " "), true
	}
	return "ok " + strconv.Itoa(n), true
}

func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func unescape(s string) string {
	return strings.NewReplacer(`\\`, `\`, `\n`, "\n").Replace(s)
}

// Ckpt asks the daemon listening on sockPath for a checkpoint, as
// "sbuml-guest ckpt" and the C ckpt() do, and returns its number: 0 in
// the machine that took it, the child's number in a machine checked out
// from it. It waits until the host answers or ctx ends.
func Ckpt(ctx context.Context, sockPath, msg string) (int, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", sockPath)
	if err != nil {
		return -1, fmt.Errorf("ckpt: connect to the sbuml-guest daemon: %w; is it running?", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	req := "ckpt"
	if msg != "" {
		req += " " + escape(msg)
	}
	if _, err := fmt.Fprintf(conn, "%s\n", req); err != nil {
		return -1, fmt.Errorf("ckpt: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			return -1, fmt.Errorf("ckpt: %w", context.Cause(ctx))
		}
		return -1, fmt.Errorf("ckpt: the sbuml-guest daemon did not answer: %w", err)
	}
	line = strings.TrimSuffix(line, "\n")
	if v, ok := strings.CutPrefix(line, "ok "); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return -1, fmt.Errorf("ckpt: bad answer %q", line)
		}
		return n, nil
	}
	return -1, fmt.Errorf("ckpt: %s", strings.TrimPrefix(line, "err "))
}
