// Package runtimetest is the conformance suite every runtime.Driver must
// pass: each subtest creates real sandboxes through the driver and probes
// them through the agent client (commands, files, limits, isolation), then
// proves with leakcheck that nothing was left behind.
//
// A driver's test calls Run(t, newDriver), where newDriver returns a fresh
// driver (with its own data dir) and closes it in t.Cleanup.
package runtimetest
