package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/internal/inject"
	"github.com/spf13/cobra"
)

// A job is the work of one command on an open scrapbook: it gets the
// command's arguments and a context that the first interrupt cancels, and
// returns what the command reports.
type job[T any] func(ctx context.Context, s *sbuml.Scrapbook, args []string) (T, error)

// withScrapbook makes the RunE of a command that works on the scrapbook
// the flags name. It opens the scrapbook, runs do with a context that
// the first SIGINT or SIGTERM cancels (see interruptible), prints what do
// returns (as JSON with --json, else with text, which may be nil for a
// command that prints nothing), and closes the scrapbook, whatever
// happened. A job that has a report to print and still must fail
// (fsck's problems) returns both the report and errSilentFailure.
func withScrapbook[T any](do job[T], text func(T)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		s, err := openScrapbook()
		if err != nil {
			return err
		}
		defer s.Close()
		ctx, stop := interruptible()
		defer stop()
		v, err := do(ctx, s, args)
		return printReport(v, err, text)
	}
}

// withoutScrapbook is withScrapbook for a command that opens no
// scrapbook of the flags (init, clone, doctor).
func withoutScrapbook[T any](do func(ctx context.Context, args []string) (T, error), text func(T)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx, stop := interruptible()
		defer stop()
		v, err := do(ctx, args)
		return printReport(v, err, text)
	}
}

// printReport prints v unless err says the work failed, and returns err.
func printReport[T any](v T, err error, text func(T)) error {
	if err != nil && !errors.Is(err, errSilentFailure) {
		return err
	}
	if flagJSON {
		if jerr := printJSON(v); jerr != nil {
			return jerr
		}
	} else if text != nil {
		text(v)
	}
	return err
}

// errSilentFailure makes sbuml exit 1 without printing another line,
// for commands that already reported what is wrong.
var errSilentFailure = errors.New("")

// interruptible returns a context cancelled by the first SIGINT or
// SIGTERM, so that an interrupted command ends cleanly (a transfer keeps
// what it received, an import what it stored, an export removes what it
// wrote, gc leaves nothing half done), and a second one ends the process
// at once.
func interruptible() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			// The second ends the process at once, by the signal's
			// default action, as if sbuml did not catch it: but not
			// while QEMU runs on registers sbuml lent it.
			inject.Quiesce()
			signal.Reset(sig)
			syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			close(done)
			signal.Stop(sigs)
			cancel()
		})
	}
}

// addJSONFlag gives a command that reports something its --json flag.
func addJSONFlag(c *cobra.Command) {
	c.Flags().BoolVar(&flagJSON, "json", false, "print the report as JSON (see docs/guide.md, \"JSON output\")")
}

// printJSON writes v as indented JSON to stdout, after the conventions
// scripts rely on (docs/guide.md, "JSON output"): an empty list is [],
// never null, and an empty map {}.
func printJSON(v any) error {
	rv := reflect.ValueOf(v)
	if rv.IsValid() {
		// A copy that can be changed, so that a nil list at the top
		// prints as [] too.
		p := reflect.New(rv.Type())
		p.Elem().Set(rv)
		emptyNotNull(p.Elem(), 0)
		v = p.Interface()
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// emptyNotNull replaces the nil slices and maps reachable from v through
// exported fields, pointers and slices with empty ones, which encode as
// [] and {} instead of null. Byte slices are left alone (they encode as
// strings), and so is anything deeper than a report goes.
func emptyNotNull(v reflect.Value, depth int) {
	if depth > 16 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			emptyNotNull(v.Elem(), depth+1)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				emptyNotNull(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return
		}
		if v.IsNil() {
			if v.CanSet() {
				v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			}
			return
		}
		for i := range v.Len() {
			emptyNotNull(v.Index(i), depth+1)
		}
	case reflect.Array:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			for i := range v.Len() {
				emptyNotNull(v.Index(i), depth+1)
			}
		}
	case reflect.Map:
		if v.IsNil() && v.CanSet() {
			v.Set(reflect.MakeMap(v.Type()))
		}
	}
}

// A usageError is a command line that sbuml cannot run as it is: a
// missing or extra argument, an unknown flag or command, flags that
// exclude each other. sbuml exits 2 for it, and 1 for any other failure.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef returns a usageError.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}
