package rules_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/feedgate/feedgate/configs"
	"github.com/feedgate/feedgate/rules"
)

func TestOperationalSettings(t *testing.T) {
	p := loadDefault(t)
	if p.Log != (rules.LogSettings{Format: rules.LogJSON}) {
		t.Errorf("default Log = %+v; want json to standard output", p.Log)
	}
	if want := (rules.InventorySettings{MaxClients: rules.DefaultMaxClients, SaveInterval: rules.DefaultSaveInterval}); p.Inventory != want {
		t.Errorf("default Inventory = %+v; want %+v", p.Inventory, want)
	}
	if p.PAC != (rules.PACSettings{}) {
		t.Errorf("default PAC = %+v; want zero", p.PAC)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "p.toml")
	text := `catalogs = ["builtin:catalog/kaspersky.toml"]
pac_proxy = "proxy.corp.example:3128"
pac_all = true
[log]
format = "squid"
file = "logs/access.log"
[inventory]
max_clients = 10
state_file = "/var/lib/feedgate/inventory.json"
save_interval = "30s"
`
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _, err := rules.Load(rules.Dir{}, file, rules.Options{Builtin: rules.FS{FS: configs.Files()}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (rules.LogSettings{Format: rules.LogSquid, File: filepath.ToSlash(filepath.Join(dir, "logs/access.log"))}); p.Log != want {
		t.Errorf("Log = %+v; want %+v (relative to the policy file)", p.Log, want)
	}
	if want := (rules.InventorySettings{MaxClients: 10, StateFile: "/var/lib/feedgate/inventory.json", SaveInterval: 30 * time.Second}); p.Inventory != want {
		t.Errorf("Inventory = %+v; want %+v", p.Inventory, want)
	}
	if want := (rules.PACSettings{Proxy: "proxy.corp.example:3128", All: true}); p.PAC != want {
		t.Errorf("PAC = %+v; want %+v", p.PAC, want)
	}
}
