package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/vmm"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

func init() {
	rootCmd.AddCommand(execCmd(), cpCmd())
}

// exitStatus is the error of a command that ends with a guest process's
// exit status: main exits with it and prints nothing.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func execCmd() *cobra.Command {
	var interactive, tty bool
	var req agent.ExecRequest
	c := &cobra.Command{
		Use:   "exec MACHINE [--] CMD [ARG...]",
		Short: "Run a command in a running machine",
		Long: `Run a command in a running machine through its agent (sbuml-guest), as docker
exec does in a container: its stdout and stderr arrive apart, and its exit
status is sbuml's. -i passes standard input to it; -t gives it a terminal
(stdout and stderr then merged), for interactive programs: sbuml exec -it m1 sh.
The serial console ('sbuml console') stays for humans; exec is for scripts.`,
		Example: `  sbuml exec m1 -- uname -a
  sbuml exec m1 -- sh -c 'echo out; echo err >&2; exit 3'
  tar c dir | sbuml exec -i m1 -- tar x -C /mnt
  sbuml exec -it m1 sh`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeArgs(completeMachines),
		RunE: withScrapbook(func(_ context.Context, s *sbuml.Scrapbook, args []string) (any, error) {
			// Interrupts go to the guest's process (see runInGuest).
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req.Argv, req.TTY = args[1:], tty
			if req.Argv[0] == "--" { // flags end at MACHINE; a "--" after it is only a separator
				req.Argv = req.Argv[1:]
			}
			if len(req.Argv) == 0 {
				return nil, usagef("exec: no command given")
			}
			g, err := s.Guest(ctx, args[0])
			if err != nil {
				return nil, err
			}
			defer g.Close()
			code, err := runInGuest(ctx, g, req, interactive)
			if err != nil {
				return nil, fmt.Errorf("exec in %s: %w", args[0], err)
			}
			if code != 0 {
				return nil, exitStatus(code)
			}
			return nil, nil
		}, nil),
	}
	c.Flags().SetInterspersed(false) // flags after MACHINE belong to the command
	c.Flags().BoolVarP(&interactive, "interactive", "i", false, "pass standard input to the command")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	c.Flags().StringArrayVarP(&req.Env, "env", "e", nil, "set an environment variable, KEY=VALUE (repeatable)")
	c.Flags().StringVarP(&req.Dir, "workdir", "w", "", "working directory in the guest (default /)")
	return c
}

// runInGuest runs req in the guest with this process's standard streams
// and returns its exit status.
func runInGuest(ctx context.Context, g agent.Agent, req agent.ExecRequest, interactive bool) (int, error) {
	termIn := req.TTY && isTerminal(os.Stdin)
	if termIn {
		if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
			req.Rows, req.Cols = ws.Row, ws.Col
		}
	}
	sess, err := g.Exec(ctx, req)
	if err != nil {
		return -1, err
	}
	if termIn {
		restore, err := vmm.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			sess.Close()
			return -1, err
		}
		defer restore()
		go forwardResizes(ctx, sess)
	} else {
		go forwardSignals(ctx, sess)
	}
	if interactive {
		go func() {
			io.Copy(sess.Stdin, os.Stdin)
			sess.Stdin.Close()
		}()
	} else {
		sess.Stdin.Close()
	}
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(os.Stderr, sess.Stderr)
		errc <- err
	}()
	_, err = io.Copy(os.Stdout, sess.Stdout)
	if e := <-errc; err == nil {
		err = e
	}
	code, werr := sess.Wait()
	if werr != nil {
		return -1, werr
	}
	return code, err
}

// forwardResizes passes the terminal's size changes to the guest.
func forwardResizes(ctx context.Context, sess *agent.Session) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if ws, err := unix.IoctlGetWinsize(int(os.Stdin.Fd()), unix.TIOCGWINSZ); err == nil {
				sess.Resize(ws.Row, ws.Col)
			}
		}
	}
}

// forwardSignals passes Ctrl-C and termination to the guest process.
func forwardSignals(ctx context.Context, sess *agent.Session) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-ch:
			sess.Signal(sig.(syscall.Signal))
		}
	}
}

func cpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and directories between the host and a running machine",
		Long: `Copy a file or directory between the host and a running machine, through its
agent. One side is MACHINE:PATH. The rules are docker cp's: a directory DST
receives SRC inside it; otherwise SRC is copied as DST; SRC ending in "/."
copies a directory's contents. Modes, times and symbolic links are kept.`,
		Example: `  sbuml cp ./data m1:/mnt/
  sbuml cp m1:/var/log/syslog .
  sbuml cp ./site/. m1:/srv/www`,
		Args: cobra.ExactArgs(2),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (any, error) {
			srcM, src := splitMachinePath(args[0])
			dstM, dst := splitMachinePath(args[1])
			switch {
			case srcM != "" && dstM != "":
				return nil, usagef("cp: copy between two machines through the host, in two steps")
			case srcM != "":
				return nil, s.CopyFromGuest(ctx, srcM, src, dst)
			case dstM != "":
				return nil, s.CopyToGuest(ctx, dstM, src, dst)
			}
			return nil, usagef("cp: one side must be MACHINE:PATH")
		}, nil),
	}
}

// splitMachinePath splits "m1:/tmp/x" into "m1" and "/tmp/x"; a path with
// no machine (no ':' before the first '/') gives "".
func splitMachinePath(arg string) (machine, path string) {
	i := strings.IndexByte(arg, ':')
	if i <= 0 || strings.Contains(arg[:i], "/") {
		return "", arg
	}
	return arg[:i], arg[i+1:]
}
