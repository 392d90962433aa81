package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/sbuml/sbuml"
	"github.com/spf13/cobra"
)

func init() {
	rootCmd.AddCommand(vncCmd(), sshCmd())
}

func vncCmd() *cobra.Command {
	var listen, web string
	c := &cobra.Command{
		Use:   "vnc MACHINE [--listen 127.0.0.1:5901] [--web 127.0.0.1:6080]",
		Short: "Show a machine's screen to VNC viewers (SBUML's sbumlvnc)",
		Long: `Relay a machine's screen (boot it with --display vnc) to VNC viewers: any
viewer connects to --listen, and browsers to --web, which serves the websocket
form noVNC uses at /websockify and, when Debian's novnc package is installed,
the noVNC client itself (open http://ADDR/vnc.html?path=websockify). Runs
until interrupted or until the machine halts. The screen is part of every
snapshot: a checkout shows what the machine showed at the commit.`,
		Example: `  sbuml boot m1 --display vnc
  sbuml vnc m1 &
  vncviewer 127.0.0.1:5901`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeMachines),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (any, error) {
			if listen == "" && web == "" {
				return nil, usagef("vnc: give --listen or --web")
			}
			return nil, relayVNC(ctx, s, args[0], listen, web)
		}, nil),
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:5901", "address for VNC viewers (empty: none)")
	c.Flags().StringVar(&web, "web", "", "address for browsers (websocket and noVNC), e.g. 127.0.0.1:6080")
	return c
}

// relayVNC relays machine's screen to VNC viewers on listen and to
// browsers on web (either may be empty) until ctx ends or a relay fails.
func relayVNC(ctx context.Context, s *sbuml.Scrapbook, machine, listen, web string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The relays run until interrupted; the first to fail ends both.
	errs := make(chan error, 2)
	relays := 0
	start := func(f func() error) {
		relays++
		go func() {
			err := f()
			cancel()
			errs <- err
		}()
	}
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("vnc: %w", err)
		}
		fmt.Printf("%s: VNC viewers connect to %s\n", machine, ln.Addr())
		start(func() error { return s.ServeVNC(ctx, machine, ln) })
	}
	if web != "" {
		h, err := s.VNCWebHandler(machine)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", web)
		if err != nil {
			return fmt.Errorf("vnc: %w", err)
		}
		fmt.Printf("%s: browsers connect to ws://%s/websockify (noVNC: http://%s/vnc.html?path=websockify)\n", machine, ln.Addr(), ln.Addr())
		srv := &http.Server{Handler: h}
		start(func() error {
			context.AfterFunc(ctx, func() { srv.Close() })
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	var first error
	for ; relays > 0; relays-- {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func sshCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ssh MACHINE [-- CMD [ARG...]]",
		Short: "Log into a machine with ssh through its forwarded port",
		Long: `Run ssh into a running machine as root, through the host port forwarded to its
port 22 (images with sshd, such as debian, get one on a free port at boot and
at every checkout), with the scrapbook's own key pair (made once per
scrapbook). The guest's host key is read through its agent and pinned, so
there is no host-key prompt. With CMD, ssh runs it and exits with its status.`,
		Example: `  sbuml image build debian
  sbuml boot m1 --base debian
  sbuml ssh m1 -- uname -a`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeArgs(completeMachines),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (any, error) {
			rest := args[1:]
			if len(rest) > 0 && rest[0] == "--" {
				rest = rest[1:]
			}
			argv, err := s.SSHCommand(ctx, args[0], rest)
			if err != nil {
				return nil, err
			}
			// ssh takes over the terminal and the exit status; the
			// scrapbook's files are closed before.
			s.Close()
			return nil, fmt.Errorf("ssh: %w", syscall.Exec(argv[0], argv, os.Environ()))
		}, nil),
	}
	c.Flags().SetInterspersed(false)
	return c
}
