package pipeline

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/IBM/sarama"
)

// Security is how a worker authenticates to the brokers. Secrets are held
// here only; they are never logged (String redacts them).
type Security struct {
	// TLS turns on TLS. CAFile verifies the brokers (system roots when
	// empty); CertFile and KeyFile are the client certificate for mTLS.
	TLS        bool
	CAFile     string
	CertFile   string
	KeyFile    string
	ServerName string

	// SASLMechanism is "", "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512".
	SASLMechanism string
	SASLUser      string
	SASLPassword  string
	// SASLPasswordFile, when SASLPassword is empty, holds the password (a
	// mounted Kubernetes secret); a trailing newline is not part of it.
	SASLPasswordFile string
}

// String describes the settings without the password.
func (s Security) String() string {
	mech := s.SASLMechanism
	if mech == "" {
		mech = "none"
	}
	return fmt.Sprintf("tls=%t ca=%q cert=%q sasl=%s user=%q password_set=%t", s.TLS, s.CAFile, s.CertFile, mech, s.SASLUser, s.SASLPassword != "" || s.SASLPasswordFile != "")
}

// LogValue keeps the password out of structured logs.
func (s Security) LogValue() slog.Value { return slog.StringValue(s.String()) }

func (s Security) apply(sc *sarama.Config) error {
	if s.TLS || s.CAFile != "" || s.CertFile != "" {
		tc, err := s.tlsConfig()
		if err != nil {
			return err
		}
		sc.Net.TLS.Enable = true
		sc.Net.TLS.Config = tc
	}
	switch s.SASLMechanism {
	case "":
		return nil
	case "PLAIN":
		sc.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	case "SCRAM-SHA-256":
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
	case "SCRAM-SHA-512":
		sc.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
		sc.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
	default:
		return fmt.Errorf("SASL mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.SASLMechanism)
	}
	if s.SASLUser == "" {
		return fmt.Errorf("SASL %s needs a user", s.SASLMechanism)
	}
	if s.SASLPassword == "" && s.SASLPasswordFile != "" {
		b, err := os.ReadFile(s.SASLPasswordFile)
		if err != nil {
			return fmt.Errorf("reading the SASL password: %w", err)
		}
		s.SASLPassword = strings.TrimRight(string(b), "\r\n")
	}
	sc.Net.SASL.Enable = true
	sc.Net.SASL.Handshake = true
	sc.Net.SASL.User = s.SASLUser
	sc.Net.SASL.Password = s.SASLPassword
	return nil
}

func (s Security) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", s.CAFile)
		}
		tc.RootCAs = pool
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return nil, errors.New("a client certificate needs both a certificate file and a key file")
	}
	if s.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate %s: %w", s.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// scramClient is the client side of SCRAM (RFC 5802) for Sarama, which
// leaves the mechanism to the application.
type scramClient struct {
	hash func() hash.Hash

	user, password string
	clientNonce    string
	firstBare      string
	serverSig      []byte
	step           int
	done           bool
}

func (c *scramClient) Begin(user, password, authzID string) error {
	if authzID != "" {
		return errors.New("scram: authorization ids are not supported")
	}
	nonce := make([]byte, 24)
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("scram: nonce: %w", err)
	}
	c.user, c.password = user, password
	c.clientNonce = base64.RawStdEncoding.EncodeToString(nonce)
	c.step, c.done = 0, false
	return nil
}

func (c *scramClient) Step(challenge string) (string, error) {
	c.step++
	switch c.step {
	case 1:
		c.firstBare = "n=" + scramEscape(c.user) + ",r=" + c.clientNonce
		return "n,," + c.firstBare, nil
	case 2:
		return c.clientFinal(challenge)
	case 3:
		c.done = true
		attrs, err := scramAttrs(challenge)
		if err != nil {
			return "", err
		}
		if e, ok := attrs['e']; ok {
			return "", fmt.Errorf("scram: server refused: %s", e)
		}
		v, err := base64.StdEncoding.DecodeString(attrs['v'])
		if err != nil || !hmac.Equal(v, c.serverSig) {
			return "", errors.New("scram: the server's signature does not match: it does not know the password")
		}
		return "", nil
	}
	return "", errors.New("scram: conversation already over")
}

func (c *scramClient) Done() bool { return c.done }

func (c *scramClient) clientFinal(serverFirst string) (string, error) {
	attrs, err := scramAttrs(serverFirst)
	if err != nil {
		return "", err
	}
	nonce, saltB64, iterS := attrs['r'], attrs['s'], attrs['i']
	if !strings.HasPrefix(nonce, c.clientNonce) || len(nonce) == len(c.clientNonce) {
		return "", errors.New("scram: the server's nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		return "", fmt.Errorf("scram: salt: %w", err)
	}
	iters, err := strconv.Atoi(iterS)
	// Kafka requires at least 4096 iterations; an upper bound keeps a
	// hostile server from making us spin.
	if err != nil || iters < 1 || iters > 1<<20 {
		return "", fmt.Errorf("scram: bad iteration count %q", iterS)
	}
	salted, err := pbkdf2.Key(c.hash, c.password, salt, iters, c.hash().Size())
	if err != nil {
		return "", fmt.Errorf("scram: %w", err)
	}
	clientKey := scramHMAC(c.hash, salted, "Client Key")
	h := c.hash()
	h.Write(clientKey)
	storedKey := h.Sum(nil)
	finalNoProof := "c=biws,r=" + nonce
	authMsg := c.firstBare + "," + serverFirst + "," + finalNoProof
	sig := scramHMAC(c.hash, storedKey, authMsg)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	c.serverSig = scramHMAC(c.hash, scramHMAC(c.hash, salted, "Server Key"), authMsg)
	return finalNoProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func scramHMAC(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func scramEscape(s string) string {
	return strings.NewReplacer("=", "=3D", ",", "=2C").Replace(s)
}

// scramAttrs parses a server message "a=v,b=w,...".
func scramAttrs(msg string) (map[byte]string, error) {
	attrs := make(map[byte]string)
	for _, kv := range strings.Split(msg, ",") {
		if len(kv) < 2 || kv[1] != '=' {
			return nil, fmt.Errorf("scram: malformed server message attribute %q", kv)
		}
		attrs[kv[0]] = kv[2:]
	}
	return attrs, nil
}
