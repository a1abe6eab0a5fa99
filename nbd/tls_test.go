package nbd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testPKI is a CA with a server certificate and client certificates made
// in memory.
type testPKI struct {
	caPool    *x509.CertPool
	server    tls.Certificate
	client    tls.Certificate // signed by the CA
	rogue     tls.Certificate // self-signed, unknown to the server
	roguePool *x509.CertPool
}

func newCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
}

func makePKI(t *testing.T) *testPKI {
	now := time.Now()
	serial := int64(1)
	tmpl := func(cn string, ca bool, usage x509.ExtKeyUsage) *x509.Certificate {
		serial++
		c := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(time.Hour),
			BasicConstraintsValid: true,
			IsCA:                  ca,
		}
		if ca {
			c.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		} else {
			c.KeyUsage = x509.KeyUsageDigitalSignature
			c.ExtKeyUsage = []x509.ExtKeyUsage{usage}
		}
		return c
	}
	ca, caKey, _ := newCert(t, tmpl("test CA", true, 0), nil, nil)
	p := &testPKI{caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	st := tmpl("localhost", false, x509.ExtKeyUsageServerAuth)
	st.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	_, _, p.server = newCert(t, st, ca, caKey)
	_, _, p.client = newCert(t, tmpl("client", false, x509.ExtKeyUsageClientAuth), ca, caKey)
	rogueCA, rogueKey, _ := newCert(t, tmpl("rogue CA", true, 0), nil, nil)
	_, _, p.rogue = newCert(t, tmpl("rogue", false, x509.ExtKeyUsageClientAuth), rogueCA, rogueKey)
	p.roguePool = x509.NewCertPool()
	p.roguePool.AddCert(rogueCA)
	return p
}

func (p *testPKI) serverConfig(verifyClients bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{p.server}}
	if verifyClients {
		cfg.ClientCAs = p.caPool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

func (p *testPKI) clientConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.caPool, ServerName: "127.0.0.1"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func TestTLSOff(t *testing.T) {
	ts := startServer(t, Options{}, map[string]Export{"a": newMemExport(4096, Features{})})
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optStartTLS, nil)
	if rs := c.optReplies(optStartTLS); rs[0].typ != repErrPolicy {
		t.Fatalf("STARTTLS with TLS off: %#x", rs[0].typ)
	}
	c.connect("a", false, false)
	c.read(0, 512)
}

func TestTLSOn(t *testing.T) {
	pki := makePKI(t)
	inline := allFeatures
	inline.NonBlocking = true // replies written by the reader over TLS
	ts := startServer(t, Options{TLSMode: TLSOn, TLSConfig: pki.serverConfig(false)}, map[string]Export{"a": newMemExport(1<<20, inline)})
	// Plaintext is allowed.
	c := dial(t, ts.addr)
	c.open("a", true, true)
	c.read(0, 512)
	// STARTTLS works, and forgets what was negotiated before it.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	c.sendOpt(optStructuredReply, nil)
	c.optReplies(optStructuredReply)
	c.sendOpt(optStartTLS, []byte("x"))
	if rs := c.optReplies(optStartTLS); rs[0].typ != repErrInvalid {
		t.Errorf("STARTTLS with data: %#x", rs[0].typ)
	}
	if err := c.startTLS(pki.clientConfig(nil)); err != nil {
		t.Fatal(err)
	}
	c.sendOpt(optStartTLS, nil)
	if rs := c.optReplies(optStartTLS); rs[0].typ != repErrInvalid {
		t.Errorf("second STARTTLS: %#x", rs[0].typ)
	}
	c.sendOpt(optSetMetaContext, metaData("a", metaContextBaseAllocation))
	if rs := c.optReplies(optSetMetaContext); rs[0].typ != repErrInvalid {
		t.Errorf("SET_META_CONTEXT after STARTTLS without new SR: %#x", rs[0].typ)
	}
	c.goExport("a")
	if c.flags&tflagSendDF != 0 {
		t.Errorf("DF advertised although SR was discarded")
	}
	r := c.do(cmdRead, 0, 0, 512, nil)
	if !r.simple || r.errno != 0 {
		t.Errorf("READ over TLS after discarded SR: %+v", r)
	}
	c.mustOK(c.do(cmdWrite, cmdFlagFUA, 0, 4096, pattern(4096, 1)))
}

func TestTLSRequire(t *testing.T) {
	pki := makePKI(t)
	ts := startServer(t, Options{TLSMode: TLSRequire, TLSConfig: pki.serverConfig(true)}, map[string]Export{"a": newMemExport(1<<20, allFeatures)})
	// Everything but STARTTLS and ABORT is refused before TLS.
	c := dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	for _, opt := range []uint32{optList, optInfo, optGo, optStructuredReply, optListMetaContext, 99} {
		var data []byte
		if opt == optInfo || opt == optGo {
			data = infoData("a")
		}
		c.sendOpt(opt, data)
		if rs := c.optReplies(opt); len(rs) != 1 || rs[0].typ != repErrTLSReqd {
			t.Errorf("%s before TLS: %+v", optionName(opt), rs)
		}
	}
	c.sendOpt(optExportName, []byte("a"))
	c.expectClosed()
	// Non-fixed-newstyle clients cannot do TLS: dropped.
	c = dial(t, ts.addr)
	c.sendFlags(0)
	c.expectClosed()
	// ABORT is allowed.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle)
	c.sendOpt(optAbort, nil)
	if rs := c.optReplies(optAbort); rs[0].typ != repAck {
		t.Errorf("ABORT: %#x", rs[0].typ)
	}
	// A client with a good certificate gets in.
	c = dial(t, ts.addr)
	c.sendFlags(clientFixedNewstyle | clientNoZeroes)
	if err := c.startTLS(pki.clientConfig(&pki.client)); err != nil {
		t.Fatal(err)
	}
	c.connect("a", true, true)
	c.mustOK(c.do(cmdWrite, 0, 0, 4096, pattern(4096, 2)))
	if got := c.read(0, 4096); got[1] != pattern(4096, 2)[1] {
		t.Errorf("data over TLS")
	}
	c.mustOK(c.do(cmdBlockStatus, 0, 0, 8192, nil))
	c.request(cmdDisc, 0, 1, 0, 0, nil)
	c.expectClosed()
	// No certificate, or one from an unknown CA: refused.
	for name, cert := range map[string]*tls.Certificate{"no cert": nil, "rogue cert": &pki.rogue} {
		c = dial(t, ts.addr)
		c.sendFlags(clientFixedNewstyle | clientNoZeroes)
		err := c.startTLS(pki.clientConfig(cert))
		if err == nil {
			// TLS 1.3: the client finishes first; the server's verdict
			// arrives with the first read.
			c.sendOpt(optList, nil)
			_, err = c.readOptRep()
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if ts.srv.Stats().HandshakesFailed < 2 {
		t.Errorf("handshake failures %d", ts.srv.Stats().HandshakesFailed)
	}
}
