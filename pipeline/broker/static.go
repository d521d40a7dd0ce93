package broker

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rejoins makes the embedded broker take a restarted static member back
// the way Kafka does. Kafka's coordinator lets a static member (one with a
// group.instance.id) that rejoins under a new member id into a stable
// group without a rebalance, as long as its join leaves the group's
// protocol as it was (KIP-345): the new process gets the old one's
// partitions back. kfake does so only when the new join is byte for byte
// the old one. A cooperative consumer's join lists the partitions it owns
// and the generation it owned them in, which a process that has just
// started does not have: so under kfake every restart of a cooperative
// worker rebalanced the whole group, though nothing moved.
//
// rejoins keeps each static member's last join and, when the member comes
// back under a new member id while its old session may still be alive,
// with the same protocols and the same topics, hands kfake the old
// member's join in place of the new one. kfake then decides as Kafka
// would: no rebalance while the group is stable, an ordinary one
// otherwise. In that ordinary rebalance the stale ownership the old join
// names is harmless: the assignors drop a claim from an older generation
// that conflicts with a newer one, and the restarted process, which holds
// nothing, revokes nothing.
type rejoins struct {
	mu   sync.Mutex
	last map[instance]staticJoin
}

type instance struct{ group, id string }

type staticJoin struct {
	protocols []kmsg.JoinGroupRequestProtocol
	session   time.Duration
	// seen is when the member last spoke to the coordinator. A member
	// silent for its session timeout has been dropped from the group:
	// its join must not stand in for anyone's.
	seen time.Time
}

func newRejoins() *rejoins { return &rejoins{last: make(map[instance]staticJoin)} }

// install adds the observers to c. They never handle a request: kfake
// serves each one, the rewritten join included.
func (r *rejoins) install(c *kfake.Cluster) {
	observe := func(key kmsg.Key, fn func(kmsg.Request)) {
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			fn(req)
			return nil, nil, false
		})
	}
	observe(kmsg.JoinGroup, func(req kmsg.Request) { r.join(req.(*kmsg.JoinGroupRequest), time.Now()) })
	observe(kmsg.Heartbeat, func(req kmsg.Request) {
		h := req.(*kmsg.HeartbeatRequest)
		r.saw(h.Group, h.InstanceID, time.Now())
	})
	observe(kmsg.SyncGroup, func(req kmsg.Request) {
		s := req.(*kmsg.SyncGroupRequest)
		r.saw(s.Group, s.InstanceID, time.Now())
	})
	observe(kmsg.LeaveGroup, func(req kmsg.Request) { r.leave(req.(*kmsg.LeaveGroupRequest)) })
}

// leave forgets the members that leave: the coordinator drops them at
// once, so a later join of theirs is a new member's.
func (r *rejoins) leave(req *kmsg.LeaveGroupRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range req.Members {
		if m.InstanceID != nil {
			delete(r.last, instance{req.Group, *m.InstanceID})
		}
	}
}

// join records a static member's join, or rewrites it into the member's
// previous one when it is a restart that Kafka would not rebalance for.
func (r *rejoins) join(req *kmsg.JoinGroupRequest, now time.Time) {
	if req.InstanceID == nil {
		return
	}
	key := instance{req.Group, *req.InstanceID}
	session := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, ok := r.last[key]
	if req.MemberID == "" && ok && now.Sub(prev.seen) < prev.session && sameSubscription(prev.protocols, req.Protocols) {
		req.Protocols = cloneProtocols(prev.protocols)
	} else {
		prev.protocols = cloneProtocols(req.Protocols)
	}
	prev.session, prev.seen = session, now
	r.last[key] = prev
}

func (r *rejoins) saw(group string, id *string, now time.Time) {
	if id == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := instance{group, *id}
	if j, ok := r.last[key]; ok {
		j.seen = now
		r.last[key] = j
	}
}

// sameSubscription reports whether two joins offer the same protocols in
// the same order, each for the same topics from the same rack: all that
// may differ is what the member owned and its assignor's user data (the
// cooperative-sticky assignors keep the generation there), which is what a
// restart loses. A join whose metadata is not a consumer subscription
// counts as changed.
func sameSubscription(a, b []kmsg.JoinGroupRequestProtocol) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
		var ma, mb kmsg.ConsumerMemberMetadata
		if ma.ReadFrom(a[i].Metadata) != nil || mb.ReadFrom(b[i].Metadata) != nil {
			return false
		}
		ta, tb := slices.Clone(ma.Topics), slices.Clone(mb.Topics)
		slices.Sort(ta)
		slices.Sort(tb)
		if !slices.Equal(ta, tb) || !ptrEqual(ma.Rack, mb.Rack) {
			return false
		}
	}
	return true
}

func ptrEqual(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func cloneProtocols(ps []kmsg.JoinGroupRequestProtocol) []kmsg.JoinGroupRequestProtocol {
	out := make([]kmsg.JoinGroupRequestProtocol, len(ps))
	for i, p := range ps {
		out[i] = p
		out[i].Metadata = bytes.Clone(p.Metadata)
	}
	return out
}
