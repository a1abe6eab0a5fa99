package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pki is a set of certificate directories laid out the way libnbd
// (tls-certificates=DIR) and qemu (tls-creds-x509,dir=DIR) read them.
type pki struct {
	server   string // ca-cert.pem, server-cert.pem, server-key.pem
	client   string // ca-cert.pem, client-cert.pem, client-key.pem signed by the CA
	foreign  string // ca-cert.pem, client cert and key signed by an unrelated CA
	impostor string // ca-cert.pem, client cert and key signed by another CA
	// with the same name as ours (GnuTLS picks client certificates by
	// issuer name, so this one is sent and the server must reject it)
	nocert string // ca-cert.pem only: verifies the server, presents nothing
}

// makePKI creates a CA, a server certificate for 127.0.0.1 and localhost,
// a client certificate signed by the CA, and client certificates from two
// other CAs, all with openssl. Keys are RSA, as certtool and most guides
// make them.
func makePKI(t *testing.T, dir string) pki {
	t.Helper()
	need(t, "openssl")
	p := pki{
		server:   filepath.Join(dir, "server"),
		client:   filepath.Join(dir, "client"),
		foreign:  filepath.Join(dir, "foreign"),
		impostor: filepath.Join(dir, "impostor"),
		nocert:   filepath.Join(dir, "nocert"),
	}
	work := filepath.Join(dir, "work")
	for _, d := range []string{p.server, p.client, p.foreign, p.impostor, p.nocert, work} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	f := func(name string) string { return filepath.Join(work, name) }
	writeExt := func(name, text string) string {
		if err := os.WriteFile(f(name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return f(name)
	}
	caExt := writeExt("ca.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n")
	serverExt := writeExt("server.ext", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"+
		"extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
	clientExt := writeExt("client.ext", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"+
		"extendedKeyUsage=clientAuth\n")

	openssl := func(args ...string) {
		t.Helper()
		run(t, "openssl", args...)
	}
	newCA := func(name, cn string) {
		openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f(name+"-key.pem"),
			"-subj", "/CN="+cn, "-out", f(name+".csr"))
		openssl("x509", "-req", "-in", f(name+".csr"), "-signkey", f(name+"-key.pem"),
			"-days", "2", "-extfile", caExt, "-out", f(name+"-cert.pem"))
	}
	newCert := func(name, cn, ca, ext string) {
		openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f(name+"-key.pem"),
			"-subj", "/CN="+cn, "-out", f(name+".csr"))
		openssl("x509", "-req", "-in", f(name+".csr"), "-CA", f(ca+"-cert.pem"), "-CAkey", f(ca+"-key.pem"),
			"-set_serial", fmt.Sprint(len(name)*7919), "-days", "2", "-extfile", ext, "-out", f(name+"-cert.pem"))
	}
	newCA("ca", "shale test CA")
	newCA("otherca", "unrelated test CA")
	newCA("impostorca", "shale test CA")
	newCert("server", "localhost", "ca", serverExt)
	newCert("client", "shale test client", "ca", clientExt)
	newCert("foreign", "foreign test client", "otherca", clientExt)
	newCert("impostor", "impostor test client", "impostorca", clientExt)

	cp := func(from, to string) {
		b, err := os.ReadFile(f(from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{p.server, p.client, p.foreign, p.impostor, p.nocert} {
		cp("ca-cert.pem", filepath.Join(d, "ca-cert.pem"))
	}
	cp("server-cert.pem", filepath.Join(p.server, "server-cert.pem"))
	cp("server-key.pem", filepath.Join(p.server, "server-key.pem"))
	cp("client-cert.pem", filepath.Join(p.client, "client-cert.pem"))
	cp("client-key.pem", filepath.Join(p.client, "client-key.pem"))
	cp("foreign-cert.pem", filepath.Join(p.foreign, "client-cert.pem"))
	cp("foreign-key.pem", filepath.Join(p.foreign, "client-key.pem"))
	cp("impostor-cert.pem", filepath.Join(p.impostor, "client-cert.pem"))
	cp("impostor-key.pem", filepath.Join(p.impostor, "client-key.pem"))
	return p
}

func tlsConfig(p pki, mode string, clientCA bool) string {
	s := fmt.Sprintf("tls:\n  mode: %s\n  cert: %s\n  key: %s\n", mode,
		filepath.Join(p.server, "server-cert.pem"), filepath.Join(p.server, "server-key.pem"))
	if clientCA {
		s += fmt.Sprintf("  client_ca: %s\n", filepath.Join(p.server, "ca-cert.pem"))
	}
	return s + "volumes:\n  - {name: vol0, size: 64M, ram: true, description: secret}\n"
}

func nbds(s *server, dir string) string {
	return fmt.Sprintf("nbds://%s/vol0?tls-certificates=%s", s.addr, dir)
}

// qemuTLSArgs are qemu-img/qemu-io arguments opening vol0 over TLS with
// the certificates in dir.
func qemuTLSArgs(s *server, dir string) []string {
	return []string{
		"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir,
		"--image-opts", fmt.Sprintf("driver=nbd,host=127.0.0.1,port=%d,export=vol0,tls-creds=tls0", s.port),
	}
}

// TestTLSRequire: with tls.mode require and client_ca, clients with a
// certificate from the CA get in (libnbd and qemu, data moves), and
// clients with a foreign certificate, with none, or without TLS are
// refused by the server.
func TestTLSRequire(t *testing.T) {
	need(t, "nbdinfo", "qemu-img", "qemu-io", "nbdcopy")
	dir := t.TempDir()
	p := makePKI(t, dir)
	s := startServer(t, tlsConfig(p, "require", true))

	info := nbdinfo(t, nbds(s, p.client))
	if !info.TLS || len(info.Exports) != 1 || info.Exports[0].Size != 64<<20 || info.Exports[0].Description != "secret" {
		t.Fatalf("nbdinfo over TLS: %+v", info)
	}
	list := nbdinfo(t, "--list", fmt.Sprintf("nbds://%s?tls-certificates=%s", s.addr, p.client))
	if len(list.Exports) != 1 || list.Exports[0].Name != "vol0" {
		t.Errorf("nbdinfo --list over TLS: %+v", list)
	}
	out := run(t, "qemu-img", append([]string{"info"}, qemuTLSArgs(s, p.client)...)...)
	if !strings.Contains(out, "virtual size: 64 MiB") {
		t.Errorf("qemu-img info over TLS:\n%s", out)
	}
	// Data over TLS: qemu-io writes, nbdcopy (multi-conn over TLS) reads.
	out = run(t, "qemu-io", append([]string{"-c", "write -P 0x3c 1M 4M", "-c", "read -P 0x3c 1M 4M"}, qemuTLSArgs(s, p.client)...)...)
	if strings.Contains(out, "failed") {
		t.Fatalf("qemu-io over TLS:\n%s", out)
	}
	img := filepath.Join(dir, "copy.img")
	run(t, "nbdcopy", nbds(s, p.client), img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b {
		want := byte(0)
		if i >= 1<<20 && i < 5<<20 {
			want = 0x3c
		}
		if c != want {
			t.Fatalf("byte %d copied over TLS is %#x, want %#x", i, c, want)
		}
	}

	// refused: nbdinfo fails, no connection reaches transmission, and the
	// server logs why it closed the connection.
	refused := func(what, uri, serverReason string) {
		t.Helper()
		opened := s.idle()
		before := s.count(serverReason)
		r := runFail(t, "nbdinfo", uri)
		t.Logf("%s: %s", what, strings.TrimSpace(r.stderr))
		if serverReason != "" && s.countAtLeast(serverReason, before+1) == before {
			t.Errorf("%s: server log has no new %q line", what, serverReason)
		}
		if n := s.idle(); n != opened {
			t.Errorf("%s: %d connection(s) entered transmission", what, n-opened)
		}
	}
	// GnuTLS does not even send a certificate whose issuer the server's
	// CertificateRequest does not name.
	refused("foreign client certificate", nbds(s, p.foreign), "client didn't provide a certificate")
	refused("impostor client certificate", nbds(s, p.impostor), "TLS handshake: tls: failed to verify certificate: x509:")
	refused("no client certificate", nbds(s, p.nocert), "client didn't provide a certificate")
	// Plaintext: every option is answered NBD_REP_ERR_TLS_REQD, libnbd
	// gives up with ABORT, which the server does not log at info level.
	refused("plaintext", s.URI("vol0"), "")
	if r := runFail(t, "qemu-img", "info", s.URI("vol0")); !strings.Contains(r.stderr, "TLS") {
		t.Errorf("qemu-img info without TLS: %s", r)
	}
}

// TestTLSOn: tls.mode on serves TLS and plaintext clients alike.
func TestTLSOn(t *testing.T) {
	need(t, "nbdinfo", "qemu-img")
	p := makePKI(t, t.TempDir())
	s := startServer(t, tlsConfig(p, "on", false))
	if info := nbdinfo(t, nbds(s, p.client)); !info.TLS {
		t.Errorf("nbds:// did not use TLS: %+v", info)
	}
	// Without client_ca the server asks for no client certificate.
	if info := nbdinfo(t, nbds(s, p.nocert)); !info.TLS {
		t.Errorf("nbds:// without a client certificate did not use TLS: %+v", info)
	}
	if info := nbdinfo(t, s.URI("vol0")); info.TLS || info.Exports[0].Size != 64<<20 {
		t.Errorf("plaintext nbdinfo: %+v", info)
	}
	run(t, "qemu-img", "info", s.URI("vol0"))
	run(t, "qemu-img", append([]string{"info"}, qemuTLSArgs(s, p.client)...)...)
}
