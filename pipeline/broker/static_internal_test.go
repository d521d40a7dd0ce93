package broker

import (
	"bytes"
	"testing"

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
// only while the group is stable with the old member in it, and for the
// same protocols and topics.
func TestRejoins(t *testing.T) {
	owned := subscription([]string{"in"}, []int32{0, 1, 2}, 7)
	fresh := subscription([]string{"in"}, nil, -1)
	for _, tc := range []struct {
		name    string
		restart *kmsg.JoinGroupRequest
		stable  bool
		want    []byte
	}{
		{"restart into a stable group", joinReq("", fresh), true, owned},
		{"restart during a rebalance, or after the old member left", joinReq("", fresh), false, fresh},
		{"other topics", joinReq("", subscription([]string{"other"}, nil, -1)), true, nil},
		{"rejoin of a live member", joinReq("w0-1", fresh), true, fresh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			asked := false
			r := &rejoins{
				stable: func(group, id string) bool {
					asked = true
					if group != "g" || id != "w0" {
						t.Errorf("asked about %s/%s", group, id)
					}
					return tc.stable
				},
				last: make(map[instance][]kmsg.JoinGroupRequestProtocol),
			}
			r.join(joinReq("w0-1", owned))
			if asked {
				t.Error("a live member's join asked for the group's state")
			}
			want := tc.want
			if want == nil {
				want = bytes.Clone(tc.restart.Protocols[0].Metadata)
			}
			r.join(tc.restart)
			if got := tc.restart.Protocols[0].Metadata; !bytes.Equal(got, want) {
				t.Errorf("the join the coordinator sees is %x, want %x", got, want)
			}
		})
	}
}
