package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/fake"
	"github.com/paddock-dev/paddock/internal/node"
	"github.com/paddock-dev/paddock/internal/proxy"
	"github.com/paddock-dev/paddock/sdk"
)

// TestRuntimesAPI: through the whole stack, GET /runtimes lists what the
// host offers, a create and a project pick a runtime, and one the host
// cannot run is a 400 that says why.
func TestRuntimesAPI(t *testing.T) {
	def := fake.NewDriver(t, fake.DriverConfig{Name: "runc"})
	gv := fake.NewDriver(t, fake.DriverConfig{Name: "gvisor"})
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true}, WithDriver(def, gv),
		WithNodeConfig(func(c *node.Config) { c.Unavailable = map[string]string{"kata": "needs /dev/kvm"} }))
	ctx := t.Context()

	rts, err := s.client.Runtimes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rts {
		got = append(got, r.Name)
		switch {
		case r.Name == "runc" && (!r.Default || !r.Available),
			r.Name == "gvisor" && (r.Default || !r.Available),
			r.Name == "kata" && (r.Available || r.Reason != "needs /dev/kvm"):
			t.Errorf("runtime %+v", r)
		}
	}
	if strings.Join(got, ",") != "gvisor,kata,runc" {
		t.Errorf("runtimes = %v", got)
	}

	sb, err := s.client.Create(ctx, api.CreateSandboxRequest{Runtime: "gvisor"})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Runtime != "gvisor" || !gv.Called("create", sb.ID) || def.Called("create", sb.ID) {
		t.Errorf("sandbox runtime = %q; created by gvisor: %v", sb.Runtime, gv.Called("create", sb.ID))
	}
	if plain, err := s.client.Create(ctx, api.CreateSandboxRequest{}); err != nil || plain.Runtime != "runc" {
		t.Errorf("default create = %+v, %v; want runtime runc", plain, err)
	}

	for _, tc := range []struct{ runtime, code, says string }{
		{"nope", "unknown_runtime", "gvisor, runc"},
		{"kata", "runtime_unavailable", "needs /dev/kvm"},
	} {
		_, err := s.client.Create(ctx, api.CreateSandboxRequest{Runtime: tc.runtime})
		if !errors.Is(err, sdk.ErrInvalid) || !sdk.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("create on %s = %v, want 400 %s saying %q", tc.runtime, err, tc.code, tc.says)
		}
		_, err = s.client.CreateProject(ctx, api.ProjectRequest{Name: "p-" + tc.runtime, Source: api.ProjectSource{Image: "host"}, Start: "true", Runtime: tc.runtime})
		if !errors.Is(err, sdk.ErrInvalid) || !sdk.IsCode(err, tc.code) {
			t.Errorf("project on %s = %v, want 400 %s", tc.runtime, err, tc.code)
		}
	}
	p, err := s.client.CreateProject(ctx, api.ProjectRequest{Name: "gv", Source: api.ProjectSource{Image: "host"}, Start: "true", Runtime: "gvisor"})
	if err != nil || p.Spec.Runtime != "gvisor" {
		t.Fatalf("project = %+v, %v; want runtime gvisor", p.Spec, err)
	}
}

// podsDriver stands for the kubernetes driver: sandboxes with a network
// of their own, at addr (a Pod IP), on a host without networking.
type podsDriver struct {
	*fake.Driver
	addr netip.Addr
}

func (d podsDriver) Address(context.Context, string) (netip.Addr, error) { return d.addr, nil }

// TestDriverNetworkThroughTheStack: on a daemon without host networking
// (as in a Pod), a driver with networks of its own gets the port proxy,
// signed URLs and egress policies: a create with a port and a policy
// works, the sandbox's address is the driver's, and its port URL reaches
// the server listening there (loopback here, the Pod IP on a cluster).
func TestDriverNetworkThroughTheStack(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s", r.URL.Path)
	}))
	t.Cleanup(app.Close)
	port, _ := strconv.Atoi(portOf(app.Listener.Addr()))
	drv := podsDriver{Driver: fake.NewDriver(t, fake.DriverConfig{Name: "kubernetes"}), addr: netip.MustParseAddr("127.0.0.1")}
	s := serve(t, Config{DataDir: newDataDir(t), NoNetwork: true}, WithDriver(drv))
	if s.d.Signer() == nil {
		t.Fatal("no URL signer: the port proxy is off")
	}
	ctx := t.Context()
	sb, err := s.client.Create(ctx, api.CreateSandboxRequest{Ports: []api.PortSpec{{Port: port}},
		NetworkPolicy: &api.NetworkPolicy{Mode: "deny-all"}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Address != "127.0.0.1" {
		t.Errorf("address %q, want the driver's", sb.Address)
	}
	if p := drv.Spec(sb.ID).Egress; p == nil || p.Mode != "deny-all" {
		t.Errorf("egress handed to the driver: %+v", p)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+proxy.PathPrefix(sb.ID, port)+"/hello", nil)
	token, _ := s.d.AdminToken()
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != "app saw /hello" {
		t.Errorf("port URL: %d %q", resp.StatusCode, body)
	}
}
