package standin

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Session ids are goose's: the UTC date, an underscore and a per-day
// counter (20260422_1). Anything else is no session, so no name that
// reaches the file system comes from a client.
var sessionIDPattern = regexp.MustCompile(`^[0-9]{8}_[1-9][0-9]{0,8}$`)

func validSessionID(id string) bool { return sessionIDPattern.MatchString(id) }

// fileVersion is the version of the session file format.
const fileVersion = 1

// sessionFile is one session on disk: <data>/sessions/<id>.json.
type sessionFile struct {
	Version int     `json:"version"`
	Session Session `json:"session"`
}

// dirStore keeps files in one directory, written atomically: a temp file
// in the same directory, fsync, rename over the target, fsync of the
// directory. Every access goes through an os.Root on that directory, so no
// name (and no symlink planted in it) resolves outside it.
type dirStore struct {
	root *os.Root
}

func openDirStore(dir string) (*dirStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	d := &dirStore{root: root}
	// Temp files left by a crash mid-write: the target they were to
	// replace is still whole.
	entries, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		root.Close()
		return nil, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			_ = root.Remove(e.Name())
		}
	}
	return d, nil
}

func (d *dirStore) close() error { return d.root.Close() }

// write replaces name with data atomically and durably.
func (d *dirStore) write(name string, data []byte) error {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := "." + name + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.root.Rename(tmp, name)
	}
	if err != nil {
		_ = d.root.Remove(tmp)
		return err
	}
	return d.syncDir()
}

// remove deletes name; a missing file is not an error.
func (d *dirStore) remove(name string) error {
	if err := d.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return d.syncDir()
}

func (d *dirStore) read(name string) ([]byte, error) { return d.root.ReadFile(name) }

func (d *dirStore) syncDir() error {
	f, err := d.root.Open(".")
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// sessionStore is the sessions directory.
type sessionStore struct{ dirStore }

func openSessionStore(dir string) (*sessionStore, error) {
	d, err := openDirStore(dir)
	if err != nil {
		return nil, err
	}
	return &sessionStore{*d}, nil
}

func (s *sessionStore) save(sess *Session) error {
	if !validSessionID(sess.ID) {
		return fmt.Errorf("refusing to save session with id %q", sess.ID)
	}
	c := *sess
	c.MessageCount = len(c.Conversation)
	data, err := json.Marshal(sessionFile{Version: fileVersion, Session: c})
	if err != nil {
		return err
	}
	return s.write(sess.ID+".json", data)
}

func (s *sessionStore) delete(id string) error {
	if !validSessionID(id) {
		return nil
	}
	return s.remove(id + ".json")
}

// load reads every session. A file that cannot be read is an error: the
// server refuses to start rather than hand out its id again and overwrite it.
func (s *sessionStore) load() (map[string]*Session, error) {
	entries, err := fs.ReadDir(s.root.FS(), ".")
	if err != nil {
		return nil, err
	}
	out := map[string]*Session{}
	for _, e := range entries {
		name := e.Name()
		id, ok := strings.CutSuffix(name, ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		if !validSessionID(id) || !e.Type().IsRegular() {
			continue // not ours
		}
		data, err := s.read(name)
		if err != nil {
			return nil, fmt.Errorf("session file %s: %w", name, err)
		}
		var f sessionFile
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("session file %s: %w", name, err)
		}
		if f.Version != fileVersion || f.Session.ID != id {
			return nil, fmt.Errorf("session file %s: version %d, id %q: not a session file of this stand-in", name, f.Version, f.Session.ID)
		}
		sess := f.Session
		sess.MessageCount = len(sess.Conversation)
		out[id] = &sess
	}
	return out, nil
}

// nextSessionID is goose's rule: the day's largest counter plus one.
func nextSessionID(day string, ids iter.Seq[string]) string {
	n := 0
	for id := range ids {
		d, num, _ := strings.Cut(id, "_")
		if d != day {
			continue
		}
		if v, err := strconv.Atoi(num); err == nil && v > n {
			n = v
		}
	}
	return day + "_" + strconv.Itoa(n+1)
}
