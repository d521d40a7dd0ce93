package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDeploySettingsAreFlags: every BERTSTREAM_* setting the Kubernetes
// manifests give the workers names a flag of serve (envFlags maps
// --max-batch to BERTSTREAM_MAX_BATCH and ignores what names none), so a
// misspelt or stale setting fails here instead of being silently ignored
// in a cluster. BERTSTREAM_SASL_PASSWORD is read directly, never a flag.
func TestDeploySettingsAreFlags(t *testing.T) {
	var out, help bytes.Buffer
	runMain([]string{"serve", "--help"}, &out, &help)
	flags := make(map[string]bool)
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		flags["BERTSTREAM_"+strings.ToUpper(strings.ReplaceAll(m[1], "-", "_"))] = true
	}
	if !flags["BERTSTREAM_REBALANCE"] || !flags["BERTSTREAM_INSTANCE_ID"] {
		t.Fatalf("serve --help lists no --rebalance or --instance-id:\n%s", help.String())
	}
	for _, f := range []string{"../../deploy/k8s/configmap.yaml", "../../deploy/k8s/statefulset.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range regexp.MustCompile(`BERTSTREAM_[A-Z0-9_]+`).FindAllString(string(b), -1) {
			if name != "BERTSTREAM_SASL_PASSWORD" && !flags[name] {
				t.Errorf("%s sets %s, which names no flag of serve", f, name)
			}
		}
	}
}
