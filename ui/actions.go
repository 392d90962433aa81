package ui

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/objects"
	"github.com/sbuml/sbuml/refs"
)

// The bodies of the actions (POST /api/NAME). Machines are named as on
// the command line: a name, or the directory of a machine kept elsewhere.
type (
	bootRequest struct {
		Machine string `json:"machine"`
		Base    string `json:"base"`
		Memory  int64  `json:"memory"`
		CPUs    int    `json:"cpus"`
		Display string `json:"display"`
	}
	commitRequest struct {
		Machine  string `json:"machine"`
		Message  string `json:"message"`
		Freeze   bool   `json:"freeze"`
		Continue bool   `json:"continue"`
		Branch   string `json:"branch"`
	}
	checkoutRequest struct {
		Snapshot string `json:"snapshot"`
		Machine  string `json:"machine"`
		Continue bool   `json:"continue"`
	}
	rewindRequest struct {
		Machine  string `json:"machine"`
		Snapshot string `json:"snapshot"`
	}
	machineRequest struct {
		Machine string `json:"machine"`
	}
	refRequest struct {
		Name     string `json:"name"`
		Snapshot string `json:"snapshot"`
	}
	deleteRefRequest struct {
		// Ref is the full name: refs/heads/NAME or refs/tags/NAME.
		Ref string `json:"ref"`
	}
	gcRequest struct {
		DryRun bool `json:"dry_run"`
	}
)

// machineResult answers the actions that change a machine's run state.
type machineResult struct {
	Machine string `json:"machine"`
	State   string `json:"state"`
}

// refResult answers tag, branch and delete-ref.
type refResult struct {
	Ref string     `json:"ref"`
	ID  objects.ID `json:"id"`
}

// actions returns the actions of the page by name, each calling what the
// command of the same name calls.
func (s *Server) actions() map[string]actionFunc {
	return map[string]actionFunc{
		"boot":       s.boot,
		"commit":     commit,
		"checkout":   s.checkout,
		"rewind":     s.rewind,
		"freeze":     runState("frozen", (*sbuml.Scrapbook).Freeze),
		"continue":   runState("running", (*sbuml.Scrapbook).Continue),
		"halt":       runState("halted", (*sbuml.Scrapbook).Halt),
		"tag":        createRef("tag", "refs/tags/"),
		"branch":     createRef("branch", "refs/heads/"),
		"delete-ref": deleteRef,
		"gc":         gc,
	}
}

func (s *Server) boot(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
	var req bootRequest
	if err := decode(&req); err != nil {
		return nil, err
	}
	opts := sbuml.BootOptions{Base: req.Base, Memory: req.Memory, CPUs: req.CPUs, Display: req.Display, Accel: s.opts.Accel}
	if opts.Base == "" {
		opts.Base = sbuml.DefaultImage
	}
	m, err := sb.Boot(ctx, req.Machine, opts)
	if m != nil {
		m.Close()
	}
	if err != nil {
		return nil, err
	}
	return machineResult{Machine: req.Machine, State: "running"}, nil
}

func commit(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
	var req commitRequest
	if err := decode(&req); err != nil {
		return nil, err
	}
	return sb.Commit(ctx, req.Machine, sbuml.CommitOptions{Message: req.Message, Freeze: req.Freeze, Continue: req.Continue, Branch: req.Branch})
}

func (s *Server) checkout(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
	var req checkoutRequest
	if err := decode(&req); err != nil {
		return nil, err
	}
	return sb.Checkout(ctx, req.Snapshot, req.Machine, sbuml.CheckoutOptions{Continue: req.Continue, Accel: s.opts.Accel})
}

func (s *Server) rewind(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
	var req rewindRequest
	if err := decode(&req); err != nil {
		return nil, err
	}
	return sb.Rewind(ctx, req.Machine, req.Snapshot, sbuml.CheckoutOptions{Accel: s.opts.Accel})
}

// runState makes the action that changes a machine's run state with
// change, as sbuml freeze, continue and halt do.
func runState(done string, change func(*sbuml.Scrapbook, context.Context, string) error) actionFunc {
	return func(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
		var req machineRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if err := change(sb, ctx, req.Machine); err != nil {
			return nil, err
		}
		return machineResult{Machine: req.Machine, State: done}, nil
	}
}

// createRef makes the action that creates a branch or tag, as sbuml
// branch NAME SNAPSHOT and sbuml tag NAME SNAPSHOT do.
func createRef(kind, prefix string) actionFunc {
	return func(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
		var req refRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if err := refs.ValidateShortName(req.Name); err != nil {
			return nil, badRequest{fmt.Errorf("%s: %w", kind, err)}
		}
		if req.Snapshot == "" {
			return nil, badRequest{fmt.Errorf("%s %s: name the snapshot", kind, req.Name)}
		}
		id, err := sb.CreateRef(ctx, prefix+req.Name, req.Snapshot, sbuml.RefOptions{})
		if errors.Is(err, refs.ErrConflict) {
			return nil, fmt.Errorf("%s %s already exists: %w", kind, req.Name, err)
		}
		if err != nil {
			return nil, err
		}
		return refResult{Ref: prefix + req.Name, ID: id}, nil
	}
}

func deleteRef(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
	var req deleteRefRequest
	if err := decode(&req); err != nil {
		return nil, err
	}
	kind := "branch"
	if strings.HasPrefix(req.Ref, "refs/tags/") {
		kind = "tag"
	}
	old, err := sb.DeleteRef(req.Ref, sbuml.RefOptions{Why: kind + " -d"})
	if err != nil {
		return nil, err
	}
	return refResult{Ref: req.Ref, ID: old}, nil
}

func gc(ctx context.Context, sb *sbuml.Scrapbook, decode func(any) error) (any, error) {
	var req gcRequest
	if err := decode(&req); err != nil {
		return nil, err
	}
	return sb.Gc(ctx, sbuml.GcOptions{DryRun: req.DryRun})
}
