// Command sbuml is the command-line interface to sbuml scrapbooks: it saves
// running Linux machines as content-addressed snapshots and brings them back.
//
// This package holds flags and printing only; the work is done by the
// github.com/sbuml/sbuml package and its sub-packages. Every command runs
// through one helper (withScrapbook), which opens and closes the scrapbook,
// handles interrupts and prints the report as text or JSON.
//
// Exit status: 0 on success, 1 when the work failed (or fsck and doctor
// found problems), 2 for a command line sbuml cannot run (an unknown
// command or flag, a missing or extra argument), and a guest command's
// own status for sbuml exec.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/transport"
	"github.com/spf13/cobra"
)

// rootCmd is the top of the command tree; each command file adds itself in init.
var rootCmd = &cobra.Command{
	Use:   "sbuml",
	Short: "A computation scrapbook for Linux machines",
	Long: `sbuml saves the complete running state of Linux machines as snapshots in a
content-addressed scrapbook, and restores, branches and moves them.

Exit status: 0 on success, 1 when the work failed, 2 for a command line
sbuml cannot run (an unknown command or flag, a missing or extra argument).`,
	Example: `  sbuml init
  sbuml boot m1
  sbuml commit m1 -m "before the test"
  sbuml checkout m1 m2 -c`,
	Version:       "(see --version)", // the text is versionText, made when asked for
	SilenceUsage:  true,
	SilenceErrors: true,
	// The limits of remotes come from the environment: say at once if
	// one of those variables is nonsense.
	PersistentPreRunE: func(*cobra.Command, []string) error {
		_, err := transport.LimitsFromEnv()
		return err
	},
}

// global flags
var (
	flagScrapbook string
	flagJSON      bool
)

func init() {
	rootCmd.PersistentFlags().StringVar(&flagScrapbook, "scrapbook", "", "scrapbook directory (default $SBUML_DIR, else ~/.sbuml)")
	rootCmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	cobra.AddTemplateFunc("versionText", versionText)
	rootCmd.SetVersionTemplate("{{versionText}}")
}

func main() {
	// A machine's keeper is this program run again (see sbuml.KeeperMain).
	sbuml.KeeperMain()
	os.Exit(execute())
}

// execute runs the command line and returns the exit status.
func execute() int {
	markUsageErrors(rootCmd)
	cmd, err := rootCmd.ExecuteC()
	if err == nil {
		return 0
	}
	var status exitStatus
	if errors.As(err, &status) {
		return int(status)
	}
	if isUsageError(err) {
		fmt.Fprintf(os.Stderr, "sbuml: %s (see '%s --help')\n", escapeText(oneLine(err.Error()), false), cmd.CommandPath())
		return 2
	}
	if err != errSilentFailure {
		fmt.Fprintln(os.Stderr, "sbuml: "+escapeText(oneLine(err.Error()), false))
	}
	return 1
}

// isUsageError reports whether err is about the command line rather than
// the work: a usageError, or cobra's word for an unknown command.
func isUsageError(err error) bool {
	var u usageError
	return errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command ")
}

// markUsageErrors makes the argument checks of c and its subcommands
// return usageErrors.
func markUsageErrors(c *cobra.Command) {
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}

// oneLine folds an error message onto a single line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
