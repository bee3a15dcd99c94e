package sandbox

import (
	"strings"
)

// ExecRequest asks to run one command in a running sandbox. The API, the
// Vercel layer and project activation all build one and hand it to the
// layer that owns sandboxes (internal/node's Manager.Exec), which checks
// it, fills the defaults, starts the command and records it in history.
type ExecRequest struct {
	Cmd  string
	Args []string
	// Cwd is an absolute path inside the sandbox; "" is the sandbox's
	// WorkingDir, or, without one, the agent's default (the user's home).
	Cwd string
	// Env goes over the sandbox's env (the image's under the create
	// request's).
	Env map[string]string
	// SecretEnv goes over Env and is never recorded or logged: a
	// project's secrets.
	SecretEnv map[string]string
	Sudo      bool
	// TimeoutMs kills the command's process group after this many
	// milliseconds; 0 never does. Milliseconds are what both wire APIs
	// and the agent speak, so no conversion can overflow.
	TimeoutMs int64
	// Stdin keeps a pipe to the command's stdin open until it is closed;
	// without it stdin is /dev/null.
	Stdin bool
	// PTY starts the command on a new terminal of this size (its stdin,
	// stdout and stderr); Cmd may then be empty for the user's login
	// shell. Such a command is not waited for.
	PTY *PTYSize
	// Tag is the caller's name for the command, kept on it (at most
	// MaxTagBytes).
	Tag string
	// Wait starts the command and waits for its exit in one round trip to
	// the agent. The caller's context then bounds the wait, never the
	// command, which runs on if the caller leaves.
	Wait bool
}

// Validate checks what a request can be checked for without its sandbox:
// a command, no NUL in argv, an absolute clean-able cwd, env the kernel
// can carry, a timeout that is not negative.
func (r ExecRequest) Validate() error {
	switch {
	case r.Cmd == "" && r.PTY == nil || strings.ContainsRune(r.Cmd, 0):
		return Errorf(ErrInvalid, "invalid_command", "cmd is required and must not contain NUL")
	case r.TimeoutMs < 0:
		return Errorf(ErrInvalid, "invalid_timeout", "timeoutMs must not be negative")
	case r.PTY != nil && !r.PTY.Valid():
		return Errorf(ErrInvalid, "invalid_pty_size", "rows and cols must be within 1..%d", MaxPTYCells)
	case r.PTY != nil && r.Wait:
		return Errorf(ErrInvalid, "invalid_command", "a command on a terminal is not waited for")
	case len(r.Tag) > MaxTagBytes || strings.ContainsRune(r.Tag, 0):
		return Errorf(ErrInvalid, "invalid_tag", "tag is longer than %d bytes or contains NUL", MaxTagBytes)
	}
	for _, a := range r.Args {
		if strings.ContainsRune(a, 0) {
			return Errorf(ErrInvalid, "invalid_command", "args must not contain NUL")
		}
	}
	if r.Cwd != "" {
		if err := ValidatePath(r.Cwd); err != nil {
			return err
		}
	}
	if err := ValidateEnv(r.Env); err != nil {
		return err
	}
	return ValidateEnv(r.SecretEnv)
}

// PTYSize is a terminal's size in character cells.
type PTYSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// MaxPTYCells bounds each of a terminal's dimensions.
const MaxPTYCells = 4096

// MaxTagBytes bounds a command's tag.
const MaxTagBytes = 256

// Valid reports whether both dimensions are within 1..MaxPTYCells.
func (s PTYSize) Valid() bool {
	return s.Rows >= 1 && s.Cols >= 1 && s.Rows <= MaxPTYCells && s.Cols <= MaxPTYCells
}

// ValidateEnv refuses what execve's environment block cannot carry
// faithfully: an empty name, a name with '=' or NUL (it would split
// differently), a value with NUL (it would be cut short). It is the one
// env check of every layer: sandbox create, command start, the API's and
// the Vercel layer's request decoding, and the agent's own defence.
func ValidateEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return Errorf(ErrInvalid, "invalid_env", "environment variable name %q is not valid", k)
		}
		if strings.ContainsRune(v, 0) {
			return Errorf(ErrInvalid, "invalid_env", "environment variable %q has a NUL byte in its value", k)
		}
	}
	return nil
}

// maxPath is the longest path inside a sandbox a request may name, as
// Linux's PATH_MAX.
const maxPath = 4096

// ValidatePath checks a path inside a sandbox named by a request:
// absolute, without NUL or "..", at most 4096 bytes. Callers clean it
// (path.Clean) after; the agent checks again where it opens files.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return Errorf(ErrInvalid, "invalid_path", "path is required")
	case !strings.HasPrefix(p, "/"):
		return Errorf(ErrInvalid, "invalid_path", "path %q must be absolute", p)
	case strings.ContainsRune(p, 0):
		return Errorf(ErrInvalid, "invalid_path", "path contains a NUL byte")
	case len(p) > maxPath:
		return Errorf(ErrInvalid, "invalid_path", "path is longer than %d bytes", maxPath)
	}
	for part := range strings.SplitSeq(p, "/") {
		if part == ".." {
			return Errorf(ErrInvalid, "invalid_path", "path %q must not contain ..", p)
		}
	}
	return nil
}
