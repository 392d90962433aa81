package sbuml

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sbuml/sbuml/internal/atomicfile"
	"github.com/sbuml/sbuml/objects"
)

// headFile, in a machine directory, records the snapshot the machine
// continues from and the branch its commits go to.
const headFile = "sbuml-head.json"

// machineHead is what a machine directory records of the machine's place
// in history.
type machineHead struct {
	// Snapshot is the machine's last snapshot, automatic or not, or the
	// one it was checked out from: the parent of its next commit.
	Snapshot objects.ID `json:"snapshot"`
	// Auto says Snapshot is an automatic snapshot; Base is then the
	// machine's last snapshot that is not (Zero: none), which its branch
	// is expected at and automatic snapshots take as parent. Otherwise
	// Snapshot is that snapshot.
	Auto   bool       `json:"auto,omitempty"`
	Base   objects.ID `json:"base,omitzero"`
	Branch string     `json:"branch"`
	// Frozen says the machine has not run since Snapshot was saved
	// from it (commit -f): its device state is Snapshot's.
	Frozen bool `json:"frozen,omitempty"`
	// Child is the machine's number among the machines checked out of
	// Snapshot's ckpt() (see claimChild), 0 for others.
	Child int `json:"child,omitempty"`
	// Answers holds the answers the machine owes to ckpt() requests of
	// its guest, newest first: 0 for a ckpt() this machine took, Child
	// for the one its snapshot was taken by. A request sent again (the
	// guest's agent resends unanswered requests whenever its channel
	// comes back) gets the same answer and no second snapshot.
	Answers []ckptAnswer `json:"answers,omitempty"`
}

// ckptAnswer is the answer to one ckpt() request.
type ckptAnswer struct {
	Request string `json:"request"` // the request ID, in hex
	Answer  int    `json:"answer"`
}

// base returns the snapshot the machine's branch should be at.
func (h machineHead) base() objects.ID {
	if h.Auto {
		return h.Base
	}
	return h.Snapshot
}

// maxAnswers bounds the answers a head keeps: the guest resends only the
// requests it has no answer to, which are the newest.
const maxAnswers = 32

// answered returns the answer recorded for a ckpt request.
func (h machineHead) answered(request uint64) (int, bool) {
	for _, a := range h.Answers {
		if a.Request == requestKey(request) {
			return a.Answer, true
		}
	}
	return 0, false
}

// withAnswer returns h recording answer for request as the newest.
func (h machineHead) withAnswer(request uint64, answer int) machineHead {
	as := []ckptAnswer{{Request: requestKey(request), Answer: answer}}
	for _, a := range h.Answers {
		if len(as) < maxAnswers && a.Request != as[0].Request {
			as = append(as, a)
		}
	}
	h.Answers = as
	return h
}

// requestKey is how a request ID is written: in hex, as in labels.
func requestKey(request uint64) string { return strconv.FormatUint(request, 16) }

func readHead(dir string) (machineHead, error) {
	var h machineHead
	b, err := os.ReadFile(filepath.Join(dir, headFile))
	if errors.Is(err, os.ErrNotExist) {
		return h, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &h)
	}
	if err != nil {
		return h, fmt.Errorf("read %s: %w", filepath.Join(dir, headFile), err)
	}
	return h, nil
}

func writeHead(dir string, h machineHead) error {
	b, _ := json.MarshalIndent(h, "", "  ")
	return atomicfile.WriteFile(filepath.Join(dir, headFile), append(b, '\n'), 0o644)
}
