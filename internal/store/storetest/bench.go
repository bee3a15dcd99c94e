package storetest

import (
	"fmt"
	"testing"

	"github.com/paddock-dev/paddock/internal/store"
)

// BenchPutSandbox measures PutSandbox of a full record over 100 sandboxes
// (inserts, then replaces).
func BenchPutSandbox(b *testing.B, s store.Store) {
	r := store.SandboxRecord{Node: "node-1", Sandbox: fullSandbox("sb-0", 0)}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r.Sandbox.ID = fmt.Sprintf("sb-%d", i%100)
		if err := s.PutSandbox(b.Context(), r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchGetTokenByHash measures the lookup every API request makes, among
// 1000 tokens.
func BenchGetTokenByHash(b *testing.B, s store.Store) {
	const n = 1000
	for i := range n {
		if err := s.CreateToken(b.Context(), store.Token{ID: fmt.Sprintf("tok-%d", i), TeamID: "team-a",
			Hash: hash(fmt.Sprint(i)), Role: store.RoleMember}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.GetTokenByHash(b.Context(), hash(fmt.Sprint(i%n))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchAppendEvent measures AppendEvent from one writer.
func BenchAppendEvent(b *testing.B, s store.Store) {
	for b.Loop() {
		if _, err := s.AppendEvent(b.Context(), store.Event{Type: "bench", TeamID: "team-a"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchUpdateProject measures an optimistic update without contention.
func BenchUpdateProject(b *testing.B, s store.Store) {
	if err := s.CreateProject(b.Context(), project("prj-bench", "team-a", "bench", 0)); err != nil {
		b.Fatal(err)
	}
	p, err := s.GetProject(b.Context(), "team-a", "prj-bench")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if p, err = s.UpdateProject(b.Context(), p); err != nil {
			b.Fatal(err)
		}
	}
}
