package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"ok", nil, 0},
		{"command code", fmt.Errorf("exec: %w", &exitError{code: 42}), 42},
		{"usage", usagef("bad flag"), 2},
		{"failure", errors.New("boom"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err, &bytes.Buffer{}); got != tt.want {
				t.Errorf("exitCode = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"nothing", nil},
		{"unknown", []string{"frobnicate"}},
		{"sandbox without sub", []string{"sandbox"}},
		{"exec without command", []string{"sandbox", "exec", "--url", "http://x", "--token", "t", "sb-1", "--"}},
		{"cp one arg", []string{"sandbox", "cp", "--url", "http://x", "--token", "t", "a"}},
		{"cp two locals", []string{"sandbox", "cp", "--url", "http://x", "--token", "t", "a", "b"}},
		{"bad env", []string{"sandbox", "create", "--env", "novalue"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errb)
			var u *usageError
			if !errors.As(err, &u) {
				t.Errorf("run(%q) = %v, want a usage error", tt.args, err)
			}
		})
	}
}

func TestSplitRemote(t *testing.T) {
	tests := []struct {
		in, id, path string
		ok           bool
	}{
		{"sb-1:/tmp/x", "sb-1", "/tmp/x", true},
		{"./sb-1:/tmp", "", "", false},
		{"sb-1:tmp", "", "", false},
		{"/local/file", "", "", false},
		{"C:/windows", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, p, ok := splitRemote(tt.in)
			if id != tt.id || p != tt.path || ok != tt.ok {
				t.Errorf("splitRemote = %q %q %v", id, p, ok)
			}
		})
	}
}

func TestClientConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "client.json")
	if err := updateClientConfig(path, "http://a", "tok1", ""); err != nil {
		t.Fatal(err)
	}
	// A restart has no secret to write: keep the token, update the URL.
	if err := updateClientConfig(path, "http://b", "", ""); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stat = %v, %v", fi, err)
	}
	data, _ := os.ReadFile(path)
	var cc clientConfig
	if err := json.Unmarshal(data, &cc); err != nil || cc.URL != "http://b" || cc.Token != "tok1" {
		t.Errorf("client.json = %s", data)
	}

	t.Setenv("XDG_DATA_HOME", dir)
	t.Setenv("PADDOCK_URL", "")
	t.Setenv("PADDOCK_TOKEN", "")
	cf := clientFlags{url: "http://flag"}
	if _, err := cf.client(); os.Geteuid() != 0 && err != nil {
		t.Errorf("flag url + file token: %v", err)
	}
	empty := clientFlags{}
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	if os.Geteuid() != 0 {
		if _, err := empty.client(); err == nil {
			t.Error("no config at all was accepted")
		}
	}
}
