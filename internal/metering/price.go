package metering

import (
	"fmt"
	"math"
)

// Prices turn usage into cost. Every price is in Currency; zero prices
// make usage free (and a budget's limit then only caps creations priced
// above zero).
type Prices struct {
	Currency string // a label, "USD" if empty
	// CPUSecond is per second of active CPU time (cgroup usage, all cores).
	CPUSecond float64
	// MemoryGBHour is per GiB of provisioned memory held for an hour.
	MemoryGBHour float64
	// NetworkEgressGB is per 10^9 bytes the sandbox sent.
	NetworkEgressGB float64
	// StorageGBMonth is per 10^9 bytes of snapshots and volumes kept for a
	// month (730 hours).
	StorageGBMonth float64
	// Creation is per sandbox started.
	Creation float64
}

// hoursPerMonth is the month a GB-month price means: 365 × 24 / 12.
const hoursPerMonth = 730

// Validate reports a price that is negative or not a number.
func (p Prices) Validate() error {
	for name, v := range map[string]float64{"CPUSecond": p.CPUSecond, "MemoryGBHour": p.MemoryGBHour,
		"NetworkEgressGB": p.NetworkEgressGB, "StorageGBMonth": p.StorageGBMonth, "Creation": p.Creation} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("metering: price %s must be a non-negative number, got %v", name, v)
		}
	}
	return nil
}

func (p Prices) currency() string {
	if p.Currency == "" {
		return "USD"
	}
	return p.Currency
}

// Cost is usage priced, per item and in total.
type Cost struct {
	CPU       float64 `json:"cpu"`
	Memory    float64 `json:"memory"`
	Network   float64 `json:"network"`
	Storage   float64 `json:"storage"`
	Creations float64 `json:"creations"`
	Total     float64 `json:"total"`
}

// Cost prices t.
func (p Prices) Cost(t Totals) Cost {
	c := Cost{
		CPU:       t.CPUSeconds * p.CPUSecond,
		Memory:    t.MemoryGBHours * p.MemoryGBHour,
		Network:   float64(t.NetTxBytes) / 1e9 * p.NetworkEgressGB,
		Storage:   t.StorageGBHours / hoursPerMonth * p.StorageGBMonth,
		Creations: float64(t.Creations) * p.Creation,
	}
	c.Total = c.CPU + c.Memory + c.Network + c.Storage + c.Creations
	return c
}
