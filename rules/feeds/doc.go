// Package feeds turns a policy into what other enforcement points read:
// name lists for firewalls, DNS servers and proxies (Write, in the formats
// EDL, Hosts, Dnsmasq, RPZ and Squid), and a proxy auto-config file that
// steers browsers to the proxy (PAC).
//
// A list holds the vendor's names that get one action at one instant, as
// the proxy decides them (List): the same dated policy, enforced by a
// firewall or resolver beside the proxy. Names are all a list can carry, so
// catalog entries that depend on a port or path are left out, and each
// format has its own idea of a wildcard; every file says in its header what
// it could not express, so that an operator never has to guess where the
// list and the proxy part ways. Nor can a name carry a catalog signature,
// which recognises a vendor's traffic on any host by its path (internal
// update mirrors): the lists and the PAC file say so when the policy has
// signatures, since such requests are decided only where they pass
// through feedgate.
//
// Everything here is computed from the policy on each call and holds no
// state; callers that serve lists often may cache a result until
// Policy.NextTransition.
package feeds
