// Package report turns decision logs into the answers an auditor asks
// for (feedgate report): per day, vendor, category and action, what was
// asked and moved; which clients still talk to a vendor; which hosts
// served vendor traffic; and, for each cut-off of the policy, whether
// any vendor request got through after it, with the verification of the
// evidence log behind the answer.
//
// It reads any number of logs, from any number of feedgate instances, in
// feedgate's JSON records or Squid's native access.log (whose lines are
// classified and decided with the policy at their own time), streaming:
// memory grows with the distinct clients and hosts, never with the
// number of records.
package report

import "time"

// Result is a report, as feedgate report -format json writes it.
type Result struct {
	Policy   string    `json:"policy"`
	Timezone string    `json:"timezone"`
	From     time.Time `json:"from,omitzero"`  // zero: unbounded
	Until    time.Time `json:"until,omitzero"` // zero: unbounded
	// Records counts the records read in [From, Until); Skipped those
	// outside it; Malformed the lines that are neither, with the first
	// positions.
	Records   int64     `json:"records"`
	Skipped   int64     `json:"skipped"`
	Malformed Malformed `json:"malformed"`
	// FirstRecord and LastRecord are the times of the earliest and the
	// latest record counted (zero without records).
	FirstRecord time.Time   `json:"first_record,omitzero"`
	LastRecord  time.Time   `json:"last_record,omitzero"`
	Inputs      []InputInfo `json:"inputs"`
	// Days is one row per day (in the policy's timezone), vendor,
	// category and action, in that order.
	Days []Day `json:"days"`
	// Clients is one row per client, vendor and category that is a
	// vendor's (vendor not "none"), most recently seen first.
	Clients []Client `json:"clients"`
	// Hosts are the vendor hosts with the most requests, and
	// SignatureHosts the hosts that are not the vendor's on which a
	// catalog signature recognised vendor traffic (all of them).
	Hosts          []Host `json:"hosts"`
	SignatureHosts []Host `json:"signature_hosts"`
	// Cutoffs is one statement per cut-off of the policy.
	Cutoffs      []Cutoff     `json:"cutoffs"`
	Verification Verification `json:"verification"`
}

// InputInfo is one input and what it held.
type InputInfo struct {
	Name      string   `json:"name"`
	Format    string   `json:"format"` // "feedgate" (JSON records), "squid", or "empty"
	Lines     int64    `json:"lines"`
	Records   int64    `json:"records"`
	Instances []string `json:"instances,omitempty"`
}

// Malformed counts lines that are neither a record nor a checkpoint.
type Malformed struct {
	Count int64 `json:"count"`
	// First are the positions (FILE:LINE) and reasons of the first ones.
	First []string `json:"first"`
}

// Day is one row of the per-day table.
type Day struct {
	Date     string `json:"date"` // YYYY-MM-DD in the policy's timezone
	Vendor   string `json:"vendor"`
	Category string `json:"category"`
	Action   string `json:"action"`
	Requests int64  `json:"requests"`
	// BytesSent and BytesReceived as the records state them (from the
	// client, to the client).
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
}

// Client is one client's use of one vendor category.
type Client struct {
	Client     string    `json:"client"`
	Vendor     string    `json:"vendor"`
	Category   string    `json:"category"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
	Requests   int64     `json:"requests"`
	LastAction string    `json:"last_action"`
	LastRule   string    `json:"last_rule"`
}

// Host is a host and the vendor traffic it got.
type Host struct {
	Host     string `json:"host"`
	Vendor   string `json:"vendor"`
	Category string `json:"category"`
	// Signature names the last signature that matched (SignatureHosts).
	Signature string `json:"signature,omitempty"`
	Requests  int64  `json:"requests"`
	Allowed   int64  `json:"allowed"` // allowed or logged, i.e. let through
	Clients   int64  `json:"clients"`
}

// Cutoff is the compliance statement for one cut-off: a rule of the
// policy whose window opens with a block.
type Cutoff struct {
	Rule   string    `json:"rule"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// Until is the end of the rule's window, zero if it has none.
	Until    time.Time `json:"until,omitzero"`
	Vendor   string    `json:"vendor"`
	Category []string  `json:"categories"`
	// Requests counts the vendor requests of those categories at or
	// after At in the records; Blocked and Allowed split them, and
	// AllowedBy says by which rules the allowed ones passed.
	Requests  int64            `json:"requests"`
	Blocked   int64            `json:"blocked"`
	Allowed   int64            `json:"allowed"`
	AllowedBy map[string]int64 `json:"allowed_by"`
	// FromSquid counts the requests that come from Squid logs: their
	// action is the policy's answer, not what happened.
	FromSquid int64 `json:"from_squid"`
	// Covered says whether the records reach past At at all: a
	// statement over records that end before the cut-off says nothing.
	Covered bool `json:"covered"`
	// Statement is the sentence for the auditor.
	Statement string `json:"statement"`
}

// Verification is how far the evidence behind the report verified.
type Verification struct {
	// Checked is false when no verifier key was given.
	Checked bool `json:"checked"`
	// OK is true when every feedgate input verified.
	OK bool `json:"ok"`
	// Problem is the first problem (FILE:LINE: why), "" if none.
	Problem string `json:"problem,omitempty"`
	// Chains is each instance's chain: its records and the last signed
	// tree head.
	Chains []ChainInfo `json:"chains"`
	// Unverified names the inputs that cannot be verified: Squid logs.
	Unverified []string `json:"unverified,omitempty"`
	// Summary says all of the above in a sentence or two, as the
	// statements end with it.
	Summary string `json:"summary"`
}

// ChainInfo is one instance's verified chain.
type ChainInfo struct {
	Instance string    `json:"instance"`
	Records  uint64    `json:"records"`
	Signed   uint64    `json:"signed"`
	SignedAt time.Time `json:"signed_at,omitzero"`
	Root     string    `json:"root,omitempty"` // base64
	Where    string    `json:"where,omitempty"`
}
