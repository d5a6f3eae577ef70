// Package intercept makes the certificates for TLS interception. For
// operator-named hosts feedgate terminates the client's TLS with a leaf
// certificate it signs on the fly, so that path-level rules can see HTTPS
// requests; clients must trust feedgate's CA.
//
// Leaves are always ECDSA P-256, whatever the CA's key type: making an
// RSA-2048 leaf costs about 50 ms against about 0.15 ms for P-256 (measured
// through goproxy's signer, which generates the leaf key to match the CA's),
// and one fresh key per leaf keeps a leaked leaf key from serving any other
// host. The CA key only signs.
//
// Times are wall-clock times that TLS clients compare with their own clock.
// The cache's now is therefore the system clock (NewLeafCache takes no
// clock), never the policy Clock, which `feedgate run -at` moves away from
// real time.
package intercept

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/feedgate/feedgate/proxy/internal/atomicfile"
)

const (
	caCertName = "ca.crt"
	caKeyName  = "ca.key"
	caCN       = "feedgate interception CA"
	caOrg      = "feedgate"
	caYears    = 10

	// backdate is subtracted from NotBefore so that a client whose clock
	// runs a little behind ours still accepts a certificate made just now.
	backdate = time.Hour
)

// CreateCA writes a new certificate authority for interception into dir:
// ca.crt (PEM certificate, mode 0644) and ca.key (PEM PKCS#8 ECDSA P-256
// private key, mode 0600). The certificate is self-signed, valid from
// now-1h for 10 years, with Subject CN "feedgate interception CA" and
// O = org ("feedgate" when empty).
//
// It refuses to overwrite either file: replacing a CA silently would break
// every client that trusts the old one. It creates dir (0755) if missing.
// Each file is written to a temporary file in dir, synced and renamed into
// place, so a crash never leaves a half-written key under the final name.
// The key is written first and removed again if the certificate cannot be
// written, so a failed run leaves nothing behind to block a retry.
func CreateCA(dir, org string, now time.Time) (certFile, keyFile string, err error) {
	if org == "" {
		org = caOrg
	}
	certFile = filepath.Join(dir, caCertName)
	keyFile = filepath.Join(dir, caKeyName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("create CA: %w", err)
	}
	// Checking before writing anything means an existing ca.crt is not
	// paired with a freshly written ca.key. A concurrent CreateCA in the
	// same directory could still race between this check and the rename;
	// that is an operator error this does not try to arbitrate.
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return "", "", fmt.Errorf("create CA: %s already exists; remove it to make a new CA (clients must then be given the new %s)", f, caCertName)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", fmt.Errorf("create CA: %w", err)
		}
	}
	certPEM, keyPEM, err := newCAPEM(org, now)
	if err != nil {
		return "", "", fmt.Errorf("create CA in %s: %w", dir, err)
	}
	if err := atomicfile.Write(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("create CA: writing key: %w", err)
	}
	if err := atomicfile.Write(certFile, certPEM, 0o644); err != nil {
		// The key was created by this call a moment ago; without its
		// certificate it is useless and would make a retry refuse.
		_ = os.Remove(keyFile)
		return "", "", fmt.Errorf("create CA: writing certificate: %w", err)
	}
	return certFile, keyFile, nil
}

// newCAPEM makes the CA key and self-signed certificate, PEM-encoded.
func newCAPEM(org string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		return nil, nil, fmt.Errorf("encoding public key: %w", err)
	}
	// RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the
	// subjectPublicKey bits (the uncompressed point for EC keys). Set
	// explicitly so it does not depend on the Go version's default.
	skid := sha256.Sum256(pub.Bytes())
	notBefore := now.Add(-backdate)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCN, Organization: []string{org}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(caYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Leaves are signed directly by this CA; it must not be usable to
		// mint intermediates if its key leaks.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		SubjectKeyId:   skid[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// randomSerial returns a random serial in [1, 2^128): RFC 5280 wants it
// positive, and randomness keeps two leaves for one host from ever sharing
// an issuer and serial.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	limit.Sub(limit, big.NewInt(1))
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// CA is a loaded interception CA.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// certDER is the CA certificate as sent after each leaf.
	certDER []byte
}

// LoadCA reads the interception CA from a PEM certificate and a PEM private
// key, and checks it can sign leaves at now: the key must match the
// certificate, the certificate must be a CA and be valid at now. Errors
// name the file concerned.
//
// The certificate file's first CERTIFICATE block is used; it need not be
// self-signed (an intermediate under an enterprise root works, since it is
// sent after every leaf). The key may be PKCS#8 ("PRIVATE KEY"), SEC1
// ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"), ECDSA or RSA, and must
// not be encrypted. Leaves are ECDSA P-256 whatever the CA key type; an RSA
// CA key only makes each signature slower (see BenchmarkLeafSign).
func LoadCA(certFile, keyFile string, now time.Time) (*CA, error) {
	cert, err := readCACert(certFile)
	if err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("load CA certificate %s: not a CA certificate (no basic constraints CA:TRUE)", certFile)
	}
	// Go's verifier ignores a CA's key usage, but browsers and OpenSSL
	// reject leaves issued by a CA without certSign.
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA certificate %s: key usage does not include certificate signing", certFile)
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, fmt.Errorf("load CA certificate %s: not valid at %s (valid from %s to %s)",
			certFile, now.UTC().Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := readCAKey(keyFile)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load CA key %s: does not match the public key of certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key, certDER: cert.Raw}, nil
}

func readCACert(file string) (*x509.Certificate, error) {
	block, err := readPEM(file, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %s: %w", file, err)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA certificate %s: parsing the CERTIFICATE block: %w", file, err)
	}
	return cert, nil
}

func readCAKey(file string) (crypto.Signer, error) {
	block, err := readPEM(file, "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", file, err)
	}
	// Encrypted keys would need a passphrase at every start; say so rather
	// than fail with a parse error.
	if block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, fmt.Errorf("load CA key %s: the key is encrypted; store it unencrypted (mode 0600)", file)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default: // "RSA PRIVATE KEY"
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: parsing the %s block: %w", file, block.Type, err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	default:
		// Ed25519 would sign, but browsers do not accept Ed25519
		// certificate chains, so it would fail only on the clients.
		return nil, fmt.Errorf("load CA key %s: unsupported key type %T (want ECDSA or RSA)", file, key)
	}
}

// readPEM returns the first block in file whose type is one of types,
// skipping others (such as the "EC PARAMETERS" block openssl writes before
// an EC key, or further certificates of a chain).
func readPEM(file string, types ...string) (*pem.Block, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var seen []string
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		for _, t := range types {
			if block.Type == t {
				return block, nil
			}
		}
		seen = append(seen, block.Type)
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("no PEM data (want %s)", types[0])
	}
	return nil, fmt.Errorf("no PEM %s block (found %s)", types[0], strings.Join(seen, ", "))
}
