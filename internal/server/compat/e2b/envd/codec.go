package envd

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
)

// The envd messages are plain Go structs written to protobuf's JSON
// mapping (protojson), which is what the SDKs' Connect clients speak with
// useBinaryFormat false:
//
//   - field names in lowerCamelCase (json tags);
//   - zero values left out (omitempty), as proto3 does; a oneof is a set of
//     pointer fields of which one is set, and an empty message in a oneof
//     is still written ({}), so a *struct{} field is never omitempty'd away
//     while set;
//   - 64-bit integers as decimal strings (Int64, Uint64), 32-bit ones as
//     numbers;
//   - enums by their value names (enum, with a name table per type);
//   - bytes as base64 (Bytes takes both alphabets, as protojson does);
//   - google.protobuf.Timestamp as RFC 3339 in UTC (Timestamp).
//
// Unknown fields are ignored, so newer SDKs that send more still work.

// codec is the Connect codec named "json": it replaces connect-go's
// protobuf-based JSON codec for every handler made with connectOptions.
type codec struct{}

var _ connect.Codec = codec{}

func (codec) Name() string { return "json" }

func (codec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (codec) Unmarshal(data []byte, v any) error {
	// A message with every field at its default may come as an empty body.
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("envd: decode message: %w", err)
	}
	return nil
}

// maxMessageBytes bounds one message a client sends (a SendInput's data
// is the largest).
const maxMessageBytes = 4 << 20

// connectOptions are the options of every envd Connect handler: the JSON
// codec, a bound on what a client may send, and errors mapped to
// Connect codes (errorInterceptor), so handlers return paddock's errors.
func (h *Handler) connectOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(codec{}),
		connect.WithReadMaxBytes(maxMessageBytes),
		connect.WithInterceptors(errorInterceptor{h: h}),
	}
}

// Int64 is an int64 in protojson's spelling: written as a string, read
// from a string or a number.
type Int64 int64

func (v Int64) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, strconv.FormatInt(int64(v), 10)), nil
}

func (v *Int64) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	n, err := strconv.ParseInt(string(unquote(b)), 10, 64)
	if err != nil {
		return fmt.Errorf("int64 %s: %w", b, err)
	}
	*v = Int64(n)
	return nil
}

// Uint64 is a uint64 in protojson's spelling, as Int64.
type Uint64 uint64

func (v Uint64) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, strconv.FormatUint(uint64(v), 10)), nil
}

func (v *Uint64) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	n, err := strconv.ParseUint(string(unquote(b)), 10, 64)
	if err != nil {
		return fmt.Errorf("uint64 %s: %w", b, err)
	}
	*v = Uint64(n)
	return nil
}

// isNull reports a JSON null, which protojson reads as the default.
func isNull(b []byte) bool { return string(b) == "null" }

// unquote drops the quotes around a JSON string that holds a number.
func unquote(b []byte) []byte {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		return b[1 : len(b)-1]
	}
	return b
}

// Bytes is a bytes field: written in standard base64, read from standard
// or URL-safe base64, padded or not.
type Bytes []byte

func (v Bytes) MarshalJSON() ([]byte, error) {
	return json.Marshal([]byte(v))
}

func (v *Bytes) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("bytes: %w", err)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if d, err := enc.DecodeString(s); err == nil {
			*v = d
			return nil
		}
	}
	return fmt.Errorf("bytes: %q is not base64", s)
}

// Timestamp is a google.protobuf.Timestamp: RFC 3339 in UTC.
type Timestamp struct{ time.Time }

func (v Timestamp) MarshalJSON() ([]byte, error) {
	return strconv.AppendQuote(nil, v.UTC().Format(time.RFC3339Nano)), nil
}

func (v *Timestamp) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	v.Time = t
	return nil
}

// enumNames is one enum type's value names, by number.
type enumNames map[int32]string

// marshal writes v by name, or by number if it has none (as protojson
// does for values it does not know).
func (n enumNames) marshal(v int32) ([]byte, error) {
	if s, ok := n[v]; ok {
		return strconv.AppendQuote(nil, s), nil
	}
	return strconv.AppendInt(nil, int64(v), 10), nil
}

// decode reads a value (see unmarshal) into *v, leaving null as is: the
// body of every enum type's UnmarshalJSON.
func (n enumNames) decode(b []byte, v *int32) error {
	if isNull(b) {
		return nil
	}
	x, err := n.unmarshal(b)
	*v = x
	return err
}

// unmarshal reads a value by name or by number.
func (n enumNames) unmarshal(b []byte) (int32, error) {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return 0, err
		}
		for v, name := range n {
			if name == s {
				return v, nil
			}
		}
		return 0, fmt.Errorf("unknown enum value %q", s)
	}
	v, err := strconv.ParseInt(string(b), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("enum %s: %w", b, err)
	}
	return int32(v), nil
}

// keepaliveInterval is how often a server stream sends a keepalive: the
// client's Keepalive-Ping-Interval in seconds, bounded to [1s, 5m]; zero
// (none asked) means the default the SDKs use, 50 seconds.
func keepaliveInterval(hdr http.Header) time.Duration {
	const def = 50 * time.Second
	s, err := strconv.Atoi(hdr.Get(HeaderKeepalive))
	if err != nil || s <= 0 {
		return def
	}
	return min(max(time.Duration(s)*time.Second, time.Second), 5*time.Minute)
}
