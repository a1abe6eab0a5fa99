package e2e

import "testing"

// The real-client suite on engine volumes: the same clients and checks as
// on RAM volumes (nbdcopy, qemu-io, qemu-img, fio with verify, the kernel
// client), against volumes stored by the engine on the default drives
// (configuration without drives or nvram: 7+2 sparse file drives and an
// NVRAM file in the data directory), every write acknowledged only when
// durable.

func TestEngineNbdcopy(t *testing.T) {
	need(t, "nbdcopy")
	testNbdcopy(t, startServer(t, "volumes:\n  - {name: vol0, size: 64M}\n  - {name: vol1, size: 64M}\n"))
}

func TestEngineQemuIO(t *testing.T) {
	need(t, "qemu-io")
	testQemuIO(t, startServer(t, "volumes:\n  - {name: vol0, size: 64M}\n"))
}

func TestEngineQemuImg(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	testQemuImg(t, startServer(t, "volumes:\n  - {name: vol0, size: 64M}\n"), true)
}

func TestEngineFio(t *testing.T) {
	need(t, "fio")
	testFio(t, startServer(t, "volumes:\n  - {name: vol0, size: 128M}\n"))
}

// TestEngineKernelClient runs vmclient's smoke scenario (mkfs.ext4, files
// written, disconnect, reconnect, fsck, checksums) on an engine volume:
// the kernel sends 512-byte and 4 KiB writes, flushes and trims.
func TestEngineKernelClient(t *testing.T) {
	testKernelClient(t, "volumes:\n  - {name: vol0, size: 1G}\n")
}
