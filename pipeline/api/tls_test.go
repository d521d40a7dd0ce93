package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bertstream/bertstream/pipeline"
	"github.com/bertstream/bertstream/pipeline/api"
)

// issue makes a certificate signed by parent (self-signed without one)
// and writes it and its key as PEM files in dir.
func issue(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: ca, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, certFile, keyFile
}

// TestMutualTLS: with a client CA the API answers only clients with a
// certificate it signed.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile, _ := issue(t, dir, "ca", nil, nil, true)
	_, _, srvCert, srvKey := issue(t, dir, "server", ca, caKey, false)
	_, _, cliCert, cliKey := issue(t, dir, "client", ca, caKey, false)
	other, otherKey, _, _ := issue(t, dir, "other-ca", nil, nil, true)
	_, _, badCert, badKey := issue(t, dir, "stranger", other, otherKey, false)

	cfg, err := api.TLSConfig(srvCert, srvKey, caFile)
	if err != nil {
		t.Fatal(err)
	}
	p := load(t, tiny+"bert-classifier", true)
	b := pipeline.NewBatcher(p, pipeline.BatchConfig{}, nil)
	h, err := api.New(api.Options{Model: p, Batcher: b})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = cfg
	// The refused handshakes are the test's point, not noise for its log.
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	defer ts.Close()

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	client := func(cert, key string) *http.Client {
		c := &tls.Config{RootCAs: roots}
		if cert != "" {
			kp, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				t.Fatal(err)
			}
			c.Certificates = []tls.Certificate{kp}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
	}
	if resp, err := client(cliCert, cliKey).Get(ts.URL + "/health"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("client with the CA's certificate: %v", err)
	}
	for name, c := range map[string]*http.Client{"no certificate": client("", ""), "another CA's": client(badCert, badKey)} {
		if resp, err := c.Get(ts.URL + "/health"); err == nil {
			resp.Body.Close()
			t.Errorf("client with %s was answered %d", name, resp.StatusCode)
		}
	}
	if _, err := api.TLSConfig(srvCert, srvKey, filepath.Join(dir, "missing.pem")); err == nil || !strings.Contains(err.Error(), "client CA") {
		t.Errorf("a missing client CA file: %v", err)
	}
	if _, err := api.ReadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing key file was read")
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := api.ReadKey(empty); err == nil {
		t.Error("an empty key file gave a key")
	}
}
