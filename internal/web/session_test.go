package web

import (
	"strings"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/api"
)

func TestSessionSeal(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	k, err := newSealer([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newSealer([]byte("fedcba9876543210fedcba9876543210"))
	s, err := newSession("pdk_secret", now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := k.seal(s)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		sealer *sealer
		value  string
		at     time.Time
		ok     bool
	}{
		{"fresh", k, v, now, true},
		{"just before expiry", k, v, now.Add(sessionTTL - time.Second), true},
		{"expired", k, v, now.Add(sessionTTL), false},
		{"another key", other, v, now, false},
		{"flipped byte", k, v[:10] + string('A'+(v[10]-'A'+1)%26) + v[11:], now, false},
		{"truncated", k, v[:8], now, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.sealer.open(tc.value, tc.at)
			if ok != tc.ok || ok && got.Token != "pdk_secret" {
				t.Fatalf("open = %+v, %v; want ok=%v", got, ok, tc.ok)
			}
		})
	}
	if strings.Contains(v, "pdk_secret") {
		t.Fatal("sealed value shows the token")
	}
	s2, _ := newSession("pdk_secret", now)
	if k.csrf(s) == k.csrf(s2) || !k.checkCSRF(s, k.csrf(s)) || k.checkCSRF(s2, k.csrf(s)) || k.checkCSRF(s, "") {
		t.Fatal("CSRF tokens must be per session and checked exactly")
	}
}

func TestUsageTotalsAndChart(t *testing.T) {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := []api.Usage{
		{TeamID: "a", ProjectID: "p", Start: since, CPUSeconds: 1, Cost: api.UsageCost{Total: 1}},
		{TeamID: "a", ProjectID: "p", Start: since.AddDate(0, 0, 1), CPUSeconds: 2, Cost: api.UsageCost{Total: 2}},
		{TeamID: "a", Start: since.AddDate(0, 0, 1), Cost: api.UsageCost{Total: 0.5}},
		{TeamID: "b", Start: since.AddDate(0, 0, 9), Cost: api.UsageCost{Total: 7}}, // outside the window
	}
	got := usageTotals(rows)
	if len(got) != 3 || got[0].Team != "a" || got[0].Project != "" || got[1].Project != "p" || got[1].Cost != 3 || got[1].CPUSeconds != 3 {
		t.Fatalf("totals %+v", got)
	}
	svg := string(costChart(rows, since, 3))
	if strings.Count(svg, "<rect") != 3 || !strings.Contains(svg, "2026-01-02: 2.5000") || strings.Contains(svg, "7.0000") {
		t.Fatalf("chart:\n%s", svg)
	}
}
