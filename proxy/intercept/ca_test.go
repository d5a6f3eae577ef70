package intercept

// White-box tests of the interception certificates: the CA on disk, the
// leaves, the cache, and a real TLS handshake over loopback.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// certTestWait bounds every wait here; it only keeps a broken test from
// hanging.
const certTestWait = 15 * time.Second

// certTestNow is the fixed instant most of these tests run at.
func certTestNow() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) }

// certTestClock is an injectable wall clock that stays put until set.
type certTestClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *certTestClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *certTestClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// certTestNewCA creates a CA with CreateCA in a temporary directory and
// loads it.
func certTestNewCA(t testing.TB, now time.Time) *CA {
	t.Helper()
	certFile, keyFile, err := CreateCA(t.TempDir(), "", now)
	if err != nil {
		t.Fatalf("CreateCA: %v", err)
	}
	ca, err := LoadCA(certFile, keyFile, now)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	return ca
}

func certTestPool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func certTestWritePEM(t testing.TB, path string, blocks ...*pem.Block) {
	t.Helper()
	var b bytes.Buffer
	for _, bl := range blocks {
		if err := pem.Encode(&b, bl); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// certTestSelfSigned returns a self-signed certificate for key, a CA or not,
// valid one hour either side of now.
func certTestSelfSigned(t testing.TB, key crypto.Signer, isCA bool, now time.Time) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "feedgate test"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// certTestRSACA writes a CA with an RSA-2048 key in PKCS#1 form and loads it.
func certTestRSACA(t testing.TB, now time.Time) *CA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	certTestWritePEM(t, certFile, &pem.Block{Type: "CERTIFICATE", Bytes: certTestSelfSigned(t, key, true, now)})
	certTestWritePEM(t, keyFile, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	ca, err := LoadCA(certFile, keyFile, now)
	if err != nil {
		t.Fatalf("LoadCA with an RSA key: %v", err)
	}
	return ca
}

// certTestVerify verifies a leaf from the cache against a pool holding only
// ca, for name at now.
func certTestVerify(t *testing.T, ca *CA, cert *tls.Certificate, name string, now time.Time) {
	t.Helper()
	if len(cert.Certificate) != 2 {
		t.Fatalf("chain has %d certificates; want 2 (leaf, CA)", len(cert.Certificate))
	}
	if !bytes.Equal(cert.Certificate[1], ca.Cert.Raw) {
		t.Errorf("second certificate of the chain is not the CA")
	}
	if cert.Leaf == nil || !bytes.Equal(cert.Leaf.Raw, cert.Certificate[0]) {
		t.Fatalf("Leaf is not set to the first certificate of the chain")
	}
	_, err := cert.Leaf.Verify(x509.VerifyOptions{
		DNSName:     name,
		Roots:       certTestPool(ca),
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		t.Errorf("leaf for %q does not verify: %v", name, err)
	}
}

func TestCreateCA(t *testing.T) {
	now := certTestNow()
	tests := []struct {
		name, org, wantOrg string
	}{
		{"default-org", "", "feedgate"},
		{"given-org", "Example Corp", "Example Corp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A directory that does not exist yet, two levels down.
			dir := filepath.Join(t.TempDir(), "etc", "feedgate")
			certFile, keyFile, err := CreateCA(dir, tt.org, now)
			if err != nil {
				t.Fatalf("CreateCA: %v", err)
			}
			if certFile != filepath.Join(dir, "ca.crt") || keyFile != filepath.Join(dir, "ca.key") {
				t.Errorf("CreateCA returned %q, %q", certFile, keyFile)
			}
			for file, mode := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
				fi, err := os.Stat(file)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != mode {
					t.Errorf("%s has mode %v; want %v", file, fi.Mode(), mode)
				}
			}
			// No temporary files are left behind.
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"ca.crt", "ca.key"}) {
				t.Errorf("directory holds %v; want [ca.crt ca.key]", names)
			}
			keyPEM, err := os.ReadFile(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "PRIVATE KEY" {
				t.Errorf("ca.key is not a PEM PKCS#8 PRIVATE KEY block")
			}

			ca, err := LoadCA(certFile, keyFile, now)
			if err != nil {
				t.Fatalf("LoadCA: %v", err)
			}
			c := ca.Cert
			if !c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("IsCA=%v BasicConstraintsValid=%v; want both", c.IsCA, c.BasicConstraintsValid)
			}
			if c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("MaxPathLen=%d MaxPathLenZero=%v; want 0, true", c.MaxPathLen, c.MaxPathLenZero)
			}
			if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; c.KeyUsage != want {
				t.Errorf("KeyUsage = %v; want %v", c.KeyUsage, want)
			}
			if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key is %T; want ECDSA P-256", c.PublicKey)
			}
			if _, ok := ca.Key.(*ecdsa.PrivateKey); !ok {
				t.Errorf("key is %T; want *ecdsa.PrivateKey", ca.Key)
			}
			if want := now.Add(-time.Hour); !c.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %v; want %v", c.NotBefore, want)
			}
			if want := now.Add(-time.Hour).AddDate(10, 0, 0); !c.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %v; want %v (10 years)", c.NotAfter, want)
			}
			if c.Subject.CommonName != "feedgate interception CA" || !slices.Equal(c.Subject.Organization, []string{tt.wantOrg}) {
				t.Errorf("Subject = %v; want CN=feedgate interception CA, O=%s", c.Subject, tt.wantOrg)
			}
			if len(c.SubjectKeyId) != 20 {
				t.Errorf("SubjectKeyId is %d bytes; want 20", len(c.SubjectKeyId))
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
		})
	}
}

func TestCreateCARefusesToOverwrite(t *testing.T) {
	now := certTestNow()
	tests := []struct {
		name     string
		existing []string // files present before the second CreateCA
	}{
		{"both", []string{"ca.crt", "ca.key"}},
		{"only-key", []string{"ca.key"}},
		{"only-cert", []string{"ca.crt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := CreateCA(dir, "", now); err != nil {
				t.Fatalf("first CreateCA: %v", err)
			}
			for _, f := range []string{"ca.crt", "ca.key"} {
				if !slices.Contains(tt.existing, f) {
					if err := os.Remove(filepath.Join(dir, f)); err != nil {
						t.Fatal(err)
					}
				}
			}
			before := map[string][]byte{}
			for _, f := range tt.existing {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				before[f] = b
			}

			_, _, err := CreateCA(dir, "", now.Add(time.Minute))
			if err == nil {
				t.Fatal("second CreateCA succeeded; want an error")
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tt.existing[0])) || !strings.Contains(err.Error(), "already exists") {
				t.Errorf("error %q does not name %s as existing", err, tt.existing[0])
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != len(tt.existing) {
				t.Errorf("directory holds %d entries after the refusal; want %d", len(ents), len(tt.existing))
			}
			for f, b := range before {
				after, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(after, b) {
					t.Errorf("%s changed", f)
				}
			}
		})
	}
}

func TestLoadCAErrors(t *testing.T) {
	now := certTestNow()
	base := t.TempDir()
	goodCert, goodKey, err := CreateCA(filepath.Join(base, "good"), "", now)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := CreateCA(filepath.Join(base, "other"), "", now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(goodCert, goodKey, now)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, blocks ...*pem.Block) string {
		p := filepath.Join(base, name)
		certTestWritePEM(t, p, blocks...)
		return p
	}
	garbage := filepath.Join(base, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("this is not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafKeyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edKeyDER, err := x509.MarshalPKCS8PrivateKey(edKey)
	if err != nil {
		t.Fatal(err)
	}

	nonCACert := write("leaf.crt", &pem.Block{Type: "CERTIFICATE", Bytes: certTestSelfSigned(t, leafKey, false, now)})
	nonCAKey := write("leaf.key", &pem.Block{Type: "PRIVATE KEY", Bytes: leafKeyDER})
	missing := filepath.Join(base, "missing.pem")

	tests := []struct {
		name              string
		certFile, keyFile string
		now               time.Time
		wantFile, want    string // the file the error must name, and some of its text
	}{
		{"missing-cert", missing, goodKey, now, missing, "no such file"},
		{"missing-key", goodCert, missing, now, missing, "no such file"},
		{"garbage-cert", garbage, goodKey, now, garbage, "no PEM data"},
		{"garbage-key", goodCert, garbage, now, garbage, "no PEM data"},
		{"key-in-cert-file", goodKey, goodKey, now, goodKey, "found PRIVATE KEY"},
		{"cert-in-key-file", goodCert, goodCert, now, goodCert, "found CERTIFICATE"},
		{"corrupt-cert-der", write("corrupt.crt", &pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}), goodKey, now, filepath.Join(base, "corrupt.crt"), "parsing the CERTIFICATE block"},
		{"corrupt-key-der", goodCert, write("corrupt.key", &pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")}), now, filepath.Join(base, "corrupt.key"), "parsing the PRIVATE KEY block"},
		{"encrypted-key", goodCert, write("enc.key", &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), now, filepath.Join(base, "enc.key"), "encrypted"},
		{"key-mismatch", goodCert, otherKey, now, otherKey, "does not match"},
		{"not-a-ca", nonCACert, nonCAKey, now, nonCACert, "not a CA"},
		{"expired", goodCert, goodKey, ca.Cert.NotAfter.Add(time.Second), goodCert, "not valid at"},
		{"not-yet-valid", goodCert, goodKey, ca.Cert.NotBefore.Add(-time.Second), goodCert, "not valid at"},
		{"ed25519", write("ed.crt", &pem.Block{Type: "CERTIFICATE", Bytes: certTestSelfSigned(t, edKey, true, now)}),
			write("ed.key", &pem.Block{Type: "PRIVATE KEY", Bytes: edKeyDER}), now, filepath.Join(base, "ed.key"), "unsupported key type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadCA(tt.certFile, tt.keyFile, tt.now)
			if err == nil {
				t.Fatalf("LoadCA succeeded (%v); want an error", got.Cert.Subject)
			}
			if !strings.Contains(err.Error(), tt.wantFile) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q; want it to name %s and contain %q", err, tt.wantFile, tt.want)
			}
		})
	}
	// The validity window is in the message, so the operator sees why.
	_, err = LoadCA(goodCert, goodKey, ca.Cert.NotAfter.Add(time.Second))
	if want := ca.Cert.NotAfter.UTC().Format(time.RFC3339); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("expired-CA error %v does not show the NotAfter %s", err, want)
	}
}

// TestLoadCAKeyFormats loads each accepted key encoding and checks that
// leaves signed with it are ECDSA P-256 and verify.
func TestLoadCAKeyFormats(t *testing.T) {
	now := certTestNow()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecParams := &pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}}
	rsaCA := certTestRSACA(t, now) // PKCS#1
	rsaKey := rsaCA.Key.(*rsa.PrivateKey)
	rsaPKCS8, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		key    crypto.Signer
		blocks []*pem.Block
	}{
		// openssl ecparam -genkey writes the parameters before the key.
		{"sec1-ec-with-params", ecKey, []*pem.Block{ecParams, {Type: "EC PRIVATE KEY", Bytes: sec1}}},
		{"pkcs1-rsa", rsaKey, []*pem.Block{{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}}},
		{"pkcs8-rsa", rsaKey, []*pem.Block{{Type: "PRIVATE KEY", Bytes: rsaPKCS8}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
			certTestWritePEM(t, certFile, &pem.Block{Type: "CERTIFICATE", Bytes: certTestSelfSigned(t, tt.key, true, now)})
			certTestWritePEM(t, keyFile, tt.blocks...)
			ca, err := LoadCA(certFile, keyFile, now)
			if err != nil {
				t.Fatalf("LoadCA: %v", err)
			}
			cert, err := newLeafCache(ca, certTestNow, 8).get("store.kaspersky.com")
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if pub, ok := cert.Leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("leaf key is %T; want ECDSA P-256 whatever the CA key", cert.Leaf.PublicKey)
			}
			certTestVerify(t, ca, cert, "store.kaspersky.com", now)
		})
	}
}

func TestCanonicalHost(t *testing.T) {
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61) // 253
	tests := []struct {
		in, want string
		wantErr  string
	}{
		{in: "dnl-01.geo.kaspersky.com", want: "dnl-01.geo.kaspersky.com"},
		{in: "DNL-01.Geo.Kaspersky.COM.", want: "dnl-01.geo.kaspersky.com"},
		{in: "127.0.0.1", want: "127.0.0.1"},
		{in: "::1", want: "::1"},
		{in: "0:0:0:0:0:0:0:1", want: "::1"},
		{in: "[::1]", want: "::1"},
		{in: "FE80::1%eth0", want: "fe80::1"},
		{in: "host1", want: "host1"},
		{in: long, want: long},
		{in: long + ".", want: long},
		{in: "", wantErr: "empty"},
		{in: ".", wantErr: "empty"},
		{in: long + "x", wantErr: "longer than 253"},
		{in: "example.test:443", wantErr: "not an IP"},
	}
	for _, tt := range tests {
		got, err := canonicalHost(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("canonicalHost(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("canonicalHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestLeafCertificate(t *testing.T) {
	now := certTestNow()
	ca := certTestNewCA(t, now)
	long := strings.Repeat("x", 70) + ".example.test"
	tests := []struct {
		host   string
		name   string // the canonical name verified and expected in the SAN
		wantIP bool
	}{
		{"dnl-01.geo.kaspersky.com", "dnl-01.geo.kaspersky.com", false},
		{"S01.UPD.Kaspersky.com.", "s01.upd.kaspersky.com", false},
		{"127.0.0.1", "127.0.0.1", true},
		{"::1", "::1", true},
		{long, long, false},
	}
	c := newLeafCache(ca, certTestNow, 16)
	var keys []*ecdsa.PrivateKey
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			cert, err := c.get(tt.host)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			certTestVerify(t, ca, cert, tt.name, now)
			l := cert.Leaf
			if tt.wantIP {
				if want := []net.IP{net.ParseIP(tt.name)}; len(l.DNSNames) != 0 || len(l.IPAddresses) != 1 || !l.IPAddresses[0].Equal(want[0]) {
					t.Errorf("SANs DNS=%v IP=%v; want only IP %v", l.DNSNames, l.IPAddresses, want)
				}
			} else if len(l.IPAddresses) != 0 || !slices.Equal(l.DNSNames, []string{tt.name}) {
				t.Errorf("SANs DNS=%v IP=%v; want only DNS %s", l.DNSNames, l.IPAddresses, tt.name)
			}
			wantCN := tt.name
			if len(wantCN) > 64 {
				wantCN = "" // RFC 5280's upper bound; the SAN carries the name
			}
			if l.Subject.CommonName != wantCN {
				t.Errorf("CN = %q; want %q", l.Subject.CommonName, wantCN)
			}
			key, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
			if !ok || key.Curve != elliptic.P256() || !key.PublicKey.Equal(l.PublicKey) {
				t.Fatalf("private key is %T and must be the leaf's ECDSA P-256 key", cert.PrivateKey)
			}
			keys = append(keys, key)
			if l.IsCA || l.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(l.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("IsCA=%v KeyUsage=%v ExtKeyUsage=%v; want a server-auth leaf", l.IsCA, l.KeyUsage, l.ExtKeyUsage)
			}
			if !bytes.Equal(l.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Errorf("AuthorityKeyId %x; want the CA's SubjectKeyId %x", l.AuthorityKeyId, ca.Cert.SubjectKeyId)
			}
			if want := now.Add(-time.Hour); !l.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %v; want %v", l.NotBefore, want)
			}
			if want := now.Add(30 * 24 * time.Hour); !l.NotAfter.Equal(want) {
				t.Errorf("NotAfter = %v; want %v", l.NotAfter, want)
			}
		})
	}
	for i := range keys {
		for j := range i {
			if keys[i].Equal(keys[j]) {
				t.Errorf("leaves %d and %d share a key", j, i)
			}
		}
	}
}

// TestCertCacheTLSHandshake runs real TLS handshakes over loopback against
// a server whose certificates come from the cache.
func TestCertCacheTLSHandshake(t *testing.T) {
	ca := certTestNewCA(t, time.Now())
	c := newLeafCache(ca, time.Now, 16)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: c.GetCertificate("fallback.test")})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(certTestWait))
				// A failed handshake is the expected outcome of the
				// untrusting client; the client side asserts.
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})

	pool := certTestPool(ca)
	tests := []struct {
		name     string
		config   *tls.Config
		wantName string // the name the peer certificate must carry
		wantErr  bool   // an unknown-authority verification failure
	}{
		{
			name:     "sni-trusted",
			config:   &tls.Config{ServerName: "dnl-01.geo.kaspersky.com", RootCAs: pool},
			wantName: "dnl-01.geo.kaspersky.com",
		},
		{
			// A client dialing a bare IP sends no SNI, so the server uses
			// the fallback; verify by hand against the fallback name.
			name: "no-sni-fallback",
			config: &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
				inter := x509.NewCertPool()
				for _, ic := range cs.PeerCertificates[1:] {
					inter.AddCert(ic)
				}
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: "fallback.test", Roots: pool, Intermediates: inter})
				return err
			}},
			wantName: "fallback.test",
		},
		{
			name:    "sni-untrusted",
			config:  &tls.Config{ServerName: "dnl-01.geo.kaspersky.com", RootCAs: x509.NewCertPool()},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), certTestWait)
			defer cancel()
			d := tls.Dialer{Config: tt.config}
			conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if tt.wantErr {
				if err == nil {
					conn.Close()
					t.Fatal("handshake succeeded without trusting the CA")
				}
				var verr *tls.CertificateVerificationError
				var uerr x509.UnknownAuthorityError
				if !errors.As(err, &verr) || !errors.As(err, &uerr) {
					t.Errorf("handshake error %v (%T); want an x509 unknown-authority verification error", err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer conn.Close()
			cs := conn.(*tls.Conn).ConnectionState()
			if len(cs.PeerCertificates) != 2 {
				t.Fatalf("server sent %d certificates; want 2 (leaf, CA)", len(cs.PeerCertificates))
			}
			if got := cs.PeerCertificates[0].DNSNames; !slices.Equal(got, []string{tt.wantName}) {
				t.Errorf("peer certificate names %v; want [%s]", got, tt.wantName)
			}
		})
	}
}

func TestCertCacheReuse(t *testing.T) {
	c := newLeafCache(certTestNewCA(t, certTestNow()), certTestNow, 16)
	first, err := c.get("dnl-01.geo.kaspersky.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"dnl-01.geo.kaspersky.com", "DNL-01.geo.kaspersky.com."} {
		again, err := c.get(host)
		if err != nil {
			t.Fatal(err)
		}
		if again != first {
			t.Errorf("get(%q) returned a different certificate", host)
		}
	}
	if h, m, e := c.stats(); h != 2 || m != 1 || e != 0 {
		t.Errorf("stats = %d hits, %d misses, %d evictions; want 2, 1, 0", h, m, e)
	}
}

// TestCertCacheSingleFlight holds the first signature until all the other
// gets have joined it, so the shared path is exercised every run.
func TestCertCacheSingleFlight(t *testing.T) {
	const n = 50
	c := newLeafCache(certTestNewCA(t, certTestNow()), certTestNow, 16)
	var signs atomic.Int32
	release := make(chan struct{})
	sign := c.sign
	c.sign = func(host string, now time.Time) (*tls.Certificate, error) {
		signs.Add(1)
		<-release
		return sign(host, now)
	}

	start := make(chan struct{})
	certs := make([]*tls.Certificate, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			certs[i], errs[i] = c.get("activation-v2.kaspersky.com")
		}()
	}
	close(start)
	deadline := time.Now().Add(certTestWait)
	for {
		if h, _, _ := c.stats(); h == n-1 {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("the other gets never joined the signature in flight")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	if got := signs.Load(); got != 1 {
		t.Errorf("%d signatures for one host; want 1", got)
	}
	if h, m, _ := c.stats(); h != n-1 || m != 1 {
		t.Errorf("stats = %d hits, %d misses; want %d, 1", h, m, n-1)
	}
	for i := range n {
		if errs[i] != nil || certs[i] == nil || certs[i] != certs[0] {
			t.Fatalf("get %d = %p, %v; want the shared certificate %p", i, certs[i], errs[i], certs[0])
		}
	}
}

// TestCertCacheErrorNotCached checks that a failed signature reaches the
// caller and the next get signs again.
func TestCertCacheErrorNotCached(t *testing.T) {
	c := newLeafCache(certTestNewCA(t, certTestNow()), certTestNow, 16)
	errSign := errors.New("signer unavailable")
	sign := c.sign
	var calls int
	c.sign = func(host string, now time.Time) (*tls.Certificate, error) {
		calls++
		if calls == 1 {
			return nil, errSign
		}
		return sign(host, now)
	}
	if _, err := c.get("store.kaspersky.com"); !errors.Is(err, errSign) || !strings.Contains(err.Error(), "store.kaspersky.com") {
		t.Errorf("first get error = %v; want it to wrap %v and name the host", err, errSign)
	}
	if cert, err := c.get("store.kaspersky.com"); err != nil || cert == nil {
		t.Errorf("second get = %v, %v; want a certificate", cert, err)
	}
	if _, m, _ := c.stats(); m != 2 || calls != 2 {
		t.Errorf("%d misses, %d signatures; want 2, 2", m, calls)
	}
}

func TestCertCacheEviction(t *testing.T) {
	type step struct {
		host     string
		wantMiss bool
	}
	tests := []struct {
		name          string
		max           int
		steps         []step
		wantEvictions uint64
	}{
		{
			name:          "oldest-goes",
			max:           2,
			steps:         []step{{"a.test", true}, {"b.test", true}, {"c.test", true}, {"b.test", false}, {"c.test", false}, {"a.test", true}},
			wantEvictions: 2, // a for c, then b for a
		},
		{
			name:          "use-keeps",
			max:           2,
			steps:         []step{{"a.test", true}, {"b.test", true}, {"a.test", false}, {"c.test", true}, {"a.test", false}, {"b.test", true}},
			wantEvictions: 2, // b for c, then c for b
		},
		{
			name:          "default-max",
			max:           0,
			steps:         []step{{"a.test", true}, {"b.test", true}, {"c.test", true}, {"a.test", false}},
			wantEvictions: 0,
		},
	}
	ca := certTestNewCA(t, certTestNow())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newLeafCache(ca, certTestNow, tt.max)
			for i, s := range tt.steps {
				_, before, _ := c.stats()
				if _, err := c.get(s.host); err != nil {
					t.Fatal(err)
				}
				if _, after, _ := c.stats(); (after > before) != s.wantMiss {
					t.Errorf("step %d get(%s): miss=%v; want %v", i, s.host, after > before, s.wantMiss)
				}
			}
			if _, _, e := c.stats(); e != tt.wantEvictions {
				t.Errorf("%d evictions; want %d", e, tt.wantEvictions)
			}
			if n := c.lru.Len(); n != len(c.entries) || (tt.max > 0 && n > tt.max) {
				t.Errorf("cache holds %d list entries and %d map entries; max %d", n, len(c.entries), tt.max)
			}
		})
	}
}

func TestCertCacheRenewal(t *testing.T) {
	t0 := certTestNow()
	ca := certTestNewCA(t, t0)
	const host = "s01.upd.kaspersky.com"
	tests := []struct {
		name string
		// start is when the first leaf is made; later is when get runs
		// again, relative to the first leaf's NotAfter.
		start   time.Time
		later   time.Duration
		wantNew bool
		wantErr bool
	}{
		{name: "more-than-a-day-left", start: t0, later: -25 * time.Hour},
		{name: "exactly-a-day-left", start: t0, later: -24 * time.Hour},
		{name: "less-than-a-day-left", start: t0, later: -24*time.Hour + time.Second, wantNew: true},
		{name: "expired", start: t0, later: time.Second, wantNew: true},
		// The wall clock set back before the leaf's NotBefore.
		{name: "clock-set-back", start: t0.Add(48 * time.Hour), later: -(30*24*time.Hour + time.Hour + time.Second), wantNew: true},
		// Near the CA's own expiry a new leaf could not last longer, so
		// the old one is kept to the end, and then nothing can be signed.
		{name: "ca-capped-kept", start: ca.Cert.NotAfter.Add(-10 * 24 * time.Hour), later: -time.Hour},
		{name: "ca-expired", start: ca.Cert.NotAfter.Add(-10 * 24 * time.Hour), later: time.Second, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &certTestClock{t: tt.start}
			c := newLeafCache(ca, clock.now, 16)
			first, err := c.get(host)
			if err != nil {
				t.Fatal(err)
			}
			if min := ca.Cert.NotAfter; first.Leaf.NotAfter.After(min) {
				t.Errorf("leaf NotAfter %v is after the CA's %v", first.Leaf.NotAfter, min)
			}
			clock.set(first.Leaf.NotAfter.Add(tt.later))
			second, err := c.get(host)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "not valid at") {
					t.Errorf("get after the CA expired = %v; want a CA validity error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if isNew := second != first; isNew != tt.wantNew {
				t.Fatalf("new certificate = %v; want %v", isNew, tt.wantNew)
			}
			if tt.wantNew {
				certTestVerify(t, ca, second, host, clock.now())
				if _, m, _ := c.stats(); m != 2 {
					t.Errorf("%d misses; want 2 (the renewal signs)", m)
				}
			}
		})
	}
}

func BenchmarkCertCacheHit(b *testing.B) {
	c := newLeafCache(certTestNewCA(b, certTestNow()), certTestNow, 1024)
	const host = "dnl-01.geo.kaspersky.com"
	if _, err := c.get(host); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.get(host); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCertCacheMiss alternates two hosts in a one-entry cache, so every
// get evicts the other and signs: the cost of a new host, bookkeeping
// included.
func BenchmarkCertCacheMiss(b *testing.B) {
	c := newLeafCache(certTestNewCA(b, certTestNow()), certTestNow, 1)
	hosts := [2]string{"a.kaspersky.com", "b.kaspersky.com"}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := c.get(hosts[i&1]); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if _, m, _ := c.stats(); m != uint64(i) {
		b.Fatalf("%d misses in %d gets; want every get to miss", m, i)
	}
}

// BenchmarkLeafSign signs one leaf (always ECDSA P-256) with an ECDSA and
// with an RSA CA key, to show what an RSA CA costs per new host.
func BenchmarkLeafSign(b *testing.B) {
	now := certTestNow()
	cas := []struct {
		name string
		ca   *CA
	}{
		{"ca=ecdsa-p256", certTestNewCA(b, now)},
		{"ca=rsa-2048", certTestRSACA(b, now)},
	}
	for _, tc := range cas {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.ca.signLeaf("dnl-01.geo.kaspersky.com", now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
