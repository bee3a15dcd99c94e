package agent

import (
	"net/http"
	"testing"
)

// Pinged holds the last successful ping's answer, and nothing before one
// or after a failed one.
func TestClientPinged(t *testing.T) {
	answer := `{"version":"v1","pid":1,"user":{"uid":1000,"gid":1000,"home":"/home/user","name":"user"}}`
	ok := true
	cl := fakeAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ok {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(answer))
	}))
	if info, got := cl.Pinged(); got {
		t.Fatalf("before any ping: %+v", info)
	}
	ok = false
	if _, err := cl.Ping(t.Context()); err == nil {
		t.Fatal("failed ping answered")
	}
	if info, got := cl.Pinged(); got {
		t.Fatalf("after a failed ping: %+v", info)
	}
	ok = true
	want, err := cl.Ping(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got, found := cl.Pinged()
	if !found || got.Version != "v1" || got.RunAs().UID != want.RunAs().UID || got.RunAs().Home != "/home/user" {
		t.Fatalf("after a ping: %+v, %v; want %+v", got, found, want)
	}
}
