package kubernetes

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/runtime"
)

// Stats are the sandbox's limits from its Pod's spec (the API server's
// word), and its usage as its agent reads its container's cgroup (CPU
// time, memory and its peak, processes, OOM kills) and its network
// namespace's interface counters, which are the Pod's (the node fills
// network bytes from the veth for its own drivers' sandboxes only; a
// Pod's interface is the cluster's). The kubelet's stats summary would
// need nodes/proxy, a grant that reaches the kubelet's exec of every Pod
// on the node, and lags by its housekeeping period; the metrics API may
// not exist.
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	pod, err := d.runningPod(ctx, id)
	if err != nil {
		return runtime.Stats{}, err
	}
	var st runtime.Stats
	for _, c := range pod.Spec.Containers {
		if c.Name != "sandbox" {
			continue
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
			st.MemoryLimit = uint64(q.Value())
		}
		if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
			st.CPUQuotaFrac = float64(q.MilliValue()) / 1000
		}
		if q, ok := c.Resources.Limits[corev1.ResourceEphemeralStorage]; ok {
			st.DiskLimitBytes = uint64(q.Value())
		}
	}
	token, err := d.token(ctx, id)
	if err != nil {
		return runtime.Stats{}, err
	}
	c := agent.TCPClient(net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(agent.TCPPort)), token)
	defer c.Close()
	cg, err := c.Stats(ctx)
	if err != nil {
		return runtime.Stats{}, fmt.Errorf("kubernetes: stats of %s: %w", id, err)
	}
	st.CPUUsage = time.Duration(cg.CPUUsageNs)
	st.MemoryBytes, st.MemoryPeak = cg.MemoryBytes, cg.MemoryPeak
	st.PIDs, st.OOMKills = cg.PIDs, cg.OOMKills
	st.NetworkRxBytes, st.NetworkTxBytes = cg.NetworkRxBytes, cg.NetworkTxBytes
	return st, nil
}
