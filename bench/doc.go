// Package bench measures paddock's sandbox start-up, exec round trip and file
// throughput, each beside a baseline measured in the same run (Debian's runc
// CLI on an equivalent bundle, or the host itself), and reports the ratio.
//
//	go test -run '^$' -bench . -benchtime 60x ./bench/
//
// Figures are reported as custom benchmark metrics (p50-ms, p99-ms, ...);
// nothing here asserts a time.
package bench
