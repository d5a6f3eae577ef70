package rules

// NoSNIRule is the Decision.Rule of a tunnel whose action was raised by the
// tunnel_without_sni setting rather than by a rule (the proxy applies it;
// Decide never returns it), and NoSNIRuleName the name reported for it.
const (
	NoSNIRule     = -2
	NoSNIRuleName = "tunnel_without_sni"
)
