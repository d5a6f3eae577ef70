package rules

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ClientGroup is a named set of client networks from the [clients] table.
// Rules select requests by group name with clients and not_clients.
type ClientGroup struct {
	Name     string
	Prefixes []netip.Prefix
}

// maxClientGroups is the number of groups a policy may define: a decision
// holds the groups of its client in one uint64.
const maxClientGroups = 64

// clientNet is one prefix of a group, flattened so that a decision scans
// one slice.
type clientNet struct {
	prefix netip.Prefix
	group  int // index into Policy.ClientGroups
}

// ClientGroup returns the name of the most specific group that contains
// addr: the group with the longest matching prefix, the first in file order
// on a tie. It returns "" for an address in no group and for the zero
// Addr. IPv4-mapped IPv6 addresses are matched as IPv4.
func (p *Policy) ClientGroup(addr netip.Addr) string {
	_, name := p.clientGroups(addr)
	return name
}

// clientGroups returns the bits of the groups that contain addr and the
// name of the most specific one (see ClientGroup). It does not allocate.
func (p *Policy) clientGroups(addr netip.Addr) (mask uint64, name string) {
	if len(p.clientNets) == 0 || !addr.IsValid() {
		return 0, ""
	}
	addr = addr.Unmap()
	best := -1
	for i := range p.clientNets {
		cn := &p.clientNets[i]
		if cn.prefix.Contains(addr) {
			mask |= 1 << cn.group
			// Strictly longer only: the list is in file order, so
			// the first of equally specific groups wins.
			if b := cn.prefix.Bits(); b > best {
				best, name = b, p.ClientGroups[cn.group].Name
			}
		}
	}
	return mask, name
}

// selectsClient reports whether the rule's client conditions hold for a
// client in the groups of mask.
func (r *Rule) selectsClient(mask uint64) bool {
	return (r.clients == 0 || mask&r.clients != 0) && mask&r.notClients == 0
}

// coversClients reports whether every client that b's client conditions
// admit is certainly admitted by a's, judging by group names alone: two
// differently named groups may overlap or nest, but nothing guarantees it,
// so only a's requiring a superset of b's groups (every group b requires is
// one a accepts) and excluding a subset of b's exclusions counts.
func coversClients(a, b *Rule) bool {
	if a.clients != 0 && (b.clients == 0 || b.clients&^a.clients != 0) {
		return false
	}
	return a.notClients&^b.notClients == 0
}

// parseClientGroups validates the [clients] table. Groups are taken in the
// order the file lists them (the decoder's map has none), which decides
// ties in ClientGroup.
func (f *fileCtx) parseClientGroups(groups map[string][]string) ([]ClientGroup, []clientNet, map[string]int) {
	if len(groups) == 0 {
		return nil, nil, nil
	}
	var names []string
	listed := map[string]bool{}
	for _, k := range f.md.Keys() {
		if len(k) == 2 && k[0] == "clients" && !listed[k[1]] {
			if _, ok := groups[k[1]]; ok {
				names = append(names, k[1])
				listed[k[1]] = true
			}
		}
	}
	// Every group is listed by the metadata; this only keeps the result
	// deterministic should a key form ever escape it.
	for _, n := range sortedKeys(groups) {
		if !listed[n] {
			names = append(names, n)
		}
	}
	if len(names) > maxClientGroups {
		f.errorf("clients", "%d client groups: at most %d are allowed", len(names), maxClientGroups)
	}
	var out []ClientGroup
	var nets []clientNet
	index := map[string]int{}
	for _, name := range names {
		key := "clients." + name
		if !validGroupName(name) {
			// Group names are metric labels and appear in logs.
			f.errorf(key, "client group name %q: use lower-case letters, digits, '_' and '-'", name)
		}
		list := groups[name]
		if len(list) == 0 {
			f.errorf(key, "client group %q has no networks", name)
		}
		g := ClientGroup{Name: name}
		for _, s := range list {
			pfx, err := ParseClientNet(s)
			if err != nil {
				f.errorf(key, "client group %q: %v", name, err)
				continue
			}
			g.Prefixes = append(g.Prefixes, pfx)
			if len(out) < maxClientGroups {
				nets = append(nets, clientNet{prefix: pfx, group: len(out)})
			}
		}
		index[name] = len(out)
		out = append(out, g)
	}
	return out, nets, index
}

// unmapPrefix is the IPv4 form of an IPv4-mapped prefix, for messages.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	bits := p.Bits() - 96
	if bits < 0 {
		bits = 0
	}
	return netip.PrefixFrom(p.Addr().Unmap(), bits).Masked()
}

// parseRuleClients resolves a rule's clients and not_clients lists to group
// bits; key is the rule's key path.
func (f *fileCtx) parseRuleClients(r *Rule, key string, rf *ruleFile, groups map[string]int) {
	if rf.Clients != nil && len(rf.Clients) == 0 {
		f.errorf(key+".clients", "clients = [] selects no client: name a group or leave clients out")
	}
	resolve := func(field string, names []string) uint64 {
		var mask uint64
		for _, n := range names {
			i, ok := groups[n]
			if !ok {
				known := " (the policy has no [clients] table)"
				if len(groups) > 0 {
					known = fmt.Sprintf(" (defined: %s)", strings.Join(sortedKeys(groups), ", "))
				}
				f.errorf(key+"."+field, "unknown client group %q%s", n, known)
				continue
			}
			mask |= 1 << i
		}
		return mask
	}
	r.clients = resolve("clients", rf.Clients)
	r.notClients = resolve("not_clients", rf.NotClients)
	for i, n := range rf.NotClients {
		if slices.Contains(rf.Clients, n) && !slices.Contains(rf.NotClients[:i], n) {
			f.errorf(key+".not_clients", "client group %q is in both clients and not_clients", n)
		}
	}
	r.clientNames, r.notClientNames = rf.Clients, rf.NotClients
}

func validGroupName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

// ParseClientNet parses a CIDR, or a bare address as a one-address network,
// as client groups and allowed_clients write them.
// IPv4-mapped networks are refused: clients are matched unmapped, so such
// a network would never contain one.
func ParseClientNet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err == nil && p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("client network %q has host bits set: did you mean %s?", s, p.Masked())
	case err != nil:
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, fmt.Errorf("client network %q: want a CIDR such as \"10.0.0.0/8\" or an address", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("client network %q is IPv4-mapped: write it as IPv4 (%s)", s, unmapPrefix(p))
	}
	return p, nil
}
