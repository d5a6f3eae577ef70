package intercept

// White-box tests of the interception CA: creating it on disk and loading
// it in each accepted key format. The leaves and their cache are tested in
// leaves_test.go, with helpers from here.

import (
	"bytes"
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
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// certTestNow is the fixed instant most of these tests run at.
func certTestNow() time.Time { return time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC) }

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
