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
	"container/list"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

	// leafLifetime is short so that a leaf (and its key, which lives in
	// memory only) stops being useful soon after feedgate stops serving it.
	leafLifetime = 30 * 24 * time.Hour
	// leafRenewBefore: a cached leaf with less validity left than this is
	// replaced at the next get, so a client never sees one about to expire.
	leafRenewBefore = 24 * time.Hour

	// maxHostLen is the longest DNS name (RFC 1035, without the root dot).
	maxHostLen = 253
	// maxCNLen is RFC 5280's ub-common-name. Longer names still go in the
	// SAN, which is what TLS clients match; an over-long CN only makes
	// strict parsers reject the certificate.
	maxCNLen = 64

	// maxLeafCerts bounds the leaf certificates kept for intercepted hosts;
	// the least recently used are signed again when needed.
	maxLeafCerts = 1024
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

// signLeaf makes a leaf certificate for host, which must be canonical (see
// canonicalHost), valid at now. The chain is [leaf, CA].
func (ca *CA) signLeaf(host string, now time.Time) (*tls.Certificate, error) {
	if now.Before(ca.Cert.NotBefore) || now.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the interception CA is not valid at %s (valid from %s to %s)",
			now.UTC().Format(time.RFC3339), ca.Cert.NotBefore.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	// A leaf outside its issuer's validity is rejected by some verifiers,
	// so both ends are clamped to the CA's.
	notBefore := now.Add(-backdate)
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	notAfter := now.Add(leafLifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	if len(host) <= maxCNLen {
		tmpl.Subject.CommonName = host
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing leaf: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the leaf just signed: %w", err)
	}
	caDER := ca.certDER
	if caDER == nil { // a CA built as a literal rather than by LoadCA
		caDER = ca.Cert.Raw
	}
	return &tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key, Leaf: leaf}, nil
}

// canonicalHost lower-cases host and drops a trailing dot; an IP literal
// (optionally in brackets, optionally with a zone) becomes its canonical
// text form, so that one host has one cache entry.
func canonicalHost(host string) (string, error) {
	// ToLower and TrimSuffix return host itself when there is nothing to
	// change, so the usual (already canonical) name costs no allocation.
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if h == "" {
		return "", errors.New("empty host name")
	}
	if len(h) > maxHostLen {
		return "", fmt.Errorf("host name of %d bytes is longer than %d", len(h), maxHostLen)
	}
	// IPv6 literals contain a colon and IPv4 ones end in a digit, while a
	// DNS name's last label is never all digits: names skip ParseAddr,
	// whose error would allocate on every cache hit.
	if last := h[len(h)-1]; strings.IndexByte(h, ':') >= 0 || '0' <= last && last <= '9' {
		if ip, err := netip.ParseAddr(h); err == nil {
			return ip.WithZone("").String(), nil
		}
		if strings.IndexByte(h, ':') >= 0 {
			return "", fmt.Errorf("host %q has a colon but is not an IP address (a port must not be included)", host)
		}
	}
	return h, nil
}

// LeafCache hands out leaf certificates by host name: a bounded LRU, with
// concurrent misses for one host sharing a single signature, and entries
// replaced when they come within leafRenewBefore of expiry. Signing is
// cheap (about 0.15 ms) but not free; without the cache every intercepted
// connection would pay it, and without the single flight a burst of
// connections to a new host would pay it once each.
type LeafCache struct {
	now func() time.Time
	max int
	// caNotAfter is the CA's expiry, the latest any leaf can be valid.
	caNotAfter time.Time
	// sign makes a leaf; it is ca.signLeaf, and a field so tests can hold a
	// signature in flight.
	sign func(host string, now time.Time) (*tls.Certificate, error)

	mu      sync.Mutex
	entries map[string]*list.Element // values are *certEntry
	lru     list.List                // front is the most recently used
	pending map[string]*certCall
	// hits counts gets that did not sign: cache hits and gets that joined
	// another's signature. misses counts gets that signed (renewals
	// included). evictions counts entries dropped to stay within max.
	hits, misses, evictions uint64
}

type certEntry struct {
	host string
	cert *tls.Certificate
	// usableFrom and renewAt bound the times at which cert is served.
	usableFrom, renewAt time.Time
}

// certCall is one signature in flight; done is closed once cert and err
// are set.
type certCall struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// NewLeafCache returns a cache of leaves signed by ca, dated by the system
// clock: clients check them against their own clocks, so they must not
// follow the policy clock (-at).
func NewLeafCache(ca *CA) *LeafCache {
	return newLeafCache(ca, time.Now, maxLeafCerts)
}

// newLeafCache returns a cache of leaves signed by ca, holding at most max
// of them (maxLeafCerts if max < 1). now is the wall clock.
func newLeafCache(ca *CA, now func() time.Time, max int) *LeafCache {
	if max < 1 {
		max = maxLeafCerts
	}
	return &LeafCache{
		now:        now,
		max:        max,
		caNotAfter: ca.Cert.NotAfter,
		sign:       ca.signLeaf,
		entries:    make(map[string]*list.Element),
		pending:    make(map[string]*certCall),
	}
}

// get returns a certificate for host (a DNS name or an IP literal; IPs go
// in the IP SAN, names in the DNS SAN), signing it on the first request and
// again when less than leafRenewBefore of its validity remains. Failures
// are not cached: the next get tries again.
func (c *LeafCache) get(host string) (*tls.Certificate, error) {
	h, err := canonicalHost(host)
	if err != nil {
		return nil, fmt.Errorf("interception certificate for %q: %w", host, err)
	}
	now := c.now()
	c.mu.Lock()
	if el, ok := c.entries[h]; ok {
		e := el.Value.(*certEntry)
		// The usableFrom check guards against the wall clock being set
		// back past the leaf's NotBefore.
		if !now.After(e.renewAt) && !now.Before(e.usableFrom) {
			c.lru.MoveToFront(el)
			c.hits++
			c.mu.Unlock()
			return e.cert, nil
		}
	}
	if call, ok := c.pending[h]; ok {
		c.hits++
		c.mu.Unlock()
		<-call.done
		return call.cert, call.err
	}
	call := &certCall{done: make(chan struct{})}
	c.pending[h] = call
	c.misses++
	c.mu.Unlock()

	c.fill(h, now, call)
	return call.cert, call.err
}

// fill signs the leaf for call outside the lock, then publishes it.
func (c *LeafCache) fill(h string, now time.Time, call *certCall) {
	// Set before signing so that waiters get an error, not a nil
	// certificate, should sign panic.
	call.err = fmt.Errorf("interception certificate for %q: signing did not complete", h)
	defer func() {
		c.mu.Lock()
		delete(c.pending, h)
		if call.err == nil {
			c.store(h, call.cert)
		}
		c.mu.Unlock()
		close(call.done)
	}()
	cert, err := c.sign(h, now)
	if err != nil {
		call.cert, call.err = nil, fmt.Errorf("interception certificate for %q: %w", h, err)
		return
	}
	call.cert, call.err = cert, nil
}

// store puts cert in the cache as the entry for h, evicting the least
// recently used entries beyond max. c.mu must be held.
func (c *LeafCache) store(h string, cert *tls.Certificate) {
	e := &certEntry{host: h, cert: cert, usableFrom: cert.Leaf.NotBefore, renewAt: cert.Leaf.NotAfter.Add(-leafRenewBefore)}
	// A leaf cut short by the CA's own expiry cannot be renewed into a
	// longer one; re-signing it at every get would only burn CPU, so it is
	// served until it expires.
	if !cert.Leaf.NotAfter.Before(c.caNotAfter) {
		e.renewAt = cert.Leaf.NotAfter
	}
	if el, ok := c.entries[h]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[h] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*certEntry).host)
		c.evictions++
	}
}

// stats returns the counters described at LeafCache.hits.
func (c *LeafCache) stats() (hits, misses, evictions uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses, c.evictions
}

// GetCertificate adapts the cache to tls.Config.GetCertificate. It uses the
// ClientHello's SNI, or fallback (the CONNECT target's host) when there is
// none, as for a client connecting to a bare IP. Deciding whether a given
// SNI may be intercepted at all is the caller's job: this signs for
// whatever name the client sends.
func (c *LeafCache) GetCertificate(fallback string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		host := hello.ServerName
		if host == "" {
			host = fallback
		}
		return c.get(host)
	}
}
