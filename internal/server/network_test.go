package server_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/server"
	"github.com/paddock-dev/paddock/sdk"
)

func TestNetworkEndpoints(t *testing.T) {
	sbs := newFakeSandboxes(nil)
	tokens, err := server.OpenFileTokenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := tokens.EnsureAdminToken()
	if err != nil {
		t.Fatal(err)
	}
	signer := &proxy.Signer{Key: []byte(strings.Repeat("k", proxy.MinKeyLen))}
	srv, err := server.New(server.Config{Sandboxes: sbs, Tokens: tokens, Signer: signer, PortBaseURL: "http://localhost:7420"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	c := sdk.New(hs.URL, token)
	ctx := t.Context()

	sbs.Add(sandbox.Sandbox{ID: "net", State: sandbox.Running, Image: "host", CreatedAt: time.Unix(0, 0),
		Ports: []sandbox.Port{{Port: 3000}}, NetworkPolicy: &sandbox.NetworkPolicy{Mode: "allow-all"}})
	sb, err := c.Get(ctx, "net")
	if err != nil {
		t.Fatal(err)
	}
	want := api.Route{Port: 3000, Subdomain: "3000-net", URL: "http://3000-net.localhost:7420/"}
	if len(sb.Routes) != 1 || sb.Routes[0] != want || sb.NetworkPolicy.Mode != "allow-all" {
		t.Errorf("routes %+v policy %+v", sb.Routes, sb.NetworkPolicy)
	}

	if err := sb.AddPorts(ctx, api.PortSpec{Port: 8080, Public: true}); err != nil {
		t.Fatal(err)
	}
	if len(sb.Routes) != 2 || !sb.Routes[1].Public {
		t.Errorf("routes after AddPorts: %+v", sb.Routes)
	}

	su, err := sb.SignedURL(ctx, 3000, 0)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(su.URL)
	if err != nil || u.Host != "3000-net.localhost:7420" {
		t.Fatalf("signed url %q", su.URL)
	}
	if err := signer.Verify(u.Query().Get(proxy.TokenParam), "net", 3000); err != nil {
		t.Errorf("token does not verify: %v", err)
	}
	if d := time.Until(su.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expiresAt in %s, want the 1 h default", d)
	}
	for _, tc := range []struct {
		name string
		port int
		ttl  time.Duration
		code string
	}{
		{"undeclared", 4000, 0, "port_not_declared"},
		{"over 7 days", 3000, 8 * 24 * time.Hour, "invalid_ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := sb.SignedURL(ctx, tc.port, tc.ttl); !sdk.IsCode(err, tc.code) {
				t.Errorf("err = %v, want %s", err, tc.code)
			}
		})
	}

	if err := sb.SetNetworkPolicy(ctx, api.NetworkPolicy{Mode: "custom", AllowCIDRs: []string{"10.1.2.3/8"}}); err != nil {
		t.Fatal(err)
	}
	if p := sb.NetworkPolicy; p.Mode != "custom" || len(p.AllowCIDRs) != 1 || p.AllowCIDRs[0] != "10.0.0.0/8" {
		t.Errorf("policy %+v", p)
	}
	if err := sb.SetNetworkPolicy(ctx, api.NetworkPolicy{Mode: "custom", DenyCIDRs: []string{"nope"}}); !sdk.IsCode(err, "invalid_policy") {
		t.Errorf("bad CIDR: %v", err)
	}

	// The proxy's Authorizer is the API's token check.
	if err := srv.Authorize(context.Background(), token, "net"); err != nil {
		t.Errorf("Authorize(admin token) = %v", err)
	}
	if err := srv.Authorize(context.Background(), "pdk_wrong", "net"); !errors.Is(err, sandbox.ErrUnauthorized) {
		t.Errorf("Authorize(wrong token) = %v", err)
	}
}
