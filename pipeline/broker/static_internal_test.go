package broker

import (
	"bytes"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// subscription is a consumer join's protocol metadata as a cooperative
// consumer writes it: what it owns and the generation it owned it in.
func subscription(topics []string, owned []int32, gen int32) []byte {
	m := kmsg.NewConsumerMemberMetadata()
	m.Version = 2
	m.Topics = topics
	m.Generation = gen
	m.UserData = []byte{byte(gen)}
	if len(owned) > 0 {
		op := kmsg.NewConsumerMemberMetadataOwnedPartition()
		op.Topic = topics[0]
		op.Partitions = owned
		m.OwnedPartitions = append(m.OwnedPartitions, op)
	}
	return m.AppendTo(nil)
}

func joinReq(memberID string, meta []byte) *kmsg.JoinGroupRequest {
	r := kmsg.NewPtrJoinGroupRequest()
	r.Group = "g"
	id := "w0"
	r.InstanceID = &id
	r.MemberID = memberID
	r.SessionTimeoutMillis = 6000
	r.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "cooperative-sticky", Metadata: meta}}
	return r
}

// TestRejoins: a restarted static member's join stands in for the old one
// only while the old session may be alive, for the same protocols and
// topics, and not after the member left.
func TestRejoins(t *testing.T) {
	owned := subscription([]string{"in"}, []int32{0, 1, 2}, 7)
	fresh := subscription([]string{"in"}, nil, -1)
	t0 := time.Unix(1000, 0)
	for _, tc := range []struct {
		name    string
		restart *kmsg.JoinGroupRequest
		at      time.Time
		leave   bool
		want    []byte
	}{
		{"restart within the session", joinReq("", fresh), t0.Add(5 * time.Second), false, owned},
		{"restart after the session", joinReq("", fresh), t0.Add(7 * time.Second), false, fresh},
		{"other topics", joinReq("", subscription([]string{"other"}, nil, -1)), t0.Add(time.Second), false, nil},
		{"rejoin of a live member", joinReq("w0-1", fresh), t0.Add(time.Second), false, fresh},
		{"restart after a leave", joinReq("", fresh), t0.Add(time.Second), true, fresh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRejoins()
			r.join(joinReq("w0-1", owned), t0)
			if tc.leave {
				l := kmsg.NewPtrLeaveGroupRequest()
				l.Group = "g"
				lm := kmsg.NewLeaveGroupRequestMember()
				lm.MemberID = "w0-1"
				lm.InstanceID = tc.restart.InstanceID
				l.Members = append(l.Members, lm)
				r.leave(l)
			}
			want := tc.want
			if want == nil {
				want = bytes.Clone(tc.restart.Protocols[0].Metadata)
			}
			r.join(tc.restart, tc.at)
			if got := tc.restart.Protocols[0].Metadata; !bytes.Equal(got, want) {
				t.Errorf("the join coordinator sees %x, want %x", got, want)
			}
		})
	}

	// Heartbeats keep the old session alive past the join's own time.
	r := newRejoins()
	r.join(joinReq("w0-1", owned), t0)
	id := "w0"
	r.saw("g", &id, t0.Add(5*time.Second))
	late := joinReq("", fresh)
	r.join(late, t0.Add(10*time.Second))
	if !bytes.Equal(late.Protocols[0].Metadata, owned) {
		t.Error("a restart 5s after the last heartbeat (session 6s) was not taken back")
	}
}
