// Package bench measures paddock's sandbox start-up, exec round trip and file
// throughput, each beside a baseline measured in the same run (Debian's runc
// CLI on an equivalent bundle, or the host itself), and reports the ratio.
//
//	go test -run '^$' -bench . -benchtime 60x ./bench/
//
// BenchmarkProxy measures a sandbox's HTTP port (bench/echoserver, built
// and copied into the sandbox by the benchmark) directly at the sandbox's
// address and through the port proxy, in the same run: latency p50/p99 of
// sequential requests and requests/s of 8 concurrent keep-alive clients,
// for a 2-byte and a 1 MiB response. When Debian's nginx is installed
// (apt install nginx-light) it proxies the same port as a reference, so the
// ratios can be read against a mature proxy on the same cores; without it
// the reference is skipped with a log line. One iteration is one full measurement
// (about 10 s per size), so run it alone with
//
//	go test -run '^$' -bench Proxy -benchtime 1x ./bench/
//
// Under the command above (-benchtime 60x) it measures rounds only for
// 90 s per size and pools them, to stay within go test's timeout. It needs
// root, networks sandboxes from 10.213.251.0/24 on veths it creates, and
// sends traffic nowhere else (the sandbox resolver's upstream is a closed
// loopback port).
//
// BenchmarkUserNSCreate is create → first command with each sandbox's user
// namespace (the default) and without (runc.Config.NoUserNS), interleaved
// in one run; added-p50-ms is what user namespaces cost:
//
//	go test -run '^$' -bench UserNSCreate -benchtime 20x ./bench/
//
// BenchmarkE2BCreateToFirstCommand is the unmodified e2b JS SDK's
// Sandbox.create() until a first commands.run has finished (E2B control
// plane and envd data plane, Node's loop in one process) beside the Go
// SDK's create until a first command has finished, in the same run;
// ratio-p50 is E2B's over Go's. It needs node and npm ci in
// internal/server/compat/e2b/nodetest (else it skips):
//
//	go test -run '^$' -bench E2BCreateToFirstCommand -benchtime 20x ./bench/
//
// BenchmarkDensity keeps PADDOCK_DENSITY_N (default 2,000) idle sandboxes
// on the host at once and reports what each costs (PSS of its processes
// plus the kernel memory charged to its cgroup), paddock's RSS and fds,
// and create and exec p50 at the first and the last 50; it raises the host
// limits it needs for the run and restores them (see raiseDensityLimits).
// One iteration is the whole run, some minutes at 2,000:
//
//	flock /tmp/paddock-root-tests.lock go test -run '^$' -bench Density -benchtime 1x -timeout 60m ./bench/
//
// BenchmarkGVisorCreateToFirstCommand, BenchmarkGVisorExecRoundTrip,
// BenchmarkGVisorFileWrite and BenchmarkGVisorIdleMemory run the runc
// driver and the gVisor driver (runsc) side by side in one run and report
// each runtime's figures with gVisor's over runc's (ratio-*); they skip
// without runsc:
//
//	flock /tmp/paddock-root-tests.lock go test -run '^$' -bench GVisor -benchtime 20x ./bench/
//
// BenchmarkKubernetesCreateToFirstCommand and BenchmarkKubernetesExecRoundTrip
// run the kubernetes driver (a sandbox is a Pod on the one-node test
// cluster of hack/k8s, on this host) and the runc driver side by side in
// one run, interleaved, on the image "host" with the same resources, and
// report each driver's p50/p99 with the Pod's over runc's (ratio-p50);
// the create's Pod steps (kubernetes-schedule, -install, -start, -agent
// p50) come from a watch on the benchmark's namespace.
// BenchmarkKubernetesWarmClaim is a claim from paddock's warm pool
// (internal/pool over internal/node, the daemon's create path without the
// daemon) of PADDOCK_K8S_POOL_N (default 2) idle Pods until a first command
// finished, against a cold create → first command on the same driver in
// the same iterations (claim-p50-ms, cold-p50-ms, ratio-p50), with runc's
// pool measured alike beside it (runc-claim-p50-ms, runc-cold-p50-ms).
// They skip unless PADDOCK_TEST_K8S=1; the first brings the cluster up
// (the binaries of hack/k8s/build.sh), TestMain tears it down:
//
//	export PADDOCK_K8S_BIN=$(hack/k8s/build.sh | tail -n 1)
//	PADDOCK_TEST_K8S=1 flock /tmp/paddock-root-tests.lock go test -run '^$' -bench Kubernetes -benchtime 20x -timeout 30m ./bench/
//
// Figures are reported as custom benchmark metrics (p50-ms, p99-ms, ...);
// nothing here asserts a time.
package bench
