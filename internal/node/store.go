package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/paddock-dev/paddock/internal/atomicfile"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// Records keeps the node's sandbox records across restarts: JSON files
// under DataDir by default (Config.Records nil), or the control plane's
// database (internal/daemon). Implementations are safe for
// concurrent use.
type Records interface {
	// Save writes sb, replacing any earlier version, atomically.
	Save(ctx context.Context, sb sandbox.Sandbox) error
	// Remove forgets id; removing an unknown id is not an error.
	Remove(ctx context.Context, id string) error
	// LoadAll returns every saved record, in no particular order. It must
	// fail rather than skip a record it cannot read: a skipped record makes
	// its sandbox look like an orphan, and reconcile destroys orphans.
	LoadAll(ctx context.Context) ([]sandbox.Sandbox, error)
}

// SharedRecords are Records kept where other nodes keep theirs (the
// control plane's database), so that a node can take over the records of
// one that is gone (Manager.Adopt). The JSON files of one host are not.
type SharedRecords interface {
	Records
	// LoadNode returns the records of the node named node, as LoadAll
	// returns this one's.
	LoadNode(ctx context.Context, node string) ([]sandbox.Sandbox, error)
	// Move moves id's record from node from to node to ("" names this
	// node either way) and returns it, only if from still has it:
	// sandbox.ErrConflict if another node has it now, ErrNotFound if it
	// is gone. A record is thus taken once, whoever else tries.
	Move(ctx context.Context, id, from, to string) (sandbox.Sandbox, error)
}

// fileStore keeps one JSON file per sandbox in dir. Files are written to a
// temporary name, fsynced and renamed, so a crash leaves either the old or
// the new record, never a torn one.
type fileStore struct {
	dir string
}

var _ Records = (*fileStore)(nil)

func newFileStore(dir string) (*fileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: create record dir: %w", err)
	}
	return &fileStore{dir: dir}, nil
}

const recordExt = ".json"

func (s *fileStore) path(id string) string { return filepath.Join(s.dir, id+recordExt) }

func (s *fileStore) Save(_ context.Context, sb sandbox.Sandbox) error {
	if !sandbox.ValidID(sb.ID) {
		// IDs become file names: never let a bad one reach the filesystem.
		return fmt.Errorf("node: save record: invalid id %q", sb.ID)
	}
	data, err := json.MarshalIndent(sb, "", "  ")
	if err != nil {
		return fmt.Errorf("node: encode record %s: %w", sb.ID, err)
	}
	if err := atomicfile.WriteFile(s.path(sb.ID), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("node: save record %s: %w", sb.ID, err)
	}
	return nil
}

func (s *fileStore) Remove(_ context.Context, id string) error {
	if !sandbox.ValidID(id) {
		return fmt.Errorf("node: remove record: invalid id %q", id)
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("node: remove record %s: %w", id, err)
	}
	return atomicfile.SyncDir(s.dir)
}

func (s *fileStore) LoadAll(context.Context) ([]sandbox.Sandbox, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("node: read record dir: %w", err)
	}
	var out []sandbox.Sandbox
	for _, ent := range ents {
		name := ent.Name()
		if strings.HasPrefix(name, ".") {
			// An atomicfile temp left by a crash between create and rename:
			// the record it was replacing (if any) is still intact.
			_ = os.Remove(filepath.Join(s.dir, name))
			continue
		}
		if !ent.Type().IsRegular() || !strings.HasSuffix(name, recordExt) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, fmt.Errorf("node: read record %s: %w", name, err)
		}
		var sb sandbox.Sandbox
		if err := json.Unmarshal(data, &sb); err != nil {
			// Refuse to start rather than skip it: a skipped record would make
			// its sandbox look like an orphan, and reconcile destroys orphans.
			return nil, fmt.Errorf("node: decode record %s: %w", name, err)
		}
		if sb.ID+recordExt != name || !sandbox.ValidID(sb.ID) {
			return nil, fmt.Errorf("node: record %s holds id %q", name, sb.ID)
		}
		out = append(out, sb)
	}
	return out, nil
}
