package envd

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// The Filesystem service: stat, mkdir, move, list, remove and directory
// watches, each one agent call made with the request's user (sudo for
// root). The agent resolves every path inside the sandbox; this side only
// makes E2B's relative and ~ paths absolute against the user's home, as
// envd does.

// filesystemService is the service's name in Connect paths.
const filesystemService = "/filesystem.Filesystem/"

func init() { addService(addFilesystem) }

// fsService is the Filesystem service of one Handler: the polling
// watchers are its state.
type fsService struct {
	h        *Handler
	watchers *watcherSet
}

func addFilesystem(h *Handler, mux *http.ServeMux) {
	s := &fsService{h: h, watchers: newWatcherSet(watcherIdle)}
	opts := h.connectOptions()
	unary := func(name string, fn func(context.Context, *fsPathRequest) (*fsEntryResponse, error)) {
		mux.Handle(filesystemService+name, connect.NewUnaryHandler(filesystemService+name,
			func(ctx context.Context, req *connect.Request[fsPathRequest]) (*connect.Response[fsEntryResponse], error) {
				res, err := fn(ctx, req.Msg)
				if err != nil {
					return nil, err
				}
				return connect.NewResponse(res), nil
			}, opts...))
	}
	unary("Stat", s.stat)
	unary("MakeDir", s.makeDir)
	mux.Handle(filesystemService+"Move", connect.NewUnaryHandler(filesystemService+"Move", s.move, opts...))
	mux.Handle(filesystemService+"ListDir", connect.NewUnaryHandler(filesystemService+"ListDir", s.listDir, opts...))
	mux.Handle(filesystemService+"Remove", connect.NewUnaryHandler(filesystemService+"Remove", s.remove, opts...))
	mux.Handle(filesystemService+"WatchDir", connect.NewServerStreamHandler(filesystemService+"WatchDir", s.watchDir, opts...))
	mux.Handle(filesystemService+"CreateWatcher", connect.NewUnaryHandler(filesystemService+"CreateWatcher", s.createWatcher, opts...))
	mux.Handle(filesystemService+"GetWatcherEvents", connect.NewUnaryHandler(filesystemService+"GetWatcherEvents", s.getWatcherEvents, opts...))
	mux.Handle(filesystemService+"RemoveWatcher", connect.NewUnaryHandler(filesystemService+"RemoveWatcher", s.removeWatcher, opts...))
}

// Messages of filesystem.proto, paddock's definitions of their JSON form.

// fileType is filesystem.FileType.
type fileType int32

const (
	fileTypeUnspecified fileType = 0
	fileTypeFile        fileType = 1
	fileTypeDirectory   fileType = 2
	fileTypeSymlink     fileType = 3
)

var fileTypeNames = enumNames{0: "FILE_TYPE_UNSPECIFIED", 1: "FILE_TYPE_FILE", 2: "FILE_TYPE_DIRECTORY", 3: "FILE_TYPE_SYMLINK"}

func (v fileType) MarshalJSON() ([]byte, error) { return fileTypeNames.marshal(int32(v)) }

func (v *fileType) UnmarshalJSON(b []byte) error { return fileTypeNames.decode(b, (*int32)(v)) }

// eventType is filesystem.EventType.
type eventType int32

const (
	eventCreate eventType = 1
	eventWrite  eventType = 2
	eventRemove eventType = 3
	eventRename eventType = 4
	eventChmod  eventType = 5
)

var eventTypeNames = enumNames{0: "EVENT_TYPE_UNSPECIFIED", 1: "EVENT_TYPE_CREATE", 2: "EVENT_TYPE_WRITE",
	3: "EVENT_TYPE_REMOVE", 4: "EVENT_TYPE_RENAME", 5: "EVENT_TYPE_CHMOD"}

func (v eventType) MarshalJSON() ([]byte, error) { return eventTypeNames.marshal(int32(v)) }

func (v *eventType) UnmarshalJSON(b []byte) error { return eventTypeNames.decode(b, (*int32)(v)) }

// entryInfo is filesystem.EntryInfo.
type entryInfo struct {
	Name          string            `json:"name,omitempty"`
	Type          fileType          `json:"type,omitempty"`
	Path          string            `json:"path,omitempty"`
	Size          Int64             `json:"size,omitempty"`
	Mode          uint32            `json:"mode,omitempty"`
	Permissions   string            `json:"permissions,omitempty"`
	Owner         string            `json:"owner,omitempty"`
	Group         string            `json:"group,omitempty"`
	ModifiedTime  *Timestamp        `json:"modifiedTime,omitempty"`
	SymlinkTarget *string           `json:"symlinkTarget,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

// fsPathRequest is StatRequest, MakeDirRequest and RemoveRequest.
type fsPathRequest struct {
	Path string `json:"path"`
}

// fsEntryResponse is StatResponse, MakeDirResponse and MoveResponse.
type fsEntryResponse struct {
	Entry *entryInfo `json:"entry,omitempty"`
}

type moveRequest struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
}

type listDirRequest struct {
	Path  string `json:"path"`
	Depth uint32 `json:"depth,omitempty"`
}

type listDirResponse struct {
	Entries []entryInfo `json:"entries"`
}

// watchRequest is WatchDirRequest and CreateWatcherRequest.
type watchRequest struct {
	Path               string `json:"path"`
	Recursive          bool   `json:"recursive,omitempty"`
	IncludeEntry       bool   `json:"includeEntry,omitempty"`
	AllowNetworkMounts bool   `json:"allowNetworkMounts,omitempty"`
}

type filesystemEvent struct {
	Name  string     `json:"name"`
	Type  eventType  `json:"type,omitempty"`
	Entry *entryInfo `json:"entry,omitempty"`
}

type watchDirResponse struct {
	Start      *struct{}        `json:"start,omitempty"`
	Filesystem *filesystemEvent `json:"filesystem,omitempty"`
	Keepalive  *struct{}        `json:"keepalive,omitempty"`
}

type createWatcherResponse struct {
	WatcherID string `json:"watcherId"`
}

type watcherIDRequest struct {
	WatcherID string `json:"watcherId"`
}

type getWatcherEventsResponse struct {
	Events []filesystemEvent `json:"events"`
}

// homeOf is the home of the request's user: relative paths resolve there.
func homeOf(t *target) string {
	if t.Sudo {
		return "/root"
	}
	return t.Sandbox.RunAs().Home
}

// resolvePath makes a request's path absolute and clean the way envd
// does: "" and "~" are the user's home, "~/x" and relative paths are below
// it. What the cleaned path names is the agent's to resolve, inside the
// sandbox.
func resolvePath(t *target, p string) (string, error) {
	if strings.ContainsRune(p, 0) {
		return "", sandbox.Errorf(sandbox.ErrInvalid, "invalid_path", "path contains NUL")
	}
	home := homeOf(t)
	switch {
	case p == "" || p == "~":
		return home, nil
	case strings.HasPrefix(p, "~/"):
		p = path.Join(home, p[2:])
	case !path.IsAbs(p):
		p = path.Join(home, p)
	}
	return path.Clean(p), nil
}

// entryInfoOf is an agent Entry in EntryInfo's terms: mode is the
// permission bits, permissions the whole mode as Go prints it, as envd
// reports them.
func entryInfoOf(e agent.Entry) *entryInfo {
	info := &entryInfo{
		Name: e.Name, Path: e.Path, Size: Int64(e.Size), Mode: e.Mode & 0o777, Permissions: e.Permissions,
		Owner: e.Owner, Group: e.Group, ModifiedTime: &Timestamp{e.ModTime},
	}
	switch e.Type {
	case agent.EntryFile:
		info.Type = fileTypeFile
	case agent.EntryDir:
		info.Type = fileTypeDirectory
	case agent.EntrySymlink:
		info.Type = fileTypeSymlink
		if e.SymlinkTarget != "" {
			target := e.SymlinkTarget
			info.SymlinkTarget = &target
		}
	default:
		info.Type = fileTypeUnspecified
	}
	return info
}

func (s *fsService) stat(ctx context.Context, req *fsPathRequest) (*fsEntryResponse, error) {
	t := targetOf(ctx)
	p, err := resolvePath(t, req.Path)
	if err != nil {
		return nil, err
	}
	e, err := t.Agent.Stat(ctx, p, t.Sudo)
	if err != nil {
		return nil, err
	}
	return &fsEntryResponse{Entry: entryInfoOf(e)}, nil
}

// makeDir creates a directory and its parents. An existing directory is
// AlreadyExists, as in envd (the SDK answers false).
func (s *fsService) makeDir(ctx context.Context, req *fsPathRequest) (*fsEntryResponse, error) {
	t := targetOf(ctx)
	p, err := resolvePath(t, req.Path)
	if err != nil {
		return nil, err
	}
	switch e, err := t.Agent.Stat(ctx, p, t.Sudo); {
	case err == nil && e.Type == agent.EntryDir:
		return nil, connect.NewError(connect.CodeAlreadyExists, errors.New("directory "+p+" already exists"))
	case err == nil:
		return nil, sandbox.Errorf(sandbox.ErrInvalid, "not_a_directory", "%s exists and is not a directory", p)
	case !errors.Is(err, sandbox.ErrNotFound):
		return nil, err
	}
	if err := t.Agent.Mkdir(ctx, agent.MkdirRequest{Path: p, Sudo: t.Sudo}); err != nil {
		return nil, err
	}
	e, err := t.Agent.Stat(ctx, p, t.Sudo)
	if err != nil {
		return nil, err
	}
	return &fsEntryResponse{Entry: entryInfoOf(e)}, nil
}

func (s *fsService) move(ctx context.Context, req *connect.Request[moveRequest]) (*connect.Response[fsEntryResponse], error) {
	t := targetOf(ctx)
	src, err := resolvePath(t, req.Msg.Source)
	if err != nil {
		return nil, err
	}
	dst, err := resolvePath(t, req.Msg.Destination)
	if err != nil {
		return nil, err
	}
	e, err := t.Agent.Move(ctx, agent.MoveRequest{Source: src, Destination: dst, Sudo: t.Sudo})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&fsEntryResponse{Entry: entryInfoOf(e)}), nil
}

// listDir lists a directory to a depth (0, proto3's default, is 1). Entries
// that are neither files, directories nor symlinks come without a type,
// which the SDKs leave out.
func (s *fsService) listDir(ctx context.Context, req *connect.Request[listDirRequest]) (*connect.Response[listDirResponse], error) {
	t := targetOf(ctx)
	p, err := resolvePath(t, req.Msg.Path)
	if err != nil {
		return nil, err
	}
	depth := int(min(max(req.Msg.Depth, 1), agent.MaxListDepth))
	entries, err := t.Agent.ListDir(ctx, p, depth, t.Sudo)
	if err != nil {
		return nil, err
	}
	res := &listDirResponse{Entries: make([]entryInfo, 0, len(entries))}
	for _, e := range entries {
		res.Entries = append(res.Entries, *entryInfoOf(e))
	}
	return connect.NewResponse(res), nil
}

// remove removes a file, symlink or directory tree. A path that is not
// there is no error, as envd's (os.RemoveAll) is not.
func (s *fsService) remove(ctx context.Context, req *connect.Request[fsPathRequest]) (*connect.Response[empty], error) {
	t := targetOf(ctx)
	p, err := resolvePath(t, req.Msg.Path)
	if err != nil {
		return nil, err
	}
	if err := t.Agent.Remove(ctx, agent.RemoveRequest{Path: p, Sudo: t.Sudo}); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		return nil, err
	}
	return connect.NewResponse(&empty{}), nil
}

// eventOf is an agent watch event in FilesystemEvent's terms; false for
// one E2B has no word for (an overflow: events were lost).
func eventOf(ev agent.WatchEvent) (filesystemEvent, bool) {
	var typ eventType
	switch ev.Type {
	case agent.WatchCreate:
		typ = eventCreate
	case agent.WatchWrite:
		typ = eventWrite
	case agent.WatchRemove:
		typ = eventRemove
	case agent.WatchRename:
		typ = eventRename
	case agent.WatchChmod:
		typ = eventChmod
	default:
		return filesystemEvent{}, false
	}
	return filesystemEvent{Name: ev.Name, Type: typ}, true
}

// openWatch starts an agent watch of a request's directory. The agent
// counts it against the sandbox's watch limit.
func openWatch(ctx context.Context, t *target, req *watchRequest) (*agent.WatchReader, error) {
	p, err := resolvePath(t, req.Path)
	if err != nil {
		return nil, err
	}
	return t.Agent.Watch(ctx, p, req.Recursive, t.Sudo)
}

// pumpWatch reads w's events into a channel until w ends (closed, or the
// directory went) and then closes it. Its caller owns it: closing w ends
// it.
func pumpWatch(w *agent.WatchReader) <-chan agent.WatchEvent {
	out := make(chan agent.WatchEvent, 64)
	go func() {
		defer close(out)
		for {
			ev, err := w.Next()
			if err != nil {
				return
			}
			out <- ev
		}
	}()
	return out
}

// watchDir streams a directory's changes: a start event once the
// directory is watched, then one event per change, with a keepalive
// whenever the stream was quiet for the client's keepalive interval,
// until the client leaves, the call's deadline, or the directory goes.
func (s *fsService) watchDir(ctx context.Context, req *connect.Request[watchRequest], stream *connect.ServerStream[watchDirResponse]) error {
	t := targetOf(ctx)
	w, err := openWatch(ctx, t, req.Msg)
	if err != nil {
		return err
	}
	events := pumpWatch(w)
	defer func() {
		w.Close()
		for range events { // the pump ends once w is closed
		}
	}()
	if err := stream.Send(&watchDirResponse{Start: &struct{}{}}); err != nil {
		return err
	}
	every := keepaliveInterval(req.Header())
	keepalive := time.NewTimer(every)
	defer keepalive.Stop()
	for {
		var res watchDirResponse
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-keepalive.C:
			res.Keepalive = &struct{}{}
		case ev, ok := <-events:
			if !ok {
				return nil // the directory went, or the sandbox stopped
			}
			fe, ok := eventOf(ev)
			if !ok {
				continue
			}
			res.Filesystem = &fe
		}
		if err := stream.Send(&res); err != nil {
			return err
		}
		keepalive.Reset(every)
	}
}

// drainBody reads what is left of a request body, bounded, so the
// connection can carry the next request.
func drainBody(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10)) }
