package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/feedgate/feedgate/rules"
)

// blockResponse is a 403 rendered once per policy load for one rule and
// class, so that refusing a request costs no formatting.
type blockResponse struct {
	rule    string
	body    []byte
	connect []byte // full HTTP/1.1 response for a CONNECT, sent in one write
}

func renderBlocks(p *rules.Policy) [][]*blockResponse {
	out := make([][]*blockResponse, len(p.Rules)+1)
	for i := -1; i < len(p.Rules); i++ {
		action, name, reason, since := p.DefaultAction, rules.DefaultRule, "no rule matched; the policy's default action is block", time.Time{}
		if i >= 0 {
			r := p.Rules[i]
			action, name, reason, since = r.Action, r.Name, r.Reason, r.From
		}
		if p.Effective(action) != rules.Block {
			continue
		}
		out[i+1] = make([]*blockResponse, len(p.Classes))
		for c, cl := range p.Classes {
			out[i+1][c] = renderBlock(p, cl, name, reason, since)
		}
	}
	return out
}

func renderBlock(p *rules.Policy, cl rules.Class, rule, reason string, since time.Time) *blockResponse {
	var b strings.Builder
	fmt.Fprintf(&b, "feedgate: request blocked by policy %q\n", p.Name)
	fmt.Fprintf(&b, "vendor:   %s\n", cl.Vendor)
	fmt.Fprintf(&b, "category: %s\n", cl.Category)
	fmt.Fprintf(&b, "rule:     %s\n", rule)
	if since.IsZero() {
		b.WriteString("since:    always (the rule has no start date)\n")
	} else {
		fmt.Fprintf(&b, "since:    %s\n", since.In(p.Location).Format(time.RFC3339))
	}
	if reason != "" {
		fmt.Fprintf(&b, "reason:   %s\n", reason)
	}
	body := []byte(b.String())
	head := "HTTP/1.1 403 Forbidden\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" +
		"X-Feedgate-Rule: " + rule + "\r\n" +
		"Cache-Control: no-store\r\n" +
		"Connection: close\r\n\r\n"
	return &blockResponse{rule: rule, body: body, connect: append([]byte(head), body...)}
}

func tlsConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}
