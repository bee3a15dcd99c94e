package envd

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// watchStream opens WatchDir for one sandbox as its user.
func watchStream(ctx context.Context, c *fsClient, req *watchRequest, hdr http.Header) (*connect.ServerStreamForClient[watchDirResponse], error) {
	cl := connect.NewClient[watchRequest, watchDirResponse](c.hc, c.url+"WatchDir", connect.WithCodec(codec{}))
	r := connect.NewRequest(req)
	for k, v := range c.header {
		r.Header()[k] = v
	}
	for k, v := range hdr {
		r.Header()[k] = v
	}
	return cl.CallServerStream(ctx, r)
}

// eventKey is an event as "type name" for comparisons.
func eventKey(ev filesystemEvent) string {
	name, _ := eventTypeNames[int32(ev.Type)]
	return strings.TrimPrefix(name, "EVENT_TYPE_") + " " + ev.Name
}

func TestWatchDir(t *testing.T) {
	e, root := newFSEnv(t)
	for _, h2c := range []bool{false, true} {
		t.Run(fmt.Sprint("h2c=", h2c), func(t *testing.T) {
			ctx := fsCtx(t)
			dir := fmt.Sprint("watched-", h2c)
			userDir(t, root, "home/user/"+dir)
			c := e.fsClient(t, h2c, sbA, "user")
			s, err := watchStream(ctx, c, &watchRequest{Path: dir, Recursive: true}, http.Header{HeaderKeepalive: {"1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !s.Receive() || s.Msg().Start == nil {
				t.Fatalf("first message %+v, %v: want start", s.Msg(), s.Err())
			}
			// Changes made after the start event are all seen.
			e.upload(t, sbA, "user", dir+"/new.txt", "data")
			if _, err := fsCall[fsPathRequest, fsEntryResponse](ctx, c, "MakeDir", &fsPathRequest{Path: dir + "/sub"}); err != nil {
				t.Fatal(err)
			}
			e.upload(t, sbA, "user", dir+"/sub/inner", "x")
			if _, err := fsCall[fsPathRequest, empty](ctx, c, "Remove", &fsPathRequest{Path: dir + "/new.txt"}); err != nil {
				t.Fatal(err)
			}
			want := []string{"CREATE new.txt", "WRITE new.txt", "CREATE sub", "CREATE sub/inner", "REMOVE new.txt"}
			var seen []string
			keepalives := 0
			for len(want) > 0 && s.Receive() {
				m := s.Msg()
				switch {
				case m.Keepalive != nil:
					keepalives++
				case m.Filesystem != nil:
					k := eventKey(*m.Filesystem)
					seen = append(seen, k)
					if i := slices.Index(want, k); i >= 0 {
						want = slices.Delete(want, i, i+1)
					}
				}
			}
			if len(want) > 0 {
				t.Fatalf("missing events %v; saw %v (stream: %v)", want, seen, s.Err())
			}
			// Quiet: a keepalive comes at the asked interval.
			for keepalives == 0 && s.Receive() {
				if s.Msg().Keepalive != nil {
					keepalives++
				}
			}
			if keepalives == 0 {
				t.Errorf("no keepalive: %v", s.Err())
			}
		})
	}
	t.Run("errors", func(t *testing.T) {
		ctx := fsCtx(t)
		c := e.fsClient(t, false, sbA, "user")
		os.WriteFile(filepath.Join(root, "home/user/plain"), nil, 0o644)
		for path, code := range map[string]connect.Code{"missing": connect.CodeNotFound, "plain": connect.CodeInvalidArgument, "/root": connect.CodePermissionDenied} {
			s, err := watchStream(ctx, c, &watchRequest{Path: path}, nil)
			if err == nil {
				for s.Receive() {
				}
				err = s.Err()
				s.Close()
			}
			if connect.CodeOf(err) != code {
				t.Errorf("watch %s: %v, want %v", path, err, code)
			}
		}
	})
}

func TestPollingWatchers(t *testing.T) {
	e, root := newFSEnv(t)
	ctx := fsCtx(t)
	c := e.fsClient(t, false, sbA, "user")
	userDir(t, root, "home/user/w")

	cw, err := fsCall[watchRequest, createWatcherResponse](ctx, c, "CreateWatcher", &watchRequest{Path: "w"})
	if err != nil {
		t.Fatal(err)
	}
	e.upload(t, sbA, "user", "w/a", "1")
	if _, err := fsCall[moveRequest, fsEntryResponse](ctx, c, "Move", &moveRequest{Source: "w/a", Destination: "w/b"}); err != nil {
		t.Fatal(err)
	}
	want := []string{"CREATE a", "WRITE a", "RENAME a", "CREATE b"}
	var seen []string
	for deadline := time.Now().Add(10 * time.Second); len(seen) < len(want) && time.Now().Before(deadline); {
		res, err := fsCall[watcherIDRequest, getWatcherEventsResponse](ctx, c, "GetWatcherEvents", &watcherIDRequest{WatcherID: cw.WatcherID})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range res.Events {
			if ev.Type != eventChmod { // the write's chown and chmod
				seen = append(seen, eventKey(ev))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Equal(seen, want) {
		t.Errorf("events %v, want %v", seen, want)
	}
	// Another sandbox does not see it.
	_, err = fsCall[watcherIDRequest, getWatcherEventsResponse](ctx, e.fsClient(t, false, sbB, "user"), "GetWatcherEvents", &watcherIDRequest{WatcherID: cw.WatcherID})
	wantConnectCode(t, err, connect.CodeNotFound)
	if _, err := fsCall[watcherIDRequest, empty](ctx, c, "RemoveWatcher", &watcherIDRequest{WatcherID: cw.WatcherID}); err != nil {
		t.Fatal(err)
	}
	_, err = fsCall[watcherIDRequest, getWatcherEventsResponse](ctx, c, "GetWatcherEvents", &watcherIDRequest{WatcherID: cw.WatcherID})
	wantConnectCode(t, err, connect.CodeNotFound)
	_, err = fsCall[watchRequest, createWatcherResponse](ctx, c, "CreateWatcher", &watchRequest{Path: "missing"})
	wantConnectCode(t, err, connect.CodeNotFound)

	// Bounded per sandbox; a removed one frees its place.
	var ids []string
	for range maxWatchersPerSandbox {
		cw, err := fsCall[watchRequest, createWatcherResponse](ctx, c, "CreateWatcher", &watchRequest{Path: "w"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, cw.WatcherID)
	}
	_, err = fsCall[watchRequest, createWatcherResponse](ctx, c, "CreateWatcher", &watchRequest{Path: "w"})
	wantConnectCode(t, err, connect.CodeResourceExhausted)
	if _, err := fsCall[watcherIDRequest, empty](ctx, c, "RemoveWatcher", &watcherIDRequest{WatcherID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := fsCall[watchRequest, createWatcherResponse](ctx, c, "CreateWatcher", &watchRequest{Path: "w"}); err != nil {
		t.Errorf("after a remove: %v", err)
	}
}

// TestWatcherExpires: a watcher nobody polls goes, and its directory's
// removal ends one after its last events are collected (polled more often
// than its idle time, so only the removal can end it).
func TestWatcherExpires(t *testing.T) {
	defer func(d time.Duration) { watcherIdle = d }(watcherIdle)
	watcherIdle = 100 * time.Millisecond
	e, root := newFSEnv(t)
	ctx := fsCtx(t)
	c := e.fsClient(t, false, sbA, "user")
	userDir(t, root, "home/user/w")
	cw, err := fsCall[watchRequest, createWatcherResponse](ctx, c, "CreateWatcher", &watchRequest{Path: "w"})
	if err != nil {
		t.Fatal(err)
	}
	poll := func(id string) error {
		_, err := fsCall[watcherIDRequest, getWatcherEventsResponse](ctx, c, "GetWatcherEvents", &watcherIDRequest{WatcherID: id})
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); poll(cw.WatcherID) == nil; {
		if time.Now().After(deadline) {
			t.Fatal("watcher did not expire")
		}
		time.Sleep(300 * time.Millisecond) // past the idle time: no poll keeps it
	}

	cw, err = fsCall[watchRequest, createWatcherResponse](ctx, c, "CreateWatcher", &watchRequest{Path: "w"})
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(root, "home/user/w"))
	var last error
	for deadline := time.Now().Add(10 * time.Second); last == nil && time.Now().Before(deadline); {
		last = poll(cw.WatcherID)
		time.Sleep(20 * time.Millisecond)
	}
	wantConnectCode(t, last, connect.CodeNotFound)
}
