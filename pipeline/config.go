package pipeline

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/IBM/sarama"

	"github.com/bertstream/bertstream/pipeline/trace"
)

// Config configures a Worker. The zero values of the tuning fields take the
// defaults documented on each.
type Config struct {
	Brokers  []string
	InTopic  string
	OutTopic string
	DLQTopic string
	Group    string
	// InstanceID makes this worker a static member of the group
	// (group.instance.id, KIP-345): restarted with the same id within the
	// session timeout, it takes its partitions back without a rebalance.
	// A static member does not leave the group when it stops, so its
	// partitions move only after the session timeout. Each replica needs
	// its own: a worker that joins with another's id replaces it. Empty:
	// a dynamic member, which leaves the group when it stops.
	InstanceID string
	// Rebalance is how the group moves partitions between workers:
	// RebalanceCooperative (the default) moves only the partitions that
	// change owner, and the others are answered through the rebalance;
	// RebalanceEager stops every worker at every join or leave. Every
	// member of a group must use the same: a worker whose group runs the
	// other is refused (INCONSISTENT_GROUP_PROTOCOL).
	Rebalance string
	// ClientID names this worker to the brokers; default "bertstream".
	ClientID string
	// KafkaVersion is the protocol version to speak; default 3.0.0, which
	// every broker since Kafka 3.0 and kfake understand.
	KafkaVersion string

	// MaxBatch bounds the requests per model call; default 32.
	MaxBatch int
	// MaxWait bounds how long the first request of a batch waits for the
	// batch to fill; default 5ms.
	MaxWait time.Duration
	// MaxTokens bounds the sum of the tokens of a batch, since the model's
	// cost grows with tokens, not requests; default 0, no bound.
	MaxTokens int
	// Lanes is how many batches the model runs at once (BatchConfig.Lanes);
	// default 1.
	Lanes int
	// MaxInFlight bounds the requests consumed but not yet committed; a
	// partition whose next request finds no room is paused. It is also the
	// most requests a crash can make a worker answer twice. Default
	// (3+Lanes)*MaxBatch: a batch in each lane, one being produced, one
	// filling and one committing.
	MaxInFlight int
	// MaxTextBytes bounds text plus text_pair before tokenization; default
	// 64 KiB. The model's own maximum length, in tokens, is the
	// predictor's to enforce (by truncating or refusing).
	MaxTextBytes int

	// MaxAge, when set, bounds the age of a request by its record's Kafka
	// timestamp: an older one is dead-lettered as expired before it costs
	// model time, like one past its own "deadline".
	MaxAge time.Duration

	// ExactlyOnce produces answers and commits offsets in one Kafka
	// transaction per batch and reads the input read_committed.
	ExactlyOnce bool
	// TransactionalID identifies this worker's transactions. Each worker
	// needs its own: a worker that starts with another's id fences it. It
	// should be stable across restarts of one replica, so that a restarted
	// worker aborts its predecessor's open transaction at once. Default
	// Group + "-" + InstanceID, or + the host name without one.
	TransactionalID string
	// TransactionTimeout is how long the broker keeps an abandoned
	// transaction open; default 10s.
	TransactionTimeout time.Duration

	// DrainTimeout bounds how long a rebalance or a shutdown waits for the
	// requests in flight to be answered (the final commit may retry a few
	// seconds more); default 10s.
	DrainTimeout time.Duration
	// SessionTimeout and HeartbeatInterval are the consumer group's; defaults
	// 10s and 1s.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration

	Security Security

	// Batcher, when set, is a batcher shared with requests from outside
	// Kafka (the HTTP API): the worker's requests join its batches, whose
	// limits replace MaxBatch, MaxWait, MaxTokens and Lanes, and its owner runs
	// it, from before Run until Run has returned.
	Batcher *Batcher

	// Tracer, when set, receives a span per request (tracing.go);
	// default the shared Batcher's.
	Tracer *trace.Exporter

	// Logger receives structured logs; default slog.Default().
	Logger *slog.Logger
	// Metrics, when set, receives the worker's counters.
	Metrics *Metrics
}

// The rebalance protocols of Config.Rebalance.
const (
	RebalanceCooperative = "cooperative"
	RebalanceEager       = "eager"
)

func (c *Config) setDefaults() error {
	if len(c.Brokers) == 0 {
		return errors.New("no brokers given")
	}
	for name, v := range map[string]string{"input topic": c.InTopic, "output topic": c.OutTopic, "dead-letter topic": c.DLQTopic, "group": c.Group} {
		if v == "" {
			return fmt.Errorf("no %s given", name)
		}
	}
	if c.InTopic == c.OutTopic || c.InTopic == c.DLQTopic {
		return fmt.Errorf("input topic %q is also an output topic", c.InTopic)
	}
	switch c.Rebalance {
	case "":
		c.Rebalance = RebalanceCooperative
	case RebalanceCooperative, RebalanceEager:
	default:
		return fmt.Errorf("rebalance protocol %q: want %q or %q", c.Rebalance, RebalanceCooperative, RebalanceEager)
	}
	if c.ClientID == "" {
		c.ClientID = "bertstream"
	}
	if c.KafkaVersion == "" {
		c.KafkaVersion = "3.0.0"
	}
	if b := c.Batcher; b != nil {
		c.MaxBatch, c.MaxWait, c.MaxTokens, c.Lanes = b.cfg.MaxBatch, b.cfg.MaxWait, b.cfg.MaxTokens, b.cfg.Lanes
		if c.Tracer == nil {
			c.Tracer = b.cfg.Tracer
		}
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 32
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 5 * time.Millisecond
	}
	if c.Lanes <= 0 {
		c.Lanes = 1
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = (3 + c.Lanes) * c.MaxBatch
	}
	if c.MaxInFlight < c.MaxBatch {
		return fmt.Errorf("max in-flight %d is below max batch %d: batches could never fill", c.MaxInFlight, c.MaxBatch)
	}
	if c.MaxTextBytes <= 0 {
		c.MaxTextBytes = 64 << 10
	}
	if c.TransactionalID == "" {
		name := c.InstanceID
		if name == "" {
			host, err := os.Hostname()
			if err != nil {
				return fmt.Errorf("default transactional id: %w", err)
			}
			name = host
		}
		c.TransactionalID = c.Group + "-" + name
	}
	if c.TransactionTimeout <= 0 {
		c.TransactionTimeout = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = time.Second
	}
	// A member that misses two heartbeats in a row must still be in the
	// group: Kafka's own advice, and what its clients enforce.
	if 3*c.HeartbeatInterval > c.SessionTimeout {
		return fmt.Errorf("heartbeat interval %v is over a third of the session timeout %v", c.HeartbeatInterval, c.SessionTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// rebalanceTimeout is how long the group waits for a member to drain,
// commit and rejoin.
func (c *Config) rebalanceTimeout() time.Duration {
	return c.DrainTimeout + commitGrace + 2*time.Second
}

func (c *Config) cooperative() bool { return c.Rebalance == RebalanceCooperative }

// saramaConfigs are the client configurations of one worker's consumer
// group (and its commits) and of its producer.
func (c *Config) saramaConfigs() (consumer, producer *sarama.Config, err error) {
	base := func() (*sarama.Config, error) {
		sc := sarama.NewConfig()
		v, err := sarama.ParseKafkaVersion(c.KafkaVersion)
		if err != nil {
			return nil, fmt.Errorf("kafka version %q: %w", c.KafkaVersion, err)
		}
		sc.Version = v
		sc.ClientID = c.ClientID
		if err := c.Security.apply(sc); err != nil {
			return nil, err
		}
		// Sarama's 30s defaults would let a dead broker hold a drain or a
		// commit for longer than the rebalance allows.
		sc.Net.DialTimeout = 5 * time.Second
		sc.Net.ReadTimeout = 10 * time.Second
		sc.Net.WriteTimeout = 10 * time.Second
		sc.Metadata.Retry.Backoff = 100 * time.Millisecond
		return sc, nil
	}

	cc, err := base()
	if err != nil {
		return nil, nil, err
	}
	cc.Consumer.Return.Errors = true
	cc.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Offsets are committed by the worker once answers are acknowledged,
	// never on a timer behind its back.
	cc.Consumer.Offsets.AutoCommit.Enable = false
	cc.Consumer.Group.Session.Timeout = c.SessionTimeout
	cc.Consumer.Group.Heartbeat.Interval = c.HeartbeatInterval
	cc.Consumer.Group.InstanceId = c.InstanceID
	// The group waits this long for a member to drain and commit before it
	// rebalances without it.
	cc.Consumer.Group.Rebalance.Timeout = c.rebalanceTimeout()
	// The coordinator holds a JoinGroup (and a SyncGroup) until every
	// member has rejoined, up to the rebalance timeout, and Sarama reads
	// its answer under Net.ReadTimeout. Were that shorter, a worker would
	// give up on a join the coordinator still counts, and join again as a
	// new member: the group then waits a rebalance timeout for the one it
	// left behind, longer than the next join waits, and so on for good.
	// Kafka's Java client waits the rebalance timeout plus 5s for a join.
	cc.Net.ReadTimeout = cc.Consumer.Group.Rebalance.Timeout + 5*time.Second
	if c.cooperative() {
		cc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
	} else {
		cc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}
	}
	cc.Consumer.MaxWaitTime = 100 * time.Millisecond
	// Sarama waits 2s before fetching again after a failed fetch; a worker
	// that stands still that long builds up lag for nothing.
	cc.Consumer.Retry.Backoff = 200 * time.Millisecond
	cc.ChannelBufferSize = c.MaxBatch
	if c.ExactlyOnce {
		cc.Consumer.IsolationLevel = sarama.ReadCommitted
	}

	pc, err := base()
	if err != nil {
		return nil, nil, err
	}
	pc.Producer.Idempotent = true
	pc.Producer.RequiredAcks = sarama.WaitForAll
	// The idempotent producer keeps per-partition order only with one
	// request in flight per broker.
	pc.Net.MaxOpenRequests = 1
	pc.Producer.Retry.Max = 10
	pc.Producer.Retry.Backoff = 100 * time.Millisecond
	pc.Producer.Return.Successes = true
	pc.Producer.Return.Errors = true
	pc.Producer.Flush.Frequency = time.Millisecond
	pc.Producer.Partitioner = sarama.NewHashPartitioner
	if c.ExactlyOnce {
		pc.Producer.Transaction.ID = c.TransactionalID
		pc.Producer.Transaction.Timeout = c.TransactionTimeout
		pc.Producer.Transaction.Retry.Backoff = 50 * time.Millisecond
	}
	for _, sc := range []*sarama.Config{cc, pc} {
		if err := sc.Validate(); err != nil {
			return nil, nil, fmt.Errorf("kafka client configuration: %w", err)
		}
	}
	return cc, pc, nil
}
