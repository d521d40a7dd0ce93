package broker

import (
	"bytes"
	"slices"
	"sync"

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
// back under a new member id while kfake holds the group stable with the
// old one still in it, with the same protocols and the same topics, hands
// kfake the old member's join in place of the new one. kfake then does
// what Kafka does: it gives the new process the old one's slot and
// assignment without a rebalance. In any other state the join goes on as
// sent: a rebalance that replayed the old join would count the restarted
// process as owning partitions it does not hold, and the cooperative
// assignors would keep those back from the others, waiting for a
// revocation that never comes.
type rejoins struct {
	// stable reports whether group is stable with a member of instance
	// id, as kfake sees it before it serves the join.
	stable func(group, id string) bool

	mu   sync.Mutex
	last map[instance][]kmsg.JoinGroupRequestProtocol
}

type instance struct{ group, id string }

func newRejoins(c *kfake.Cluster) *rejoins {
	return &rejoins{
		// A control function may call into the cluster: kfake serves
		// its admin requests while it waits for the function, and the
		// join is served right after, in the same state.
		stable: func(group, id string) bool {
			gi := c.GroupInfo(group)
			if gi == nil || gi.State != "Stable" {
				return false
			}
			for _, m := range gi.Members {
				if m.InstanceID != nil && *m.InstanceID == id {
					return true
				}
			}
			return false
		},
		last: make(map[instance][]kmsg.JoinGroupRequestProtocol),
	}
}

// install adds the observer to c. It never handles a request: kfake
// serves each one, the rewritten join included.
func (r *rejoins) install(c *kfake.Cluster) {
	c.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r.join(req.(*kmsg.JoinGroupRequest))
		return nil, nil, false
	})
}

// join records a static member's join, or rewrites it into the member's
// previous one when it is a restart that Kafka would not rebalance for.
func (r *rejoins) join(req *kmsg.JoinGroupRequest) {
	if req.InstanceID == nil {
		return
	}
	key := instance{req.Group, *req.InstanceID}
	r.mu.Lock()
	prev, ok := r.last[key]
	r.mu.Unlock()
	if req.MemberID == "" && ok && sameSubscription(prev, req.Protocols) && r.stable(req.Group, *req.InstanceID) {
		req.Protocols = cloneProtocols(prev)
		return
	}
	r.mu.Lock()
	r.last[key] = cloneProtocols(req.Protocols)
	r.mu.Unlock()
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
