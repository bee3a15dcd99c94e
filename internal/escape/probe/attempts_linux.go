package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/escape/wire"
)

// attempts collects the tries of one check. Any try that worked makes the
// check escaped; a failed positive control makes it an error; tries the
// kernel could not make (it lacks the feature) count for nothing, and a
// check with nothing tried is skipped.
type attempts struct {
	name    string
	tried   []string // "what: outcome" of every refused try
	escapes []string // evidence
	errs    []string // failed controls
	absent  []string // the kernel lacks it
}

func newAttempts(name string) *attempts { return &attempts{name: name} }

// refused records a try that failed with err.
func (a *attempts) refused(what string, err error) {
	a.tried = append(a.tried, what+": "+errText(err))
}

// worked records a try that succeeded, with the evidence.
func (a *attempts) worked(what, evidence string) {
	a.escapes = append(a.escapes, what+": "+evidence)
}

// call records a try whose success is an escape.
func (a *attempts) call(what string, err error, evidence string) {
	switch {
	case err == nil:
		a.worked(what, evidence)
	case errors.Is(err, unix.ENOSYS):
		a.absent = append(a.absent, what+": ENOSYS")
	default:
		a.refused(what, err)
	}
}

// privileged records a call made with arguments the kernel rejects only
// after its permission check: EPERM (or EACCES) is the refusal; any other
// answer means the caller held the privilege, an escape even though
// nothing was done.
func (a *attempts) privileged(what string, err error) {
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		a.refused(what, err)
	case errors.Is(err, unix.ENOSYS):
		a.absent = append(a.absent, what+": ENOSYS")
	case err == nil:
		a.worked(what, "succeeded")
	default:
		a.worked(what, "past the permission check ("+errText(err)+")")
	}
}

// control records a positive control: err means the check cannot tell.
func (a *attempts) control(what string, err error) bool {
	if err != nil {
		a.errs = append(a.errs, "control "+what+": "+errText(err))
		return false
	}
	return true
}

func (a *attempts) failf(format string, args ...any) {
	a.errs = append(a.errs, fmt.Sprintf(format, args...))
}

// result is the check's verdict; why explains a check with nothing tried.
func (a *attempts) result(why string) wire.Result {
	r := wire.Result{Check: a.name}
	switch {
	case len(a.escapes) > 0:
		r.Status, r.Detail = wire.Escaped, strings.Join(a.escapes, "; ")
	case len(a.errs) > 0:
		r.Status, r.Detail = wire.Error, strings.Join(append(a.errs, a.tried...), "; ")
	case len(a.tried) > 0:
		r.Status, r.Detail = wire.Blocked, strings.Join(a.tried, "; ")
	case len(a.absent) > 0:
		r.Status, r.Detail = wire.Skipped, "the kernel lacks it: "+strings.Join(a.absent, "; ")
	default:
		r.Status, r.Detail = wire.Skipped, why
	}
	return r
}

// errText names an error by its errno where it has one.
func errText(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return fmt.Sprintf("errno %d", int(errno))
	}
	return err.Error()
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

// tempDir makes a scratch directory the caller removes.
func tempDir() (string, error) { return os.MkdirTemp("", "paddock-escape-") }

// preview quotes the start of data as evidence.
func preview(data []byte) string {
	if len(data) > 48 {
		data = data[:48]
	}
	return fmt.Sprintf("%q", data)
}
