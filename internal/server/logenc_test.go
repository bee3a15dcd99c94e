package server

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/paddock-dev/paddock/api"
	"github.com/paddock-dev/paddock/internal/agent"
)

func TestIncompleteTail(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"empty", "", 0},
		{"ascii", "abc", 3},
		{"complete 2-byte", "é", 2},
		{"lead of 2-byte", "a\xc3", 1},
		{"2 of 3 bytes", "a\xe2\x82", 1},
		{"3 of 4 bytes", "\xf0\x9f\x98", 0},
		{"complete 4-byte", "\xf0\x9f\x98\x80", 4},
		{"invalid lead is not held", "a\xff", 2},
		{"stray continuation", "a\x80", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := incompleteTail([]byte(tt.in)); got != tt.want {
				t.Errorf("incompleteTail(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestLogEncoder(t *testing.T) {
	tests := []struct {
		name   string
		frames []agent.Frame
		want   []api.LogLine
	}{
		{
			name:   "text split mid-rune joins up",
			frames: []agent.Frame{{Kind: agent.FrameStdout, Data: []byte("\xe2")}, {Kind: agent.FrameStdout, Data: []byte("\x82\xac")}},
			want:   []api.LogLine{{Stream: "stdout", Data: "€"}},
		},
		{
			name:   "streams carry separately",
			frames: []agent.Frame{{Kind: agent.FrameStdout, Data: []byte("a\xc3")}, {Kind: agent.FrameStderr, Data: []byte("b")}, {Kind: agent.FrameStdout, Data: []byte("\xa9")}},
			want:   []api.LogLine{{Stream: "stdout", Data: "a"}, {Stream: "stderr", Data: "b"}, {Stream: "stdout", Data: "é"}},
		},
		{
			name:   "binary goes base64",
			frames: []agent.Frame{{Kind: agent.FrameStderr, Data: []byte{0, 0xff, 1}}},
			want:   []api.LogLine{{Stream: "stderr", DataBase64: []byte{0, 0xff, 1}}},
		},
		{
			name:   "unfinished tail flushed as base64",
			frames: []agent.Frame{{Kind: agent.FrameStdout, Data: []byte("ok\xf0\x9f")}},
			want:   []api.LogLine{{Stream: "stdout", Data: "ok"}, {Stream: "stdout", DataBase64: []byte{0xf0, 0x9f}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			enc := newLogEncoder(&buf)
			for _, f := range tt.frames {
				if err := enc.chunk(f.Kind, f.Data); err != nil {
					t.Fatal(err)
				}
			}
			if err := enc.flush(); err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(&buf)
			var got []api.LogLine
			for dec.More() {
				var l api.LogLine
				if err := dec.Decode(&l); err != nil {
					t.Fatal(err)
				}
				got = append(got, l)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i].Stream != tt.want[i].Stream || got[i].Data != tt.want[i].Data || !bytes.Equal(got[i].DataBase64, tt.want[i].DataBase64) {
					t.Errorf("line %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   api.Signal
		want int
		ok   bool
	}{
		{"", 9, true}, {"SIGTERM", 15, true}, {"term", 15, true}, {"9", 9, true}, {"SIGHUP", 1, true},
		{"0", 0, false}, {"65", 0, false}, {"SIGFOO", 0, false}, {"-1", 0, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.in), func(t *testing.T) {
			got, err := parseSignal(tt.in)
			if tt.ok != (err == nil) || got != tt.want {
				t.Errorf("parseSignal(%q) = %d, %v", tt.in, got, err)
			}
		})
	}
}
