package standin

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestPersistenceAcrossRestart(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PingInterval = time.Minute })
	a, b := e.newSession(), e.newSession()
	e.reply(a.ID, "one")
	_, ch := e.subscribe(a.ID, "")
	e.sessionReply(a.ID, rid1, "two")
	busEvents(t, ch)
	var before Session
	e.callJSON("GET", "/sessions/"+a.ID, nil, 200, &before)

	e.restart()

	var after Session
	e.callJSON("GET", "/sessions/"+a.ID, nil, 200, &after)
	wantTexts := []string{"one", "echo: one", "two", "echo: two"}
	if len(after.Conversation) != len(wantTexts) {
		t.Fatalf("conversation after restart: %+v", after.Conversation)
	}
	for i, m := range after.Conversation {
		if m.Text() != wantTexts[i] {
			t.Errorf("message %d: %q, want %q", i, m.Text(), wantTexts[i])
		}
	}
	bj, _ := json.Marshal(before)
	aj, _ := json.Marshal(after)
	if string(bj) != string(aj) {
		t.Errorf("session changed across the restart:\n%s\n%s", bj, aj)
	}
	var list struct{ Sessions []Session }
	e.callJSON("GET", "/sessions", nil, 200, &list)
	if len(list.Sessions) != 2 {
		t.Errorf("%d sessions after restart", len(list.Sessions))
	}

	// The agent is per process: a turn before resume fails as on goosed.
	if evs := e.reply(b.ID, "x"); len(evs) != 1 || evs[0].Error != "Provider not set" {
		t.Errorf("turn before resume: %+v", evs)
	}
	e.callJSON("POST", "/agent/resume", map[string]any{"session_id": a.ID, "load_model_and_extensions": true}, 200, nil)

	// Event sequence numbers are per process: they start again at 1 and
	// nothing is replayed from before.
	_, ch = e.subscribe(a.ID, "")
	e.sessionReply(a.ID, rid2, "three")
	ids, evs := busEvents(t, ch)
	if ids[0] != 1 || *evs[0].Message.ID != "msg_3" {
		t.Errorf("after restart: first id %d, message %s", ids[0], *evs[0].Message.ID)
	}
	// New sessions continue the day's counter.
	c := e.newSession()
	if c.ID != "20260422_3" {
		t.Errorf("new session after restart: %s", c.ID)
	}

	// On disk: one JSON file per session, no temp files.
	entries, err := os.ReadDir(filepath.Join(e.root, "data", "sessions"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	if strings.Join(names, " ") != "20260422_1.json 20260422_2.json 20260422_3.json" {
		t.Errorf("session dir holds %v", names)
	}
}

func TestCorruptSessionFileRefusesStart(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	e.stop()
	p := filepath.Join(e.root, "data", "sessions", s.ID+".json")
	if err := os.WriteFile(p, []byte(`{"version":1,"session":{"id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	// A leftover temp file from a crash mid-write is swept, not read.
	tmp := filepath.Join(e.root, "data", "sessions", "."+s.ID+".json.tmp-abc")
	os.WriteFile(tmp, []byte("partial"), 0o600)
	_, err := New(e.cfg)
	if err == nil || !strings.Contains(err.Error(), s.ID+".json") {
		t.Fatalf("New with a corrupt session file: %v", err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("the corrupt file was removed: %v", err)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Errorf("the temp file is still there")
	}
	// A file whose id does not match its name is refused too.
	os.WriteFile(p, []byte(`{"version":1,"session":{"id":"20260422_9"}}`), 0o600)
	if _, err := New(e.cfg); err == nil {
		t.Error("New accepted a session file naming another id")
	}
}

// tree lists every path under dir with its size, for before/after checks.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := d.Info()
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+info.Mode().String())
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestHostileInput(t *testing.T) {
	// The stand-in's root sits inside a directory holding files a traversal
	// would reach: none may change, and nothing may appear outside the root.
	outer := t.TempDir()
	for _, name := range []string{"victim.json", "20260422_1.json", "data/victim.json"} {
		os.MkdirAll(filepath.Dir(filepath.Join(outer, name)), 0o755)
		os.WriteFile(filepath.Join(outer, name), []byte("keep"), 0o644)
	}
	e := newEnv(t, func(c *Config) {
		c.DataDir = filepath.Join(outer, "root", "data")
		c.ConfigDir = filepath.Join(outer, "root", "config")
	})
	s := e.newSession()
	e.reply(s.ID, "hi")
	// A symlink planted in the sessions dir is never followed.
	sessions := filepath.Join(outer, "root", "data", "sessions")
	os.Symlink(filepath.Join(outer, "victim.json"), filepath.Join(sessions, "20260422_5.json"))
	before := tree(t, outer)

	t.Run("malformed bodies", func(t *testing.T) {
		um := userMessage("x")
		noMeta := map[string]any{"role": "user", "created": 1, "content": []any{}}
		tests := []struct {
			name, path, ctype string
			body              any
			status            int
			prefix            string
		}{
			{"bad JSON", "/agent/start", "application/json", `{"working_dir":`, 400, "Failed to parse the request body as JSON"},
			{"trailing garbage", "/agent/start", "application/json", `{"working_dir":"/"} x`, 400, "Failed to parse the request body as JSON"},
			{"empty body", "/agent/start", "application/json", ``, 400, "Failed to parse the request body as JSON"},
			{"no content type", "/agent/start", "", `{"working_dir":"/"}`, 415, "Expected request with `Content-Type: application/json`"},
			{"text content type", "/agent/start", "text/plain", `{"working_dir":"/"}`, 415, "Expected request"},
			{"wrong type", "/agent/start", "application/json", `{"working_dir":5}`, 422, "Failed to deserialize the JSON body"},
			{"array", "/agent/start", "application/json", `[]`, 422, "Failed to deserialize the JSON body"},
			{"null", "/agent/start", "application/json", `null`, 422, "Failed to deserialize the JSON body"},
			{"missing field", "/agent/start", "application/json", `{}`, 422, "Failed to deserialize the JSON body into the target type: missing field `working_dir`"},
			{"reply without message", "/reply", "application/json", map[string]any{"session_id": s.ID}, 422, "Failed to deserialize the JSON body into the target type: missing field `user_message`"},
			{"message without metadata", "/reply", "application/json", map[string]any{"session_id": s.ID, "user_message": noMeta}, 422, "Failed to deserialize"},
			{"unknown role", "/reply", "application/json", map[string]any{"session_id": s.ID, "user_message": map[string]any{"role": "robot", "created": 1, "content": []any{}, "metadata": map[string]any{}}}, 422, "Failed to deserialize"},
			{"unknown content", "/reply", "application/json", map[string]any{"session_id": s.ID, "user_message": map[string]any{"role": "user", "created": 1, "content": []any{map[string]any{"type": "bogus"}}, "metadata": map[string]any{}}}, 422, "Failed to deserialize"},
			{"text without text", "/reply", "application/json", map[string]any{"session_id": s.ID, "user_message": map[string]any{"role": "user", "created": 1, "content": []any{map[string]any{"type": "text"}}, "metadata": map[string]any{}}}, 422, "Failed to deserialize"},
			{"fractional created", "/reply", "application/json", map[string]any{"session_id": s.ID, "user_message": map[string]any{"role": "user", "created": 1.5, "content": []any{}, "metadata": map[string]any{}}}, 422, "Failed to deserialize"},
			{"bad override", "/reply", "application/json", map[string]any{"session_id": s.ID, "user_message": um, "override_conversation": []any{1}}, 422, "Failed to deserialize"},
			{"session_id a number", "/reply", "application/json", map[string]any{"session_id": 7, "user_message": um}, 422, "Failed to deserialize"},
			{"resume without flag", "/agent/resume", "application/json", map[string]any{"session_id": s.ID}, 422, "Failed to deserialize the JSON body into the target type: missing field `load_model_and_extensions`"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				req := e.request("POST", tt.path, tt.body)
				req.Header.Del("Content-Type")
				if tt.ctype != "" {
					req.Header.Set("Content-Type", tt.ctype)
				}
				resp := e.send(req)
				var b strings.Builder
				buf := make([]byte, 4096)
				for {
					n, err := resp.Body.Read(buf)
					b.Write(buf[:n])
					if err != nil {
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != tt.status || !strings.HasPrefix(b.String(), tt.prefix) {
					t.Errorf("%d %q, want %d %q", resp.StatusCode, b.String(), tt.status, tt.prefix)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
					t.Errorf("content type %q", ct)
				}
			})
		}
	})

	t.Run("hostile session ids", func(t *testing.T) {
		ids := []string{
			"..", "%2e%2e", "..%2F..%2Fvictim", "..%2Fvictim.json", "20260422_1.json", "20260422_1%00",
			".20260422_1.json.tmp-x", "20260422_0", "20260422_01", "20260422_5", "%2Fetc%2Fpasswd",
			"20260422_1%2F..%2F..%2F..%2Fvictim", strings.Repeat("9", 5000), "20260422_1 ", "%20", "a%5Cb",
		}
		ops := []struct {
			method, suffix string
			body           any
		}{
			{"GET", "", nil},
			{"DELETE", "", nil},
			{"GET", "/events", nil},
			{"GET", "/export", nil},
			{"POST", "/reply", map[string]any{"request_id": rid1, "user_message": userMessage("x")}},
			{"POST", "/cancel", map[string]any{"request_id": rid1}},
		}
		for _, id := range ids {
			for _, op := range ops {
				status, _ := e.call(op.method, "/sessions/"+id+op.suffix, op.body)
				if status != 404 && status != 400 {
					t.Errorf("%s /sessions/%.40s%s: %d, want 400 or 404", op.method, id, op.suffix, status)
				}
			}
			for _, path := range []string{"/agent/resume", "/agent/stop"} {
				status, _ := e.call("POST", path, map[string]any{"session_id": strings.ReplaceAll(id, "%2F", "/"), "load_model_and_extensions": true})
				if status != 404 {
					t.Errorf("%s %q: %d", path, id, status)
				}
			}
			evs := e.reply("../"+id, "x")
			if len(evs) != 1 || evs[0].Type != EventError {
				t.Errorf("/reply session %q: %+v", id, evs)
			}
		}
	})

	if after := tree(t, outer); after != before {
		t.Errorf("files changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, name := range []string{"victim.json", "20260422_1.json", "data/victim.json"} {
		if b, err := os.ReadFile(filepath.Join(outer, name)); err != nil || string(b) != "keep" {
			t.Errorf("%s: %q %v", name, b, err)
		}
	}
	// The session itself is untouched.
	var got Session
	e.callJSON("GET", "/sessions/"+s.ID, nil, 200, &got)
	if len(got.Conversation) != 2 {
		t.Errorf("conversation %d", len(got.Conversation))
	}
	// The planted symlink is not a session after a restart either.
	e.restart()
	if status, _ := e.call("GET", "/sessions/20260422_5", nil); status != 404 {
		t.Errorf("a symlink became a session: %d", status)
	}
}

func TestBodyLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxReplyBytes = 4 << 10; c.MaxImportBytes = 4 << 10 })
	s := e.newSession()
	big := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name, path string
		body       any
		status     int
	}{
		{"start over the 2 MiB default", "/agent/start", map[string]any{"working_dir": big(DefaultMaxBodyBytes)}, 413},
		{"start under it", "/agent/start", map[string]any{"working_dir": big(DefaultMaxBodyBytes - 100)}, 200},
		{"reply over its limit", "/reply", map[string]any{"session_id": s.ID, "user_message": userMessage(big(5 << 10))}, 413},
		{"reply under it", "/reply", map[string]any{"session_id": s.ID, "user_message": userMessage(big(3 << 10))}, 200},
		{"session reply over its limit", "/sessions/" + s.ID + "/reply", map[string]any{"request_id": rid1, "user_message": userMessage(big(5 << 10))}, 413},
		{"import over its limit", "/sessions/import", map[string]any{"json": big(5 << 10)}, 413},
		{"config over the default", "/config/upsert", map[string]any{"key": "k", "value": big(DefaultMaxBodyBytes), "is_secret": false}, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.call("POST", tt.path, tt.body)
			if status != tt.status {
				t.Errorf("%d %.100s, want %d", status, body, tt.status)
			}
			if status == 413 && string(body) != msgTooLarge {
				t.Errorf("body %q", body)
			}
		})
	}
	t.Run("reply default is 50 MiB", func(t *testing.T) {
		e := newEnv(t, nil)
		s := e.newSession()
		text := big(DefaultMaxBodyBytes + 1<<10) // over the default of other routes
		if got := replyText(e.reply(s.ID, text)); got != "echo: "+text {
			t.Errorf("a message over 2 MiB: reply of %d bytes", len(got))
		}
	})
}
