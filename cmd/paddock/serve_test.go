package main

import (
	"flag"
	"io"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestPrefixesFlag(t *testing.T) {
	var f prefixesFlag
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&f, "block-cidr", "")
	if err := fs.Parse([]string{"--block-cidr", "10.1.2.3/16", "--block-cidr", "203.0.113.7", "--block-cidr", "fd00::/8"}); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "10.1.0.0/16,203.0.113.7/32,fd00::/8" {
		t.Errorf("parsed %q", got)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "example.com"} {
		if err := new(prefixesFlag).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

// TestServeTLSFlags: the TLS flags become the daemon's config, and the
// public URL's default scheme follows them.
func TestServeTLSFlags(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		ok     bool
		scheme string
	}{
		{"plain HTTP", nil, true, "http"},
		{"a certificate", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}, true, "https"},
		{"the dev CA", []string{"--tls-dev-ca", "--domain", "paddock.localhost"}, true, "https"},
		{"a certificate without its key", []string{"--tls-cert", "c.pem"}, false, ""},
		{"both", []string{"--tls-dev-ca", "--tls-cert", "c.pem", "--tls-key", "k.pem"}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseServeFlags(append([]string{"--data-dir", t.TempDir()}, tc.args...), io.Discard)
			if (err == nil) != tc.ok {
				t.Fatalf("parse = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if got := publicBase(f, &net.TCPAddr{Port: 7420}); !strings.HasPrefix(got, tc.scheme+"://") {
				t.Errorf("public URL %s, want scheme %s", got, tc.scheme)
			}
		})
	}
}

// TestServeMongoURIFromEnv: the URI comes from the environment when the
// flag is not given (a Secret in a Pod's env), and the flag wins.
func TestServeMongoURIFromEnv(t *testing.T) {
	t.Setenv(envMongoURI, "mongodb://from-env/")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"the environment", nil, "mongodb://from-env/"},
		{"the flag wins", []string{"--mongodb-uri", "mongodb://from-flag/"}, "mongodb://from-flag/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := parseServeFlags(append([]string{"--data-dir", t.TempDir()}, tc.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if f.cfg.MongoURI != tc.want {
				t.Errorf("MongoURI = %q, want %q", f.cfg.MongoURI, tc.want)
			}
		})
	}
}

// TestServeKubernetesFlags: --runtime kubernetes takes its namespace from
// the environment the chart sets unless the flag gives one, and needs an
// agent image.
func TestServeKubernetesFlags(t *testing.T) {
	t.Setenv(envSandboxNamespace, "from-env")
	t.Setenv(envPodNamespace, "")
	for _, tc := range []struct {
		name      string
		args      []string
		ok        bool
		ns        string
		hostUsers bool
	}{
		{"namespace from the environment", []string{"--k8s-agent-image", "r/paddock:1"}, true, "from-env", false},
		{"the flag wins", []string{"--k8s-agent-image", "r/paddock:1", "--k8s-namespace", "sbx"}, true, "sbx", false},
		{"no agent image", nil, false, "", false},
		{"request fraction above 1", []string{"--k8s-agent-image", "a", "--k8s-request-fraction", "1.5"}, false, "", false},
		{"the node's user namespace", []string{"--k8s-agent-image", "a", "--k8s-host-users"}, true, "from-env", true},
		{"a resolver", []string{"--k8s-agent-image", "a", "--k8s-dns-listen", ":5353", "--k8s-dns-address", "10.96.0.20"}, true, "from-env", false},
		{"a resolver without its address", []string{"--k8s-agent-image", "a", "--k8s-dns-listen", ":5353"}, false, "", false},
		{"a resolver's address without it", []string{"--k8s-agent-image", "a", "--k8s-dns-address", "10.96.0.20"}, false, "", false},
		{"pod labels without a namespace", []string{"--k8s-agent-image", "a", "--k8s-dns-listen", ":5353", "--k8s-dns-address", "10.96.0.20",
			"--k8s-dns-pod-label", "app=paddock"}, false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--data-dir", t.TempDir(), "--runtime", "kubernetes"}, tc.args...)
			f, err := parseServeFlags(args, io.Discard)
			if (err == nil) != tc.ok {
				t.Fatalf("parse = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (f.cfg.Kubernetes.Namespace != tc.ns || f.cfg.Kubernetes.RequestFraction != 1 || f.cfg.Kubernetes.PullPolicy != "IfNotPresent" ||
				f.cfg.Kubernetes.HostUsers != tc.hostUsers) {
				t.Errorf("kubernetes config %+v, want namespace %q and the defaults", f.cfg.Kubernetes, tc.ns)
			}
		})
	}
}

// TestServeKubernetesDNSFlags: the resolver's flags reach the config.
func TestServeKubernetesDNSFlags(t *testing.T) {
	t.Setenv(envPodNamespace, "paddock")
	f, err := parseServeFlags([]string{"--data-dir", t.TempDir(), "--runtime", "kubernetes", "--k8s-namespace", "sbx", "--k8s-agent-image", "a",
		"--k8s-dns-listen", ":5353", "--k8s-dns-address", "10.96.0.20", "--k8s-dns-upstream", "10.96.0.10", "--k8s-dns-upstream", "192.0.2.1:5353",
		"--k8s-dns-pod-label", "app.kubernetes.io/name=paddock", "--k8s-dns-pod-label", "app.kubernetes.io/instance=p"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	k := f.cfg.Kubernetes
	if k.DNSListen != ":5353" || k.DNSAddress != netip.MustParseAddr("10.96.0.20") || k.DNSNamespace != "paddock" ||
		!slices.Equal(k.DNSUpstream, []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53"), netip.MustParseAddrPort("192.0.2.1:5353")}) ||
		!maps.Equal(k.DNSPodLabels, map[string]string{"app.kubernetes.io/name": "paddock", "app.kubernetes.io/instance": "p"}) {
		t.Errorf("kubernetes config %+v", k)
	}
}
