package control

import (
	"errors"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// errMessage is what a user sees of err: the first *sandbox.Error's
// message (wrapped causes may name host paths), else the whole text.
func errMessage(err error) string {
	var e *sandbox.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}
