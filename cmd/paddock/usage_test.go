package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
)

func TestPrintUsage(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	list := api.UsageList{Granularity: "hour", Currency: "EUR", Usage: []api.Usage{
		{TeamID: "t1", ProjectID: "prj-1", Start: t0, CPUSeconds: 2, MemoryGBHours: 0.5, NetTxBytes: 3 << 20, Creations: 1,
			Cost: api.UsageCost{Total: 0.25}},
		{TeamID: "t1", Start: t0.Add(time.Hour), CPUSeconds: 1, MemoryPeakBytes: 512, Cost: api.UsageCost{Total: 0.5}},
	}}
	var out bytes.Buffer
	if err := printUsage(&out, list); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"HOUR", "PROJECT", "CPU-S", "MEM-GB-H", "PEAK-MEM", "NET-IN", "NET-OUT", "CREATED", "STORAGE-GB-H", "COST", "(EUR)"},
		{"2026-12-06", "10:00", "prj-1", "2.00", "0.500", "0B", "0B", "3.0MiB", "1", "0.000", "0.2500"},
		{"2026-12-06", "11:00", "-", "1.00", "0.000", "512B", "0B", "0B", "0", "0.000", "0.5000"},
		{"total", "3.00", "0.500", "512B", "0B", "3.0MiB", "1", "0.000", "0.7500"},
	}
	if len(lines) != len(want) {
		t.Fatalf("output:\n%s", out.String())
	}
	for i, l := range lines {
		if got := strings.Fields(l); strings.Join(got, " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d = %q, want %q", i, got, want[i])
		}
	}
}

func TestParseWhen(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"", time.Time{}, true},
		{"2026-12-01", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), true},
		{"2026-12-01T10:00:00Z", time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), true},
		{"yesterday", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := parseWhen(tt.in)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("parseWhen(%q) = %v, %v", tt.in, got, err)
		}
	}
}
