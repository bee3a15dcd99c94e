package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/api"
)

// TestMain lets a test run this binary as the paddock CLI, in a process
// of its own on a terminal the test holds.
func TestMain(m *testing.M) {
	if os.Getenv("PADDOCK_TEST_CLI") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// fakeTerminal is the API of one sandbox with one terminal session: it
// echoes what is typed, answers the line "size" with the terminal's size
// and "exit N" by ending with N. The first output stream is cut after one
// line, as a dropped connection would.
type fakeTerminal struct {
	mu      sync.Mutex
	started api.PTYRequest
	size    api.PTYSize
	log     []api.PTYOutput // every line, Offset = index+1
	line    []byte
	streams int
	changed chan struct{}
}

func (f *fakeTerminal) printLocked(data []byte, exit *api.Command) {
	f.log = append(f.log, api.PTYOutput{Data: data, Exit: exit, Offset: int64(len(f.log) + 1)})
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeTerminal) handler() http.Handler {
	mux := http.NewServeMux()
	cmd := api.Command{ID: "cmd-1", SandboxID: "sb1", Status: api.CommandRunning}
	mux.HandleFunc("POST /api/v1/sandboxes/sb1/pty", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewDecoder(r.Body).Decode(&f.started) //nolint:errcheck
		f.size = api.PTYSize{Rows: f.started.Rows, Cols: f.started.Cols}
		c := cmd
		c.PTY = &f.size
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(c) //nolint:errcheck
	})
	mux.HandleFunc("POST /api/v1/sandboxes/sb1/pty/cmd-1/resize", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewDecoder(r.Body).Decode(&f.size) //nolint:errcheck
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/sandboxes/sb1/pty/cmd-1/input", func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range data {
			if c != '\r' {
				f.line = append(f.line, c)
				f.printLocked([]byte{c}, nil)
				continue
			}
			f.printLocked([]byte("\r\n"), nil)
			line := string(f.line)
			f.line = nil
			switch {
			case line == "size":
				f.printLocked(fmt.Appendf(nil, "rows=%d cols=%d\r\n", f.size.Rows, f.size.Cols), nil)
			case strings.HasPrefix(line, "exit "):
				code, _ := strconv.Atoi(strings.TrimPrefix(line, "exit "))
				done := cmd
				done.Status, done.ExitCode = api.CommandExited, &code
				f.printLocked(nil, &done)
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/v1/sandboxes/sb1/pty/cmd-1/output", func(w http.ResponseWriter, r *http.Request) {
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		f.mu.Lock()
		f.streams++
		cut := f.streams == 1
		f.mu.Unlock()
		w.Header().Set("Content-Type", api.ContentTypeNDJSON)
		enc := json.NewEncoder(w)
		for {
			f.mu.Lock()
			lines, ch := f.log[min(off, len(f.log)):], f.changed
			f.mu.Unlock()
			for _, l := range lines {
				enc.Encode(l) //nolint:errcheck
				w.(http.Flusher).Flush()
				off++
				if l.Exit != nil || cut {
					return
				}
			}
			select {
			case <-ch:
			case <-r.Context().Done():
				return
			}
		}
	})
	return mux
}

// screen collects what the test's terminal shows.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func (s *screen) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the screen never showed %q: %q", want, s.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShellOnATerminal(t *testing.T) {
	f := &fakeTerminal{changed: make(chan struct{})}
	hs := httptest.NewServer(f.handler())
	t.Cleanup(hs.Close)

	cmd := exec.Command(os.Args[0], "sandbox", "shell", "sb1")
	cmd.Env = append(os.Environ(), "PADDOCK_TEST_CLI=1", "PADDOCK_URL="+hs.URL, "PADDOCK_TOKEN=t", "TERM=vt100")
	ptm, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 90})
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	// On a failure, the CLI must not outlive the test (it holds a stream
	// open, so the server's Close would wait for it).
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var sc screen
	copied := make(chan struct{})
	go func() { defer close(copied); _, _ = io.Copy(&sc, ptm) }()
	typeLine := func(s string) {
		t.Helper()
		if _, err := ptm.Write([]byte(s + "\r")); err != nil {
			t.Fatal(err)
		}
	}

	// Typing before the CLI made the terminal raw would go through its
	// line discipline (echoed locally, \r turned into \n), as it does for a
	// person who types that fast: wait for raw mode, as the CLI's first act.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tio, err := unix.IoctlGetTermios(int(ptm.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the CLI never put the terminal in raw mode")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The first line reaches the screen through the stream the server
	// cuts; the rest through the reconnection, nothing twice.
	typeLine("size")
	sc.waitFor(t, "rows=30 cols=90")
	if n := strings.Count(sc.String(), "size"); n != 1 {
		t.Errorf("the echo of \"size\" shows %d times: %q", n, sc.String())
	}
	f.mu.Lock()
	started, streams := f.started, f.streams
	f.mu.Unlock()
	if started.Rows != 30 || started.Cols != 90 || started.Env["TERM"] != "vt100" || started.Cmd != "" {
		t.Errorf("start request: %+v", started)
	}
	if streams < 2 {
		t.Errorf("the CLI did not reconnect to the output (%d streams)", streams)
	}

	// Raw mode: a typed ^C is input for the session, not a signal for paddock.
	if _, err := ptm.Write([]byte{0x03}); err != nil {
		t.Fatal(err)
	}
	if err := pty.Setsize(ptm, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		size := f.size
		f.mu.Unlock()
		if size == (api.PTYSize{Rows: 40, Cols: 120}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resize never reached the session: %+v", size)
		}
		time.Sleep(10 * time.Millisecond)
	}
	typeLine("")
	typeLine("size")
	sc.waitFor(t, "rows=40 cols=120")

	typeLine("exit 3")
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("exit: %v, want code 3; screen %q", err, sc.String())
	}
	ptm.Close()
	<-copied
}
