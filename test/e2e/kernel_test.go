package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Limits of the kernel-client test. vmclient's own VMCLIENT_TIMEOUT bounds
// the VM run (its guest watchdog fires 10% earlier); kernelTestTimeout also
// covers building the kernel and initramfs on a fresh machine (about 30 s)
// and the one-off KVM probe (20-30 s).
const (
	kernelDefaultVMTimeout = "360"
	kernelTestTimeout      = 12 * time.Minute
)

// vmclientDir finds vmclient: $SHALE_VMCLIENT_DIR, else ../shared/vmclient
// beside the repository, else /work/shared/vmclient.
func vmclientDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("SHALE_VMCLIENT_DIR"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "run.sh")); err != nil {
			t.Fatalf("SHALE_VMCLIENT_DIR: %v", err)
		}
		return dir
	}
	// Beside the repository, or beside the checkout it was cloned from
	// (CI may check main out elsewhere).
	candidates := []string{
		filepath.Join(repoRoot(t), "..", "shared", "vmclient"),
		"/work/shared/vmclient",
	}
	for _, dir := range candidates {
		if _, err := os.Stat(filepath.Join(dir, "run.sh")); err == nil {
			return dir
		}
	}
	t.Fatalf("vmclient not found in %v; check out the shared tools beside the repository or set SHALE_VMCLIENT_DIR=/path/to/vmclient", candidates)
	return ""
}

var vmResultRE = regexp.MustCompile(`(?m)^VMCLIENT (RESULT|DONE|SUMMARY) .*$`)

// TestKernelClient attaches a 1 GiB RAM volume to the Linux kernel's NBD
// client (nbd-client + nbd.ko in a qemu VM, Debian's kernel) and runs
// vmclient's smoke scenario: mkfs.ext4, 50 MB of files written, disconnect,
// reconnect, fsck and every checksum verified. SHALE_VMCLIENT_SCENARIO
// picks another scenario (all, fio, trim).
func TestKernelClient(t *testing.T) {
	testKernelClient(t, "volumes:\n  - {name: vol0, size: 1G, ram: true}\n")
}

// testKernelClient runs TestKernelClient on a server with config extra,
// which must serve a 1 GiB volume vol0.
func testKernelClient(t *testing.T, extra string) {
	need(t, "qemu-system-x86_64", "cpio", "xz")
	dir := vmclientDir(t)
	scenario := os.Getenv("SHALE_VMCLIENT_SCENARIO")
	if scenario == "" {
		scenario = "smoke"
	}
	s := startServer(t, extra)

	ctx, cancel := context.WithTimeout(context.Background(), kernelTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "run.sh"), itoa(s.port), "vol0", scenario)
	// run.sh stops its VM on SIGTERM; SIGKILL would leave qemu behind.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Env = os.Environ()
	if os.Getenv("VMCLIENT_TIMEOUT") == "" {
		cmd.Env = append(cmd.Env, "VMCLIENT_TIMEOUT="+kernelDefaultVMTimeout)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	text := out.String()
	t.Logf("run.sh %d vol0 %s: %v after %v\n%s", s.port, scenario, err, time.Since(start).Round(time.Second),
		strings.Join(uniq(vmResultRE.FindAllString(text, -1)), "\n"))
	if err != nil || !strings.Contains(text, "VMCLIENT DONE status=pass") {
		t.Fatalf("kernel client scenario %s failed (exit %v; run.sh exits 1 when a check failed, 3 on a harness problem)\n%s",
			scenario, err, tail(text, 120))
	}
}

// uniq drops repeated lines (run.sh prints its results twice), keeping
// the first of each in order.
func uniq(lines []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}
