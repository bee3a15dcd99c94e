// Package fake holds the hand-written fakes the tests of several packages
// share: a Clock the test moves, an Agent that speaks the agent protocol on
// a unix socket with scripted commands and in-memory files, a
// runtime.Driver whose sandboxes are map entries answered by such an
// Agent, and in-memory Sandboxes and Snapshots for the layers above node.
// It is test support, like imagetest and leakcheck: only _test.go files
// import it (internal/layout's TestFakeOnlyInTests holds that).
package fake
