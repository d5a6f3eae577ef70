// Package configs holds feedgate's built-in policy and catalogs as data. The
// default policy is compiled into the binary so that feedgate runs with no
// files at all; the same files are the starting point for an operator's own.
package configs

import "embed"

// DefaultPolicy is the name, inside Files, of the policy feedgate runs when
// no -config is given.
const DefaultPolicy = "feedgate.toml"

//go:embed feedgate.toml catalog/*.toml
var files embed.FS

// Files returns the embedded policy and catalogs.
func Files() embed.FS { return files }
