package k8stest

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// keepDescriptors marks every descriptor this process inherited (fd 3 and
// up) close-on-exec. The daemons up.sh starts outlive the test binary, and
// would otherwise hold what it was given: above all the lock of `flock
// /tmp/paddock-root-tests.lock go test ...`, which a cluster left up (a
// test binary that panicked) then kept from every later run. Go opens its
// own descriptors close-on-exec already.
func keepDescriptors() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
