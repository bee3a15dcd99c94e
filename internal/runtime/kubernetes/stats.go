package kubernetes

import (
	"context"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/paddock-dev/paddock/internal/runtime"
	"github.com/paddock-dev/paddock/internal/sandbox"
)

// summary is the part of the kubelet's stats summary (/stats/summary,
// through the API server's node proxy) that Stats reads.
type summary struct {
	Pods []struct {
		PodRef struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"podRef"`
		CPU *struct {
			UsageCoreNanoSeconds *uint64 `json:"usageCoreNanoSeconds"`
		} `json:"cpu"`
		Memory *struct {
			WorkingSetBytes *uint64 `json:"workingSetBytes"`
		} `json:"memory"`
		Network *struct {
			RxBytes *uint64 `json:"rxBytes"`
			TxBytes *uint64 `json:"txBytes"`
		} `json:"network"`
		ProcessStats *struct {
			ProcessCount *uint64 `json:"process_count"`
		} `json:"process_stats"`
	} `json:"pods"`
}

// Stats are the sandbox's limits from its Pod, and its usage from the
// kubelet's stats summary when the driver may read it (nodes/proxy): CPU
// time, working set, processes and network bytes, as fresh as the
// kubelet's last housekeeping (seconds). Neither reports a memory peak or
// OOM kills; without the summary, usage is zero.
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	pod, err := d.getPod(ctx, id)
	if err != nil {
		return runtime.Stats{}, err
	}
	if pod == nil || !podRunning(pod) {
		if _, err := d.getSecret(ctx, id); err != nil {
			return runtime.Stats{}, err
		}
		return runtime.Stats{}, sandbox.Errorf(sandbox.ErrNotRunning, "not_running", "sandbox %s is not running", id)
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
	}
	if pod.Spec.NodeName == "" {
		return st, nil
	}
	raw, err := d.cfg.Client.CoreV1().RESTClient().Get().
		AbsPath("/api/v1/nodes", pod.Spec.NodeName, "proxy", "stats", "summary").DoRaw(ctx)
	if err != nil {
		d.log.Debug("no kubelet stats summary", "node", pod.Spec.NodeName, "err", err)
		return st, nil
	}
	var sum summary
	if err := json.Unmarshal(raw, &sum); err != nil {
		d.log.Debug("kubelet stats summary", "node", pod.Spec.NodeName, "err", err)
		return st, nil
	}
	for _, p := range sum.Pods {
		if p.PodRef.Name != pod.Name || p.PodRef.Namespace != pod.Namespace {
			continue
		}
		if p.CPU != nil && p.CPU.UsageCoreNanoSeconds != nil {
			st.CPUUsage = time.Duration(*p.CPU.UsageCoreNanoSeconds)
		}
		if p.Memory != nil && p.Memory.WorkingSetBytes != nil {
			st.MemoryBytes = *p.Memory.WorkingSetBytes
		}
		if p.ProcessStats != nil && p.ProcessStats.ProcessCount != nil {
			st.PIDs = *p.ProcessStats.ProcessCount
		}
		if p.Network != nil && p.Network.RxBytes != nil && p.Network.TxBytes != nil {
			st.NetworkRxBytes, st.NetworkTxBytes = *p.Network.RxBytes, *p.Network.TxBytes
		}
	}
	return st, nil
}
