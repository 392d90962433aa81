// Command sbuml-guest is the sbuml agent inside a guest.
//
//	sbuml-guest daemon [-port NAME] [-socket PATH]
//	sbuml-guest ckpt [-m MESSAGE] [-socket PATH]
//	sbuml-guest version
//
// The daemon owns the agent's virtio-serial port and serves the host
// (exec, copy, clock, stats) and local programs (checkpoint requests);
// the image's boot scripts start it. ckpt asks the host for a checkpoint
// and prints its number: 0 in the machine that took it, the child's
// number in a machine checked out from it. See docs/agent.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sbuml/sbuml/agent"
	"github.com/sbuml/sbuml/agent/guest"
)

const usage = `usage:
  sbuml-guest daemon [-port NAME] [-socket PATH]   serve the host and local programs
  sbuml-guest ckpt [-m MESSAGE] [-socket PATH]     ask the host for a checkpoint; print its number
  sbuml-guest version                              print the agent version
`

func main() {
	log.SetFlags(0)
	log.SetPrefix("sbuml-guest: ")
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "daemon":
		err = daemon(args)
	case "ckpt":
		err = ckpt(args)
	case "version":
		fmt.Println(agent.Version)
	default:
		fmt.Fprintf(os.Stderr, "sbuml-guest: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func daemon(args []string) error {
	fs := flag.NewFlagSet("daemon", flag.ExitOnError)
	portName := fs.String("port", guest.PortName, "name of the agent's virtio-serial port")
	sock := fs.String("socket", guest.SocketPath, "unix socket for local programs")
	fs.Parse(args)

	dev, err := findPort(*portName)
	if err != nil {
		return err
	}
	port, err := guest.OpenPort(dev)
	if err != nil {
		return err
	}
	os.Remove(*sock) // left by a daemon that did not exit cleanly
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *sock, err)
	}
	os.Chmod(*sock, 0o666) // any user of the guest may ask for a checkpoint

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d := guest.NewDaemon(log.Printf)
	errc := make(chan error, 2)
	go func() { errc <- d.ServeLocal(ctx, ln) }()
	go func() { errc <- d.Run(ctx, port) }()
	err = <-errc
	stop()
	os.Remove(*sock)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// findPort waits a little for the port: the device names its ports
// shortly after its driver loads, which is when boot scripts run.
func findPort(name string) (string, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		dev, err := guest.FindPort(name)
		if err == nil || time.Now().After(deadline) {
			return dev, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ckpt(args []string) error {
	fs := flag.NewFlagSet("ckpt", flag.ExitOnError)
	msg := fs.String("m", "", "message recorded with the checkpoint")
	sock := fs.String("socket", guest.SocketPath, "the daemon's unix socket")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("ckpt: unexpected argument %q (quote the message: -m 'text')", fs.Arg(0))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n, err := guest.Ckpt(ctx, *sock, *msg)
	if err != nil {
		return err
	}
	fmt.Println(n)
	return nil
}
