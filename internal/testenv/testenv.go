// Package testenv tells tests what the machine they run on can do: whether
// they run as root, whether the nsbroker module is loaded, and whether they
// run inside the project's test VM, where every integration test must run
// for real instead of skipping.
package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// VMEnv is the environment variable the VM harness sets in the guest.
const VMEnv = "NSB_VM"

// UnitParam is where the loaded module publishes its netlink unit.
const UnitParam = "/sys/module/nsbroker/parameters/unit"

// InVM reports whether the test runs inside the project's test VM.
func InVM() bool { return os.Getenv(VMEnv) == "1" }

// skipOrFail skips on an ordinary host and fails inside the VM, where every
// precondition is supposed to hold.
func skipOrFail(t testing.TB, reason string) {
	t.Helper()
	if InVM() {
		t.Fatalf("inside the test VM but %s", reason)
	}
	t.Skipf("%s; this test runs in the VM (make vmtest)", reason)
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "not running as root")
	}
}

// RequireModule skips the test unless the nsbroker module is loaded (it
// fails instead inside the VM) and returns the module's netlink unit.
func RequireModule(t testing.TB) int {
	t.Helper()
	RequireRoot(t)
	unit, err := ModuleUnit()
	if err != nil {
		skipOrFail(t, "the nsbroker module is not loaded: "+err.Error())
	}
	return unit
}

// ModuleUnit reads the loaded module's netlink unit from sysfs.
func ModuleUnit() (int, error) {
	b, err := os.ReadFile(UnitParam)
	if err != nil {
		return 0, err
	}
	unit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", UnitParam, err)
	}
	return unit, nil
}

var nameSeq atomic.Int64

// NetnsName returns a namespace name unique to this process and call:
// nsb-test-<pid>-<n>.
func NetnsName() string {
	return fmt.Sprintf("nsb-test-%d-%d", os.Getpid(), nameSeq.Add(1))
}

// DebugKernelSuffix ends the release of the test VM's debug kernel
// (test/netns/debugkernel: KASAN, lockdep, kmemleak).
const DebugKernelSuffix = "-nsb-debug"

// DebugKernel reports whether the test runs on the debug kernel, where the
// kernel path is tens of times slower than on a production kernel.
func DebugKernel() bool {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	return err == nil && strings.HasSuffix(strings.TrimSpace(string(b)), DebugKernelSuffix)
}

// SkipOnDebugKernel skips a test whose criteria are rates or latencies
// measured against each other: on the debug kernel the kernel path's cost
// distorts them. Such a test still runs in the suites on the Debian kernel.
func SkipOnDebugKernel(t testing.TB) {
	t.Helper()
	if DebugKernel() {
		t.Skip("measures rates, which the debug kernel's checks distort; it runs on the Debian kernel (make vmtest)")
	}
}
