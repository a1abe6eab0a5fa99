// Package e2e tests the shale binary end to end with the real NBD clients
// people use: libnbd's nbdinfo, nbdcopy and Python bindings (nbdsh),
// qemu-io, qemu-img and qemu-nbd, fio's nbd engine, TLS with certificates
// made by openssl, a Unix socket, and the Linux kernel's nbd driver inside
// a qemu VM (../shared/vmclient).
//
// Each test builds nothing itself: the first one to need the server builds
// cmd/shale once into a temporary directory with `go build` (with -race when
// the tests run under -race, so the server is checked for data races under
// real client load), then every test starts its own server on 127.0.0.1
// with a port picked by the kernel (listen: 127.0.0.1:0; the port is read
// from the "shale listening" log line) and a configuration file in its own
// temporary directory. When the test ends the server gets SIGTERM and must
// exit 0 without a race report.
//
// A test whose client tool is missing fails and names the Debian package to
// install; nothing is skipped silently. The tools are those .ci/run installs.
//
// Environment:
//
//	SHALE_VMCLIENT_DIR  vmclient checkout for TestKernelClient
//	                    (default: ../shared/vmclient beside the repository)
//	VMCLIENT_*          passed through to vmclient's run.sh
//	                    (VMCLIENT_TIMEOUT defaults to 360 here)
package e2e
