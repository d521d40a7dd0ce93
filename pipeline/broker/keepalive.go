package broker

import (
	"errors"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// keeper makes the embedded broker keep a consumer group member alive
// while the coordinator holds its JoinGroup or SyncGroup, as Kafka does.
// kfake does not: it expires such a member by its session timeout (a client
// does not heartbeat while it waits for its join) and never answers the
// held request. A worker that rejoins while the group waits for a killed
// member is then dropped from the group when its own session runs out, and
// sits until its read deadline before it joins again as a new member,
// which starts yet another rebalance: under churn the fleet stalls for a
// read timeout per round.
//
// The keeper watches the group requests and, while a member's join or
// sync is held, heartbeats for it over a connection of its own, within
// the member's rebalance timeout: the bound Kafka keeps such members alive
// for. It needs a plain listener: on one that requires TLS or SASL its
// heartbeats are refused and it keeps nothing alive.
type keeper struct {
	addr    string
	die     chan struct{}
	dieOnce sync.Once

	mu sync.Mutex
	// gens is the generation each member last named, from its heartbeats,
	// syncs and commits: the keeper's heartbeats must name the current one.
	gens map[member]int32
	// session and rebalance are the timeouts of each member's last join.
	session, rebalance map[member]time.Duration
	// synced closes when the leader's sync of a group's generation
	// arrives, which answers every sync held for it.
	synced map[genKey]chan struct{}

	// connMu guards conn apart from mu: the observers run on kfake's loop,
	// which must stay free to answer the keeper's own heartbeats.
	connMu sync.Mutex
	conn   *sarama.Broker
}

type member struct{ group, id string }

type genKey struct {
	group string
	gen   int32
}

func newKeeper(addr string) *keeper {
	return &keeper{
		addr:      addr,
		die:       make(chan struct{}),
		gens:      make(map[member]int32),
		session:   make(map[member]time.Duration),
		rebalance: make(map[member]time.Duration),
		synced:    make(map[genKey]chan struct{}),
	}
}

// install adds the keeper's observers to c. They never handle a request:
// kfake goes on to serve it as usual.
func (k *keeper) install(c *kfake.Cluster) {
	observe := func(key kmsg.Key, fn func(kmsg.Request)) {
		c.ControlKey(int16(key), func(r kmsg.Request) (kmsg.Response, error, bool) {
			fn(r)
			return nil, nil, false
		})
	}
	observe(kmsg.Heartbeat, func(r kmsg.Request) {
		req := r.(*kmsg.HeartbeatRequest)
		k.setGen(member{req.Group, req.MemberID}, req.Generation)
	})
	observe(kmsg.OffsetCommit, func(r kmsg.Request) {
		req := r.(*kmsg.OffsetCommitRequest)
		if req.MemberID != "" && req.Generation >= 0 {
			k.setGen(member{req.Group, req.MemberID}, req.Generation)
		}
	})
	observe(kmsg.JoinGroup, func(r kmsg.Request) {
		req := r.(*kmsg.JoinGroupRequest)
		if req.MemberID == "" {
			// A new member: kfake runs no session timer for it until its
			// join is answered.
			return
		}
		m := member{req.Group, req.MemberID}
		k.mu.Lock()
		k.session[m] = time.Duration(req.SessionTimeoutMillis) * time.Millisecond
		k.rebalance[m] = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
		gen, ok := k.gens[m]
		k.mu.Unlock()
		if ok {
			go k.keepJoining(m, gen)
		}
	})
	observe(kmsg.SyncGroup, func(r kmsg.Request) {
		req := r.(*kmsg.SyncGroupRequest)
		m := member{req.Group, req.MemberID}
		k.setGen(m, req.Generation)
		g := genKey{req.Group, req.Generation}
		k.mu.Lock()
		done := k.synced[g]
		if done == nil {
			done = make(chan struct{})
			k.synced[g] = done
		}
		if len(req.GroupAssignment) > 0 {
			// The leader's sync: kfake answers every member's now, and
			// those of older generations are long answered or refused.
			for o, c := range k.synced {
				if o.group == g.group && o.gen <= g.gen {
					close(c)
					delete(k.synced, o)
				}
			}
			k.mu.Unlock()
			return
		}
		k.mu.Unlock()
		go k.keepSyncing(m, req.Generation, done)
	})
	observe(kmsg.LeaveGroup, func(r kmsg.Request) {
		req := r.(*kmsg.LeaveGroupRequest)
		k.mu.Lock()
		defer k.mu.Unlock()
		ids := []string{req.MemberID}
		for _, lm := range req.Members {
			ids = append(ids, lm.MemberID)
		}
		for _, id := range ids {
			m := member{req.Group, id}
			delete(k.gens, m)
			delete(k.session, m)
			delete(k.rebalance, m)
		}
	})
}

// setGen records the generation m named. Only a newer one counts: the
// keeper's own late heartbeats name the generation before a rebalance.
func (k *keeper) setGen(m member, gen int32) {
	k.mu.Lock()
	if old, ok := k.gens[m]; !ok || gen > old {
		k.gens[m] = gen
	}
	k.mu.Unlock()
}

// close may be called more than once, as kfake's Close may.
func (k *keeper) close() {
	k.dieOnce.Do(func() { close(k.die) })
	k.connMu.Lock()
	defer k.connMu.Unlock()
	if k.conn != nil {
		_ = k.conn.Close()
	}
}

// timing is how often to heartbeat for m and until when.
func (k *keeper) timing(m member) (every time.Duration, until time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	every = max(k.session[m]/3, 50*time.Millisecond)
	return every, time.Now().Add(k.rebalance[m])
}

// keepJoining heartbeats for m while its join is held: while the
// coordinator answers REBALANCE_IN_PROGRESS for the generation m had.
// Anything else means the join was answered (a new generation) or m is
// gone.
func (k *keeper) keepJoining(m member, gen int32) {
	every, until := k.timing(m)
	for k.wait(every) && time.Now().Before(until) {
		err := k.heartbeat(m, gen)
		if !errors.Is(err, sarama.ErrRebalanceInProgress) {
			return
		}
	}
}

// keepSyncing heartbeats for m while its sync waits for the leader's.
func (k *keeper) keepSyncing(m member, gen int32, synced <-chan struct{}) {
	every, until := k.timing(m)
	for time.Now().Before(until) {
		select {
		case <-synced:
			return
		case <-k.die:
			return
		case <-time.After(every):
		}
		if k.heartbeat(m, gen) != nil {
			return
		}
	}
}

func (k *keeper) wait(d time.Duration) bool {
	select {
	case <-k.die:
		return false
	case <-time.After(d):
		return true
	}
}

// heartbeat sends one heartbeat for m and returns the coordinator's error;
// a failure to reach it ends the keeping, as if m were gone.
func (k *keeper) heartbeat(m member, gen int32) error {
	k.connMu.Lock()
	defer k.connMu.Unlock()
	select {
	case <-k.die:
		return errors.New("broker closed")
	default:
	}
	if k.conn == nil {
		cfg := sarama.NewConfig()
		cfg.Version = sarama.V2_0_0_0
		cfg.ClientID = "bertstream-broker-keepalive"
		cfg.Net.DialTimeout = time.Second
		cfg.Net.ReadTimeout = 5 * time.Second
		b := sarama.NewBroker(k.addr)
		if err := b.Open(cfg); err != nil {
			return err
		}
		k.conn = b
	}
	resp, err := k.conn.Heartbeat(&sarama.HeartbeatRequest{Version: 2, GroupId: m.group, GenerationId: gen, MemberId: m.id})
	if err != nil {
		_ = k.conn.Close()
		k.conn = nil
		return err
	}
	if resp.Err == sarama.ErrNoError {
		return nil
	}
	return resp.Err
}
