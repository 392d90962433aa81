package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"

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
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if listen == "" && web == "" {
				return errors.New("vnc: give --listen or --web")
			}
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, cancel := interruptible()
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
				fmt.Printf("%s: VNC viewers connect to %s\n", args[0], ln.Addr())
				start(func() error { return s.ServeVNC(ctx, args[0], ln) })
			}
			if web != "" {
				h, err := s.VNCWebHandler(args[0])
				if err != nil {
					return err
				}
				ln, err := net.Listen("tcp", web)
				if err != nil {
					return fmt.Errorf("vnc: %w", err)
				}
				fmt.Printf("%s: browsers connect to ws://%s/websockify (noVNC: http://%s/vnc.html?path=websockify)\n", args[0], ln.Addr(), ln.Addr())
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
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:5901", "address for VNC viewers (empty: none)")
	c.Flags().StringVar(&web, "web", "", "address for browsers (websocket and noVNC), e.g. 127.0.0.1:6080")
	return c
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
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			rest := args[1:]
			if len(rest) > 0 && rest[0] == "--" {
				rest = rest[1:]
			}
			argv, err := s.SSHCommand(context.Background(), args[0], rest)
			s.Close()
			if err != nil {
				return err
			}
			// ssh takes over the terminal and the exit status.
			if err := syscall.Exec(argv[0], argv, os.Environ()); err != nil {
				return fmt.Errorf("ssh: %w", err)
			}
			return nil
		},
	}
	c.Flags().SetInterspersed(false)
	return c
}
