// Package broker runs an embedded, in-process Kafka broker (franz-go's
// kfake) for `bertstream broker`, the demo and the pipeline's tests: one
// node that speaks the Kafka wire protocol over TCP, so that any client
// works against it, and creates topics on first use. It is no production
// cluster: without Config.DataDir, what it holds lives in memory and a
// stopped broker loses it; with it, a restarted broker carries on from its
// topics, offsets and groups.
package broker

import (
	"fmt"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the embedded broker.
type Config struct {
	// Listen is the HOST:PORT to serve the Kafka protocol on; port 0 picks
	// a free port.
	Listen string
	// Advertise is the HOST:PORT clients are told to connect to; default
	// the listening address. Set it when listening on all interfaces
	// (0.0.0.0), which is no address a client can dial from elsewhere.
	Advertise string
	// DataDir, when set, persists topics, offsets and groups there, so a
	// restarted broker carries on where it stopped.
	DataDir string
	// Partitions is the partition count of topics created on first use;
	// default 3.
	Partitions int
	// Topics are created at start with Partitions partitions each.
	Topics []string
}

// Cluster is the running broker.
type Cluster struct {
	*kfake.Cluster
	keeper *keeper
}

// Close stops the broker.
func (c *Cluster) Close() {
	c.keeper.close()
	c.Cluster.Close()
}

// Start runs franz-go's kfake cluster in-process as a one-node Kafka
// broker. extra options (TLS, SASL users, ACLs) are passed through to
// kfake. Close the cluster to stop it.
func Start(cfg Config, extra ...kfake.Opt) (*Cluster, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 3
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("broker listen address %q: %w", cfg.Listen, err)
	}
	var (
		adv net.Addr
		// The keeper dials the listener itself, which may be on an
		// address no client is told of.
		local string
	)
	if cfg.Advertise != "" {
		_, port, err := net.SplitHostPort(cfg.Advertise)
		if err == nil {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil {
			return nil, fmt.Errorf("broker advertised address %q: %w", cfg.Advertise, err)
		}
		adv = hostPort(cfg.Advertise)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(0),
		// kfake listens on loopback; this listens where we were asked to.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			ln, err := net.Listen(network, cfg.Listen)
			if err != nil {
				return nil, err
			}
			local = dialable(ln.Addr())
			if adv == nil {
				return ln, nil
			}
			return advertised{ln, adv}, nil
		}),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.ClusterID("bertstream"),
	}
	if len(cfg.Topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(cfg.Partitions), cfg.Topics...))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("starting the embedded broker on %s: %w", cfg.Listen, err)
	}
	k := newKeeper(local)
	k.install(c)
	newRejoins(c).install(c)
	return &Cluster{Cluster: c, keeper: k}, nil
}

// dialable is the address to reach a listener at from this host: a
// listener on all interfaces is reached on loopback.
func dialable(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok || !ta.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ta.Port))
}

// advertised is a listener that names another address: kfake advertises
// its listener's address to clients.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// hostPort is an address as given, unresolved: a host name is advertised
// as a name.
type hostPort string

func (h hostPort) Network() string { return "tcp" }
func (h hostPort) String() string  { return string(h) }
