package envd

import (
	"encoding/json"
	"testing"
	"time"
)

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// equalJSON compares two values by their JSON, the form the wire has.
func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	return mustJSON(t, a) == mustJSON(t, b)
}

func TestCodecMarshal(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"int64 as a string", struct {
			N Int64 `json:"n"`
		}{-5}, `{"n":"-5"}`},
		{"uint64 as a string", struct {
			N Uint64 `json:"n"`
		}{1 << 63}, `{"n":"9223372036854775808"}`},
		{"bytes in standard base64", dataEvent{Stdout: Bytes{0xfb, 0xff}}, `{"stdout":"+/8="}`},
		{"zero values left out", endEvent{}, `{}`},
		{"empty message in a oneof kept", processEvent{Keepalive: &struct{}{}}, `{"keepalive":{}}`},
		{"enum by name", sendSignalRequest{Signal: 15}, `{"process":null,"signal":"SIGNAL_SIGTERM"}`},
		{"unknown enum value by number", sendSignalRequest{Signal: 3}, `{"process":null,"signal":3}`},
		{"timestamp in UTC", struct {
			T Timestamp `json:"t"`
		}{Timestamp{time.Date(2026, 1, 2, 3, 4, 5, 6000, time.FixedZone("x", 3600))}}, `{"t":"2026-01-02T02:04:05.000006Z"}`},
		{"camel case names", endEvent{ExitCode: 1}, `{"exitCode":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := codec{}.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got %s, want %s", b, tc.want)
			}
		})
	}
}

func TestCodecUnmarshal(t *testing.T) {
	type msg struct {
		N   Int64            `json:"n"`
		U   Uint64           `json:"u"`
		B   Bytes            `json:"b"`
		S   signal           `json:"s"`
		T   Timestamp        `json:"t"`
		Sel *processSelector `json:"sel"`
	}
	tests := []struct {
		name    string
		in      string
		want    msg
		wantErr bool
	}{
		{"empty body", ``, msg{}, false},
		{"int64 from a string", `{"n":"-7"}`, msg{N: -7}, false},
		{"int64 from a number", `{"n":12}`, msg{N: 12}, false},
		{"uint64 from a string", `{"u":"18446744073709551615"}`, msg{U: 1<<64 - 1}, false},
		{"bytes in standard base64", `{"b":"+/8="}`, msg{B: Bytes{0xfb, 0xff}}, false},
		{"bytes in url-safe base64 unpadded", `{"b":"-_8"}`, msg{B: Bytes{0xfb, 0xff}}, false},
		{"enum by name", `{"s":"SIGNAL_SIGKILL"}`, msg{S: 9}, false},
		{"enum by number", `{"s":15}`, msg{S: 15}, false},
		{"nulls are defaults", `{"n":null,"u":null,"b":null,"s":null,"t":null,"sel":null}`, msg{}, false},
		{"unknown fields ignored", `{"newer":{"x":1},"n":"1"}`, msg{N: 1}, false},
		{"oneof by its field", `{"sel":{"tag":"t"}}`, msg{Sel: &processSelector{Tag: ptr("t")}}, false},
		{"timestamp", `{"t":"2026-01-02T03:04:05Z"}`, msg{T: Timestamp{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}, false},
		{"bad int64", `{"n":"x"}`, msg{}, true},
		{"bad bytes", `{"b":"*"}`, msg{}, true},
		{"unknown enum name", `{"s":"SIGNAL_SIGHUP"}`, msg{}, true},
		{"not json", `{`, msg{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got msg
			err := codec{}.Unmarshal([]byte(tc.in), &got)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !equalJSON(t, got, tc.want) {
				t.Fatalf("got %s, want %s", mustJSON(t, got), mustJSON(t, tc.want))
			}
		})
	}
	if (codec{}).Name() != "json" {
		t.Fatal("the codec must be named json to serve application/json and application/connect+json")
	}
}
