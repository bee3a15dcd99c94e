package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/api"
)

// TestSandboxPolicy runs `sandbox policy` against a server that records the
// request: the flags become the policy body, lists split on commas.
func TestSandboxPolicy(t *testing.T) {
	var got api.NetworkPolicy
	var path, method string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, method = r.URL.Path, r.Method
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Errorf("decode body: %v", err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"sb-1","state":"running"}`))
	}))
	defer srv.Close()

	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"sandbox", "policy", "--url", srv.URL, "--token", "t",
		"--mode", "custom", "--allow-domain", "example.com,*.example.org", "--allow-cidr", "198.51.100.0/24",
		"--deny-cidr", "198.51.100.7/32", "sb-1"}, &out, &errb)
	if err != nil {
		t.Fatalf("run: %v (stderr %q)", err, errb.String())
	}
	if method != http.MethodPut || path != api.Prefix+"/sandboxes/sb-1/network-policy" {
		t.Errorf("request %s %s, want PUT .../sandboxes/sb-1/network-policy", method, path)
	}
	want := api.NetworkPolicy{Mode: "custom", AllowDomains: []string{"example.com", "*.example.org"},
		AllowCIDRs: []string{"198.51.100.0/24"}, DenyCIDRs: []string{"198.51.100.7/32"}}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("policy sent %s, want %s", gj, wj)
	}
	if !strings.Contains(out.String(), "egress custom") {
		t.Errorf("output %q does not describe the policy", out.String())
	}

	for _, args := range [][]string{
		{"sandbox", "policy", "--url", srv.URL, "--token", "t", "sb-1"},                         // no mode
		{"sandbox", "policy", "--url", srv.URL, "--token", "t", "--mode", "deny-all"},           // no id
		{"sandbox", "policy", "--url", srv.URL, "--token", "t", "--mode", "deny-all", "a", "b"}, // two ids
	} {
		var u *usageError
		if err := run(context.Background(), args, &out, &errb); !errors.As(err, &u) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}
