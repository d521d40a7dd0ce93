package pipeline_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/bertstream/bertstream/pipeline"
)

// runExpectingRefusal runs a worker that the brokers must refuse, and
// returns its error; it fails the test if the worker serves instead.
func runExpectingRefusal(t *testing.T, cfg pipeline.Config) error {
	t.Helper()
	cfg.Logger = testLogger(t)
	w, err := pipeline.NewWorker(cfg, &countingPredictor{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = w.Run(ctx)
	if err == nil {
		t.Fatal("the worker ran and stopped cleanly: the brokers did not refuse it")
	}
	if ctx.Err() != nil {
		t.Fatalf("the worker was refused only after 30s: %v", err)
	}
	return err
}

// serveSome checks that a worker with cfg answers requests.
func serveSome(t *testing.T, cfg pipeline.Config, client *sarama.Config, prefix string) {
	t.Helper()
	rw := startWorker(t, cfg, &countingPredictor{})
	idList := ids(prefix, 10)
	produceWith(t, client, cfg.Brokers[0], requests(idList))
	out := readUntilWith(t, client, cfg.Brokers[0], idList, 30*time.Second)
	count, _ := decodeAnswers(t, out)
	checkAllAnswered(t, idList, count)
	rw.shutdown(t)
}

func TestSASL(t *testing.T) {
	users := map[string][2]string{
		"PLAIN":         {"plain-worker", "plain-secret-1"},
		"SCRAM-SHA-256": {"scram256-worker", "scram256-secret-2"},
		"SCRAM-SHA-512": {"scram512-worker", "scram512-secret-3"},
	}
	opts := []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "admin", "admin-secret")}
	for mech, up := range users {
		opts = append(opts, kfake.User(mech, up[0], up[1]))
	}
	_, addr := newCluster(t, opts...)
	admin := saramaConfig()
	admin.Net.SASL.Enable = true
	admin.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	admin.Net.SASL.User, admin.Net.SASL.Password = "admin", "admin-secret"

	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		up := users[mech]
		t.Run(mech, func(t *testing.T) {
			cfg := baseConfig(addr)
			cfg.Security = pipeline.Security{SASLMechanism: mech, SASLUser: up[0], SASLPassword: up[1]}
			logs := &lockedBuffer{}
			cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			serveSome(t, cfg, admin, mech+"-")
			if !strings.Contains(logs.String(), "sasl="+mech) {
				t.Errorf("the worker did not log its security settings:\n%s", logs)
			}
			if strings.Contains(logs.String(), up[1]) {
				t.Errorf("the password is in the logs:\n%s", logs)
			}
		})
		t.Run(mech+"/password-file", func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "password")
			if err := os.WriteFile(f, []byte(up[1]+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := baseConfig(addr)
			cfg.Security = pipeline.Security{SASLMechanism: mech, SASLUser: up[0], SASLPasswordFile: f}
			serveSome(t, cfg, admin, mech+"-file-")
		})
		t.Run(mech+"/wrong-password", func(t *testing.T) {
			cfg := baseConfig(addr)
			const wrong = "not-the-password-42"
			cfg.Security = pipeline.Security{SASLMechanism: mech, SASLUser: up[0], SASLPassword: wrong}
			err := runExpectingRefusal(t, cfg)
			// A real broker answers SASL_AUTHENTICATION_FAILED; kfake
			// hangs up, and the worker says what that likely means.
			if !strings.Contains(err.Error(), "SASL "+mech+" authentication as \""+up[0]+"\"") || !strings.Contains(err.Error(), "wrong user or password") {
				t.Errorf("error does not say authentication failed: %v", err)
			}
			if strings.Contains(err.Error(), wrong) || strings.Contains(cfg.Security.String(), wrong) {
				t.Errorf("the password shows in %q / %q", err, cfg.Security)
			}
		})
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, in PEM files.
type testPKI struct {
	dir                           string
	caFile, clientCert, clientKey string
	server                        tls.Certificate
	pool                          *x509.CertPool
	otherCAFile                   string
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir, pool: x509.NewCertPool()}
	caKey, caCert, caDER := selfSigned(t, "bertstream test CA")
	p.pool.AddCert(caCert)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := selfSigned(t, "some other CA")
	p.otherCAFile = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherDER)

	issue := func(name string, usage x509.ExtKeyUsage, ips []net.IP) (*ecdsa.PrivateKey, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return key, der
	}
	skey, sder := issue("broker", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	p.server = tls.Certificate{Certificate: [][]byte{sder}, PrivateKey: skey}
	ckey, cder := issue("worker", x509.ExtKeyUsageClientAuth, nil)
	p.clientCert = writePEM(t, dir, "client.pem", "CERTIFICATE", cder)
	kb, err := x509.MarshalECPrivateKey(ckey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientKey = writePEM(t, dir, "client-key.pem", "EC PRIVATE KEY", kb)
	return p
}

func selfSigned(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMutualTLS runs the broker with TLS that requires a client
// certificate: a worker with the CA and its certificate serves; one
// without a certificate, or that does not trust the broker's, is refused
// with an error that says so.
func TestMutualTLS(t *testing.T) {
	pki := newPKI(t)
	_, addr := newCluster(t, kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientCAs:    pki.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}))
	client := saramaConfig()
	cert, err := tls.LoadX509KeyPair(pki.clientCert, pki.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	client.Net.TLS.Enable = true
	client.Net.TLS.Config = &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	t.Run("client-certificate", func(t *testing.T) {
		cfg := baseConfig(addr)
		cfg.Security = pipeline.Security{TLS: true, CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}
		serveSome(t, cfg, client, "mtls-")
	})
	t.Run("no-client-certificate", func(t *testing.T) {
		cfg := baseConfig(addr)
		cfg.Security = pipeline.Security{TLS: true, CAFile: pki.caFile}
		err := runExpectingRefusal(t, cfg)
		if !strings.Contains(err.Error(), "TLS") || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error does not say the TLS handshake wants a client certificate: %v", err)
		}
	})
	t.Run("untrusted-broker", func(t *testing.T) {
		cfg := baseConfig(addr)
		cfg.Security = pipeline.Security{TLS: true, CAFile: pki.otherCAFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}
		err := runExpectingRefusal(t, cfg)
		if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("error does not say the broker's certificate is not trusted: %v", err)
		}
	})
}

// TestACLDenied runs the worker as a user who may read requests but not
// write answers: the worker must stop with an authorization error, and
// commit nothing.
func TestACLDenied(t *testing.T) {
	allow := func(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	c, addr := newCluster(t,
		kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin-secret"),
		kfake.User("PLAIN", "worker", "worker-secret",
			allow(kmsg.ACLResourceTypeGroup, group, kmsg.ACLOperationRead),
			allow(kmsg.ACLResourceTypeTopic, inTopic, kmsg.ACLOperationRead),
			allow(kmsg.ACLResourceTypeTopic, outTopic, kmsg.ACLOperationDescribe),
			allow(kmsg.ACLResourceTypeTopic, dlqTopic, kmsg.ACLOperationWrite),
			allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLOperationIdempotentWrite),
		))
	admin := saramaConfig()
	admin.Net.SASL.Enable = true
	admin.Net.SASL.User, admin.Net.SASL.Password = "admin", "admin-secret"
	produceWith(t, admin, addr, requests(ids("acl-", 20)))

	cfg := baseConfig(addr)
	cfg.Security = pipeline.Security{SASLMechanism: "PLAIN", SASLUser: "worker", SASLPassword: "worker-secret"}
	err := runExpectingRefusal(t, cfg)
	if !strings.Contains(err.Error(), "writing to "+outTopic) || !strings.Contains(err.Error(), "not authorized to access this topic") {
		t.Errorf("error does not say which authorization is missing: %v", err)
	}
	if n := committedTotal(c); n != 0 {
		t.Errorf("%d requests committed without an answer", n)
	}
	if n := sumHighWatermarks(c, outTopic); n != 0 {
		t.Errorf("%d answers written to a topic the worker may not write", n)
	}
}
