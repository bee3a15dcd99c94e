//go:build linux

package agent

import (
	"errors"
	"io"
	"io/fs"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// loadUser resolves cfg.ImageUser against the sandbox's etc/passwd and
// etc/group. The agent runs inside the sandbox's mount namespace and opens
// them under its root (RESOLVE_IN_ROOT), so a symlinked /etc/passwd
// resolves as it would for any process of the sandbox, never on the host.
func (s *Server) loadUser() (User, error) {
	if s.cfg.ImageUser == "" {
		return DefaultUser(s.cfg.UserHome), nil
	}
	passwd := s.readUserDB("etc/passwd")
	group := s.readUserDB("etc/group")
	return ResolveUser(s.cfg.ImageUser, passwd, group, s.cfg.UserHome)
}

// readUserDB reads at most MaxUserDBBytes of one of the image's user
// files; a missing, unreadable or odd one (a fifo, a device) reads as
// empty, so only names in it fail to resolve.
func (s *Server) readUserDB(name string) []byte {
	f, err := s.openInRoot(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("read user database", "file", "/"+name, "err", err)
		}
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		s.log.Warn("user database is not a regular file", "file", "/"+name)
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxUserDBBytes+1))
	if err != nil {
		s.log.Warn("read user database", "file", "/"+name, "err", err)
		return nil
	}
	truncated := len(data) > MaxUserDBBytes
	if truncated {
		s.log.Warn("user database truncated", "file", "/"+name, "limit", MaxUserDBBytes)
		data = data[:MaxUserDBBytes]
	}
	return truncateToLines(data, truncated)
}

// usable refuses work in a sandbox whose user could not be resolved: the
// node destroys such a sandbox, and until then nothing may run in it as a
// user it does not have.
func (s *Server) usable() error { return s.userErr }

// userAnswer is the user part of a ping answer.
func (s *Server) userAnswer(info *Info) {
	if s.userErr != nil {
		code := sandbox.CodeOf(s.userErr)
		if code == "" {
			code = CodeUserInvalid
		}
		info.UserError = &UserError{Code: code, Message: s.userErr.Error()}
		return
	}
	u := s.user
	info.User = &u
}
