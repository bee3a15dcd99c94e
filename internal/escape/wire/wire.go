// Package wire is what the escape probe prints and its runner reads: one
// JSON Result per line, then a Done line, so a probe that died half-way is
// told apart from one that ran every check. Standard library only: the probe
// is a small static program that links nothing of paddock's host side.
package wire

// Status is a check's outcome.
type Status string

const (
	// Blocked: the attack was tried and failed for the reason it should
	// (Detail names the errno or what was observed).
	Blocked Status = "blocked"
	// Escaped: the attack worked; Detail is the evidence.
	Escaped Status = "escaped"
	// Skipped: the attack could not be tried here (the kernel lacks the
	// feature, or the runner gave no target); Detail says why.
	Skipped Status = "skipped"
	// Error: the check could not tell, e.g. a positive control failed, so a
	// failure of the attack may have had the wrong cause. Never a pass.
	Error Status = "error"
)

// Result is one check's line.
type Result struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
}

// Done is the probe's last line: Checks is how many Result lines it printed.
type Done struct {
	Done   bool `json:"done"`
	Checks int  `json:"checks"`
}
