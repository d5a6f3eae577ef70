package configs_test

import (
	"io/fs"
	"path"
	"strings"
	"testing"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
	"github.com/feedgate/feedgate/rules/config"
)

// TestEveryPolicyLoads loads every policy shipped in configs/ (a catalog is
// loaded through the policies that name it) and fails on any error or
// warning: what ships must pass feedgate check cleanly.
func TestEveryPolicyLoads(t *testing.T) {
	files := configs.Files()
	var policies, catalogs []string
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() || path.Ext(p) != ".toml":
		case strings.HasPrefix(p, "catalog/"):
			catalogs = append(catalogs, p)
		default:
			policies = append(policies, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(policies) == 0 || len(catalogs) == 0 {
		t.Fatalf("found policies %v and catalogs %v; want at least one of each", policies, catalogs)
	}
	used := map[string]bool{}
	for _, file := range policies {
		c, warnings, err := config.Load(rules.FS{FS: files}, file, rules.Options{Builtin: rules.FS{FS: files}})
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		p := c.Policy
		for _, w := range warnings {
			t.Errorf("%s", w)
		}
		for _, c := range p.Catalogs {
			used[strings.TrimPrefix(c.File, rules.BuiltinPrefix)] = true
		}
	}
	for _, c := range catalogs {
		if !used[c] {
			t.Errorf("catalog %s is not loaded by any shipped policy, so nothing checks it", c)
		}
	}
}
