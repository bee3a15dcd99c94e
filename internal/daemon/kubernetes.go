package daemon

import (
	"cmp"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/paddock-dev/paddock/internal/dnsfilter"
	"github.com/paddock-dev/paddock/internal/runtime"
	k8sdriver "github.com/paddock-dev/paddock/internal/runtime/kubernetes"
	"github.com/paddock-dev/paddock/internal/volume"
	"github.com/paddock-dev/paddock/internal/volume/claim"
)

// startKubernetes starts the kubernetes driver (Config.Runtime
// RuntimeKubernetes): the sandboxes are Pods, this replica's by its node
// name (the driver's Owner), so that replicas sharing the namespace each
// reconcile their own.
func (d *Daemon) startKubernetes() (*k8sdriver.Driver, error) {
	kc := d.cfg.Kubernetes
	var (
		rc  *rest.Config
		err error
	)
	if kc.Kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kc.Kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes runtime: the cluster's config (in-cluster, or --kubeconfig): %w", err)
	}
	rc.UserAgent = "paddock/" + d.cfg.NodeName
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runtime: %w", err)
	}
	dnsCfg, err := kc.dnsConfig()
	if err != nil {
		return nil, err
	}
	drv, err := k8sdriver.New(k8sdriver.Config{Client: client, Namespace: kc.Namespace, AgentImage: kc.AgentImage,
		HostImage: k8sdriver.HostImage{Ref: kc.HostImage, ReadOnlyBinds: kc.HostImageBinds}, RuntimeClass: kc.RuntimeClass, RequestFraction: kc.RequestFraction,
		PullPolicy: corev1.PullPolicy(kc.PullPolicy), ImagePullSecrets: kc.ImagePullSecrets, HostUsers: kc.HostUsers, Owner: d.cfg.NodeName,
		DNS: dnsCfg, Logger: d.log})
	if err != nil {
		return nil, err
	}
	d.push("kubernetes driver", drv.Close) // the Pods keep running; the next start adopts them
	if dnsCfg != nil {
		if err := serveDNS(drv, kc.DNSListen); err != nil {
			return nil, err
		}
		d.log.Info("kubernetes runtime: resolver for the Pods", "listen", kc.DNSListen, "address", kc.DNSAddress, "upstream", dnsCfg.Upstream)
	}
	d.kube = client
	return drv, nil
}

// openClaims keeps the volumes as PersistentVolumeClaims in the sandboxes'
// namespace (internal/volume/claim), which every replica sharing it sees.
func (d *Daemon) openClaims() error {
	if d.kube == nil {
		// A driver given by a test: no cluster to keep volumes in.
		d.log.Info("volumes disabled", "why", "no cluster client")
		return nil
	}
	m, err := claim.New(claim.Config{Client: d.kube, Namespace: d.cfg.Kubernetes.Namespace, StorageClass: d.cfg.Kubernetes.StorageClass,
		Owner: d.cfg.NodeName, MaxSize: d.cfg.MaxVolumeSize, TeamMaxVolumes: d.cfg.TeamMaxVolumes, TeamMaxBytes: d.cfg.TeamMaxVolumeBytes,
		DefaultSize: min(volume.DefaultSize, cmp.Or(d.cfg.MaxVolumeSize, volume.DefaultMaxSize)), Logger: d.log})
	if err != nil {
		return fmt.Errorf("volumes: %w", err)
	}
	d.volumes = m
	return nil
}

// ownNetworks reports whether a driver of this daemon gives its sandboxes
// a network of their own (a runtime.Addresser: Pods), whose ports the
// port proxy reaches without host networking.
func (d *Daemon) ownNetworks() bool {
	for _, drv := range append([]runtime.Driver{d.driver}, d.drivers...) {
		if _, ok := drv.(runtime.Addresser); ok {
			return true
		}
	}
	return false
}

// dnsConfig is the driver's DNSConfig, nil without DNSListen.
func (kc KubernetesConfig) dnsConfig() (*k8sdriver.DNSConfig, error) {
	if kc.DNSListen == "" {
		return nil, nil
	}
	_, port, err := net.SplitHostPort(kc.DNSListen)
	if err != nil {
		return nil, fmt.Errorf("kubernetes runtime: DNS listen address %q: %w", kc.DNSListen, err)
	}
	peerPort, err := strconv.Atoi(port)
	if err != nil || peerPort <= 0 {
		return nil, fmt.Errorf("kubernetes runtime: DNS listen address %q: want a port number", kc.DNSListen)
	}
	upstream := kc.DNSUpstream
	if len(upstream) == 0 {
		if upstream, err = dnsfilter.Nameservers("/etc/resolv.conf"); err != nil {
			return nil, fmt.Errorf("kubernetes runtime: %w", err)
		}
	}
	return &k8sdriver.DNSConfig{Address: kc.DNSAddress, Upstream: upstream,
		PeerNamespace: kc.DNSNamespace, PeerLabels: kc.DNSPodLabels, PeerPort: peerPort}, nil
}

// serveDNS listens on addr, UDP and TCP, and serves the driver's resolver
// there; the driver's Close closes the sockets.
func serveDNS(drv *k8sdriver.Driver, addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("kubernetes runtime: DNS: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("kubernetes runtime: DNS: %w", err)
	}
	if err := drv.ServeDNS(pc, ln); err != nil {
		pc.Close()
		ln.Close()
		return err
	}
	return nil
}
