package intercept

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/feedgate/feedgate/rules"
)

const (
	// leafLifetime is short so that a leaf (and its key, which lives in
	// memory only) stops being useful soon after feedgate stops serving it.
	leafLifetime = 30 * 24 * time.Hour
	// leafRenewBefore: a cached leaf with less validity left than this is
	// replaced at the next get, so a client never sees one about to expire.
	leafRenewBefore = 24 * time.Hour

	// maxCNLen is RFC 5280's ub-common-name. Longer names still go in the
	// SAN, which is what TLS clients match; an over-long CN only makes
	// strict parsers reject the certificate.
	maxCNLen = 64

	// maxLeafCerts bounds the leaf certificates kept for intercepted hosts;
	// the least recently used are signed again when needed.
	maxLeafCerts = 1024
)

// signLeaf makes a leaf certificate for host, which must be canonical (see
// leafName), valid at now. The chain is [leaf, CA].
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

// leafName returns the name a leaf is made and cached for: host's
// canonical form, by rules.CanonicalHost, as the policy decided it. Every
// name the proxy passes has one (the CONNECT target, or an SNI that
// canonicalises to it), so the cache shares the policy's limits rather than
// keeping its own.
//
// An IPv6 literal, which rules.CanonicalHost keeps as written apart from
// case, is put in RFC 5952 form, so that one address has one cache entry
// and one spelling in the leaf's CN however the CONNECT target wrote it.
// IPv4 literals need nothing: rules accepts dotted decimal only, which
// netip writes back unchanged.
func leafName(host string) (string, error) {
	h, err := rules.CanonicalHost(host)
	if err != nil {
		return "", err
	}
	if strings.IndexByte(h, ':') >= 0 {
		ip, err := netip.ParseAddr(h)
		if err != nil {
			return "", fmt.Errorf("canonical host %q is not an IP address: %w", h, err)
		}
		h = ip.String()
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
	h, err := leafName(host)
	if err != nil {
		return nil, fmt.Errorf("interception certificate: %w", err)
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
