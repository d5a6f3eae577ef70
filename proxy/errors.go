package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"

	"github.com/feedgate/feedgate/metrics"
	"github.com/feedgate/feedgate/proxy/upstream"
)

// upstreamReason classifies an upstream failure into one of the bounded
// reasons of feedgate_upstream_errors_total.
func upstreamReason(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr) && !dnsErr.IsTimeout:
		return metrics.ReasonDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return metrics.ReasonRefused
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return metrics.ReasonTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		// The upstream closed before the body it announced was complete.
		errors.Is(err, io.ErrUnexpectedEOF):
		return metrics.ReasonReset
	}
	return metrics.ReasonOther
}

// upstreamStatus maps a reason to the status the client sees: 504 when the
// upstream was too slow, 502 when it could not be reached or failed.
func upstreamStatus(reason string) int {
	if reason == metrics.ReasonTimeout {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// upstreamMessage is the client-facing explanation: it names the failure
// class, never the raw error, which could reveal resolver addresses or
// internal topology.
// upstreamDetail refines the message for failures whose class alone
// would mislead, such as an upstream certificate that does not verify.
func upstreamDetail(err error, reason string) string {
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var parentErr *upstream.ParentError
	switch {
	case errors.As(err, &parentErr):
		return "the parent proxy refused the tunnel with status " + strconv.Itoa(parentErr.Status)
	case errors.As(err, &certErr):
		return "the upstream's TLS certificate could not be verified"
	case errors.As(err, &recErr):
		return "the upstream did not speak TLS"
	}
	return upstreamMessage(reason)
}

func upstreamMessage(reason string) string {
	switch reason {
	case metrics.ReasonDNS:
		return "the upstream host name could not be resolved"
	case metrics.ReasonRefused:
		return "the upstream refused the connection"
	case metrics.ReasonTimeout:
		return "the upstream did not answer in time"
	case metrics.ReasonReset:
		return "the upstream reset the connection"
	}
	return "the upstream could not be reached"
}
