// Package layout holds the shape of paddock's tree as tests: which
// packages may import which (DESIGN.md's "imports point down"), and that
// every package says what it is for. It has no code of its own; a broken
// rule fails `go test ./...` like any other test.
package layout
