package main

import (
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
)

// webConfig is what feedgate reads itself of a -web.config.file, to decide
// whether it protects an admin listener beyond loopback; the exporter
// toolkit reads and enforces the whole file.
type webConfig struct {
	TLS struct {
		Cert       string `yaml:"cert"`
		CertFile   string `yaml:"cert_file"`
		ClientAuth string `yaml:"client_auth_type"`
	} `yaml:"tls_server_config"`
	Users map[string]string `yaml:"basic_auth_users"`
}

// clientCertAuth is the only client_auth_type that authenticates: the
// others accept a connection without a certificate, or with any
// certificate at all.
const clientCertAuth = "RequireAndVerifyClientCert"

// authenticates reports whether the file makes a client prove who it is:
// a password, or a certificate signed by client_ca_file. TLS alone only
// encrypts.
func (c *webConfig) authenticates() bool {
	return c != nil && (len(c.Users) > 0 || c.TLS.ClientAuth == clientCertAuth)
}

func (c *webConfig) tls() bool { return c.TLS.Cert != "" || c.TLS.CertFile != "" }

// readWebConfig checks a -web.config.file as the exporter toolkit will
// serve it: YAML with known keys only, bcrypt password hashes, and TLS
// files that load.
func readWebConfig(path string) (*webConfig, error) {
	var c webConfig
	b, err := os.ReadFile(path)
	if err == nil {
		err = yaml.Unmarshal(b, &c)
	}
	// The toolkit's message for a password that is not a bcrypt hash
	// quotes its first character, which would be the password's own in
	// feedgate's log: say which user instead, before the toolkit looks.
	if err == nil {
		for _, user := range slices.Sorted(maps.Keys(c.Users)) {
			if _, err := bcrypt.Cost([]byte(c.Users[user])); err != nil {
				return nil, fmt.Errorf("basic_auth_users: %q: the password must be a bcrypt hash (htpasswd -nBC 10 %s prints one after the colon), never the password itself", user, user)
			}
		}
	}
	if verr := web.Validate(path); verr != nil {
		return nil, verr
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// checkAdminSecurity refuses, before anything listens, a -web.config.file
// the toolkit would not serve, and an admin listener beyond loopback that
// nothing protects: the inventory lists client addresses, and the listener
// may reload the policy. -admin.insecure says the network protects it.
func checkAdminSecurity(f *runFlags, errLog *slog.Logger) error {
	var wc *webConfig
	if f.webConfig != "" {
		var err error
		if wc, err = readWebConfig(f.webConfig); err != nil {
			return fmt.Errorf("-web.config.file %s: %w", f.webConfig, err)
		}
	}
	host, _, err := net.SplitHostPort(f.admin)
	if err != nil {
		return usageError{fmt.Errorf("-admin %q: %w", f.admin, err)}
	}
	switch {
	case loopbackHost(host):
	case wc.authenticates():
		if !wc.tls() && len(wc.Users) > 0 {
			errLog.Warn("the admin listener reaches beyond loopback with basic auth but without TLS: passwords cross the network in clear; set tls_server_config in the web config",
				"admin", f.admin, "web_config", f.webConfig)
		}
	case f.adminInsecure:
		errLog.Warn("the admin listener reaches beyond loopback without authentication (-admin.insecure): whoever reaches it reads the client inventory",
			"admin", f.admin)
	case wc == nil:
		return fmt.Errorf("-admin %s reaches beyond loopback, and nothing protects the admin listener: "+
			"give -web.config.file FILE with basic_auth_users or client certificates (tls_server_config client_auth_type: %s), "+
			"or -admin.insecure if the network alone restricts who reaches it", f.admin, clientCertAuth)
	default:
		return fmt.Errorf("-admin %s reaches beyond loopback, but -web.config.file %s sets neither basic_auth_users nor tls_server_config client_auth_type: %s, "+
			"so anyone who reaches the admin listener is let in: add one, or give -admin.insecure if the network alone restricts who reaches it", f.admin, f.webConfig, clientCertAuth)
	}
	return nil
}
