package server

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// TestToAPIList: an empty list is [] on the wire, never null.
func TestToAPIList(t *testing.T) {
	tests := []struct {
		name string
		in   []int
		want string
	}{
		{"nil", nil, `[]`},
		{"empty", []int{}, `[]`},
		{"some", []int{1, 2}, `["1","2"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(toAPIList(tt.in, strconv.Itoa))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestSignedURLTTL: 0 is the default, too long is refused, not cut.
func TestSignedURLTTL(t *testing.T) {
	maxSeconds := int64(maxSignedURLTTL / time.Second)
	tests := []struct {
		name    string
		seconds int64
		want    time.Duration
		ok      bool
	}{
		{"default", 0, defaultSignedURLTTL, true},
		{"one second", 1, time.Second, true},
		{"the most", maxSeconds, maxSignedURLTTL, true},
		{"too long", maxSeconds + 1, 0, false},
		{"negative", -1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := signedURLTTL(tt.seconds)
			if tt.ok != (err == nil) || got != tt.want {
				t.Errorf("signedURLTTL(%d) = %v, %v; want %v, ok=%v", tt.seconds, got, err, tt.want, tt.ok)
			}
			if err != nil && !errors.Is(err, sandbox.ErrInvalid) {
				t.Errorf("error %v is not ErrInvalid", err)
			}
		})
	}
}
