package standin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestStatusAndFeaturesNeedNoSecret(t *testing.T) {
	e := newEnv(t, nil)
	for _, tt := range []struct {
		path, ctype, body string
	}{
		{"/status", "text/plain; charset=utf-8", "ok"},
		{"/features", "application/json", `{"features":{"code-mode":false,"local-inference":false}}`},
	} {
		resp, err := http.Get(e.ts.URL + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tt.ctype || b.String() != tt.body {
			t.Errorf("GET %s: %d %q %q", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), b.String())
		}
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	routes := []struct{ method, path string }{
		{"GET", "/sessions"},
		{"GET", "/sessions/" + s.ID},
		{"DELETE", "/sessions/" + s.ID},
		{"GET", "/sessions/" + s.ID + "/events"},
		{"GET", "/sessions/" + s.ID + "/export"},
		{"POST", "/sessions/" + s.ID + "/reply"},
		{"POST", "/sessions/" + s.ID + "/cancel"},
		{"POST", "/sessions/import"},
		{"POST", "/agent/start"},
		{"POST", "/agent/resume"},
		{"POST", "/agent/stop"},
		{"POST", "/agent/update_provider"},
		{"POST", "/reply"},
		{"POST", "/config/read"},
		{"POST", "/config/upsert"},
		{"GET", "/no/such/route"},
		{"GET", "/sessions/../status"},
	}
	keys := []struct {
		name   string
		header []string // nil: no header
	}{
		{"no secret", nil},
		{"wrong secret", []string{"wrong"}},
		{"empty secret", []string{""}},
		{"secret with a suffix", []string{testSecret + "x"}},
		{"secret prefix", []string{testSecret[:3]}},
		{"lower-case header name, wrong value", []string{"S3CRET"}},
	}
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			for _, r := range routes {
				req := e.request(r.method, r.path, `{"working_dir":"/x"}`)
				req.Header.Del(SecretHeader)
				for _, v := range k.header {
					req.Header.Set(SecretHeader, v)
				}
				resp := e.send(req)
				var b bytes.Buffer
				_, _ = b.ReadFrom(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || b.Len() != 0 {
					t.Errorf("%s %s: %d %q, want 401 with an empty body", r.method, r.path, resp.StatusCode, b.String())
				}
			}
		})
	}
	// Nothing was done by the refused requests.
	e.callJSON("GET", "/sessions/"+s.ID, nil, 200, nil)

	t.Run("CORS preflight needs no secret", func(t *testing.T) {
		req, _ := http.NewRequest("OPTIONS", e.ts.URL+"/reply", nil)
		req.Header.Set("Origin", "http://example.com")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp := e.send(req)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			resp.Header.Get("Access-Control-Allow-Methods") != "*" || resp.Header.Get("Access-Control-Allow-Headers") != "*" {
			t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("no secret configured: nobody gets in", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.Secret = "" })
		for _, v := range []string{"", "test", testSecret} {
			req := e.request("GET", "/sessions", nil)
			req.Header.Set(SecretHeader, v)
			resp := e.send(req)
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("secret %q: %d", v, resp.StatusCode)
			}
		}
	})
}

var sessionIDRe = regexp.MustCompile(`^20260422_[0-9]+$`)

func TestAgentStartResumeStop(t *testing.T) {
	e := newEnv(t, nil)
	// The wire shape of a new session, field by field.
	status, data := e.call("POST", "/agent/start", map[string]any{"working_dir": "/work/project", "recipe": nil})
	if status != 200 {
		t.Fatalf("start: %d %s", status, data)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"working_dir": `"/work/project"`, "name": `"New Chat"`, "user_set_name": "false", "session_type": `"user"`,
		"extension_data": "{}", "conversation": "null", "message_count": "0", "goose_mode": `"auto"`,
		"total_tokens": "null", "input_tokens": "null", "output_tokens": "null", "accumulated_total_tokens": "null",
		"accumulated_input_tokens": "null", "accumulated_output_tokens": "null", "schedule_id": "null",
		"recipe": "null", "user_recipe_values": "null", "provider_name": "null", "model_config": "null", "thread_id": "null",
	}
	for k, v := range want {
		if string(raw[k]) != v {
			t.Errorf("%s = %s, want %s", k, raw[k], v)
		}
	}
	var s Session
	json.Unmarshal(data, &s)
	if s.ID != "20260422_1" || s.CreatedAt.IsZero() || s.UpdatedAt.IsZero() {
		t.Errorf("session %+v", s)
	}
	if len(raw) != 23 {
		t.Errorf("session has %d fields, want 23: %s", len(raw), data)
	}

	var s2 Session
	e.callJSON("POST", "/agent/start", map[string]any{"working_dir": "/w"}, 200, &s2)
	if s2.ID != "20260422_2" {
		t.Errorf("second id %s", s2.ID)
	}

	t.Run("resume", func(t *testing.T) {
		status, data := e.call("POST", "/agent/resume", map[string]any{"session_id": s.ID, "load_model_and_extensions": true})
		var out map[string]json.RawMessage
		if status != 200 || json.Unmarshal(data, &out) != nil || string(out["extension_results"]) != "[]" {
			t.Fatalf("resume: %d %s", status, data)
		}
		var rs Session
		json.Unmarshal(out["session"], &rs)
		if rs.ID != s.ID || rs.Conversation == nil || len(rs.Conversation) != 0 || rs.ProviderName == nil || *rs.ProviderName != DefaultProvider {
			t.Errorf("resumed session %s", out["session"])
		}
		status, data = e.call("POST", "/agent/resume", map[string]any{"session_id": s2.ID, "load_model_and_extensions": false})
		out = nil
		if status != 200 || json.Unmarshal(data, &out) != nil {
			t.Fatalf("resume without load: %d %s", status, data)
		}
		if _, ok := out["extension_results"]; ok {
			t.Errorf("extension_results present without load: %s", data)
		}
	})
	t.Run("resume unknown", func(t *testing.T) {
		var msg struct{ Message string }
		e.callJSON("POST", "/agent/resume", map[string]any{"session_id": "20260422_99", "load_model_and_extensions": true}, 404, &msg)
		if !strings.HasPrefix(msg.Message, "Failed to resume session: ") {
			t.Errorf("message %q", msg.Message)
		}
	})
	t.Run("without a provider the turn fails in the stream", func(t *testing.T) {
		// s2 was resumed without load_model_and_extensions: no provider.
		evs := e.reply(s2.ID, "hi")
		if len(evs) != 1 || evs[0].Type != EventError || evs[0].Error != "Provider not set" {
			t.Errorf("events %+v", evs)
		}
		e.callJSON("POST", "/agent/update_provider", map[string]any{"session_id": s2.ID, "provider": "openai", "model": "gpt-x"}, 200, nil)
		if got := replyText(e.reply(s2.ID, "hi")); got != "echo: hi" {
			t.Errorf("after update_provider: %q", got)
		}
		var got Session
		e.callJSON("GET", "/sessions/"+s2.ID, nil, 200, &got)
		if *got.ProviderName != "openai" || !strings.Contains(string(got.ModelConfig), `"model_name":"gpt-x"`) {
			t.Errorf("provider %v %s", *got.ProviderName, got.ModelConfig)
		}
	})
	t.Run("stop drops the agent", func(t *testing.T) {
		e.callJSON("POST", "/agent/stop", map[string]any{"session_id": s.ID}, 200, nil)
		if evs := e.reply(s.ID, "hi"); len(evs) != 1 || evs[0].Error != "Provider not set" {
			t.Errorf("after stop: %+v", evs)
		}
		e.callJSON("POST", "/agent/stop", map[string]any{"session_id": "20260422_99"}, 404, nil)
	})
}

func TestSessionsListGetDelete(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.newSession(), e.newSession()
	e.reply(a.ID, "first") // a is now the most recently updated

	var list struct {
		Sessions []map[string]json.RawMessage `json:"sessions"`
	}
	e.callJSON("GET", "/sessions", nil, 200, &list)
	if len(list.Sessions) != 2 {
		t.Fatalf("%d sessions", len(list.Sessions))
	}
	var ids []string
	for _, s := range list.Sessions {
		var id string
		json.Unmarshal(s["id"], &id)
		ids = append(ids, id)
		if string(s["conversation"]) != "null" {
			t.Errorf("list carries a conversation: %s", s["conversation"])
		}
	}
	if !slices.Equal(ids, []string{a.ID, b.ID}) {
		t.Errorf("order %v, want most recently updated first", ids)
	}
	if string(list.Sessions[0]["message_count"]) != "2" {
		t.Errorf("message_count %s", list.Sessions[0]["message_count"])
	}

	var got Session
	e.callJSON("GET", "/sessions/"+a.ID, nil, 200, &got)
	if len(got.Conversation) != 2 || got.Conversation[0].Text() != "first" || got.Conversation[1].Text() != "echo: first" || got.MessageCount != 2 {
		t.Errorf("session %+v", got)
	}
	status, data := e.call("GET", "/sessions/"+b.ID, nil)
	if status != 200 || !strings.Contains(string(data), `"conversation":[]`) {
		t.Errorf("empty session: %d %s", status, data)
	}

	// Unknown: a bare 404.
	for _, method := range []string{"GET", "DELETE"} {
		if status, data := e.call(method, "/sessions/20260422_77", nil); status != 404 || len(data) != 0 {
			t.Errorf("%s unknown: %d %q", method, status, data)
		}
	}

	if status, data := e.call("DELETE", "/sessions/"+a.ID, nil); status != 200 || len(data) != 0 {
		t.Fatalf("delete: %d %q", status, data)
	}
	if status, _ := e.call("GET", "/sessions/"+a.ID, nil); status != 404 {
		t.Errorf("deleted session: %d", status)
	}
	if status, _ := e.call("DELETE", "/sessions/"+a.ID, nil); status != 404 {
		t.Errorf("second delete: %d", status)
	}
	e.callJSON("GET", "/sessions", nil, 200, &list)
	if len(list.Sessions) != 1 {
		t.Errorf("%d sessions after delete", len(list.Sessions))
	}
	// Gone from disk too: a restart does not bring it back.
	e.restart()
	if status, _ := e.call("GET", "/sessions/"+a.ID, nil); status != 404 {
		t.Errorf("deleted session is back after a restart: %d", status)
	}
}

func TestExportImport(t *testing.T) {
	e := newEnv(t, nil)
	s := e.newSession()
	e.reply(s.ID, "keep me")
	var exported string
	e.callJSON("GET", "/sessions/"+s.ID+"/export", nil, 200, &exported)
	if !strings.Contains(exported, "\n  \"id\": \""+s.ID+"\"") {
		t.Errorf("export is not pretty JSON of the session: %.200s", exported)
	}
	var imported Session
	e.callJSON("POST", "/sessions/import", map[string]any{"json": exported}, 200, &imported)
	if imported.ID == s.ID || !sessionIDRe.MatchString(imported.ID) {
		t.Errorf("imported id %q (export had %q): import makes a new id", imported.ID, s.ID)
	}
	if len(imported.Conversation) != 2 || imported.Conversation[1].Text() != "echo: keep me" {
		t.Errorf("imported conversation %+v", imported.Conversation)
	}
	var msg struct{ Message string }
	e.callJSON("POST", "/sessions/import", map[string]any{"json": "{not json"}, 400, &msg)
	if !strings.HasPrefix(msg.Message, "Invalid session JSON") {
		t.Errorf("message %q", msg.Message)
	}
	e.callJSON("POST", "/sessions/import", map[string]any{"json": `{"conversation":[{"role":"robot"}]}`}, 400, nil)
	if status, _ := e.call("GET", "/sessions/20260422_99/export", nil); status != 404 {
		t.Errorf("export unknown: %d", status)
	}
}

func TestConfigReadUpsertRemove(t *testing.T) {
	e := newEnv(t, nil)
	read := func(key string, secret bool) string {
		t.Helper()
		status, data := e.call("POST", "/config/read", map[string]any{"key": key, "is_secret": secret})
		if status != 200 {
			t.Fatalf("read %s: %d %s", key, status, data)
		}
		return string(data)
	}
	if got := read("GOOSE_MODEL", false); got != "null" {
		t.Errorf("unset key: %s", got)
	}
	e.callJSON("POST", "/config/upsert", map[string]any{"key": "GOOSE_MODEL", "value": "m1", "is_secret": false}, 200, nil)
	e.callJSON("POST", "/config/upsert", map[string]any{"key": "OPENAI_API_KEY", "value": "sk-x", "is_secret": true}, 200, nil)
	e.callJSON("POST", "/config/upsert", map[string]any{"key": "obj", "value": map[string]any{"a": []int{1}}, "is_secret": false}, 200, nil)
	e.restart()
	if got := read("GOOSE_MODEL", false); got != `"m1"` {
		t.Errorf("after restart: %s", got)
	}
	if got := read("obj", false); got != `{"a":[1]}` {
		t.Errorf("object value: %s", got)
	}
	if got := read("OPENAI_API_KEY", true); got != `"sk-x"` {
		t.Errorf("secret: %s", got)
	}
	if got := read("OPENAI_API_KEY", false); got != "null" {
		t.Errorf("a secret read as a plain value: %s", got)
	}
	e.callJSON("POST", "/config/remove", map[string]any{"key": "GOOSE_MODEL", "is_secret": false}, 200, nil)
	if got := read("GOOSE_MODEL", false); got != "null" {
		t.Errorf("after remove: %s", got)
	}
	if status, _ := e.call("POST", "/config/upsert", map[string]any{"key": "k", "is_secret": false}); status != 422 {
		t.Errorf("upsert without value: %d", status)
	}
}
