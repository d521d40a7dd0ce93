package broker_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/bertstream/bertstream/pipeline/broker"
)

// TestStart: the broker seeds its topics with the partitions asked for and
// tells clients the advertised address, not the one it listens on.
func TestStart(t *testing.T) {
	// A port known before the start, so that the advertised address can
	// name it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	advertised := "localhost:" + port
	c, err := broker.Start(broker.Config{Listen: "127.0.0.1:" + port, Advertise: advertised, Partitions: 2, Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ListenAddrs(); len(got) != 1 || got[0] != advertised {
		t.Errorf("listen addresses %v, want [%s]", got, advertised)
	}
	if n := len(c.PartitionInfos("t")); n != 2 {
		t.Errorf("topic t has %d partitions, want 2", n)
	}

	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	client, err := sarama.NewClient([]string{"127.0.0.1:" + port}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if bs := client.Brokers(); len(bs) != 1 || bs[0].Addr() != advertised {
		var addrs []string
		for _, b := range bs {
			addrs = append(addrs, b.Addr())
		}
		t.Errorf("the metadata names brokers %v, want [%s]", addrs, advertised)
	}
}

func TestStartRefusesBadAddresses(t *testing.T) {
	for _, cfg := range []broker.Config{
		{Listen: "no-port"},
		{Advertise: "no-port"},
		{Advertise: "host:99999"},
	} {
		if c, err := broker.Start(cfg); err == nil {
			c.Close()
			t.Errorf("%+v: started", cfg)
		}
	}
}

// groupConn is one raw consumer group member on its own connection.
type groupConn struct {
	t  *testing.T
	b  *sarama.Broker
	id string
}

func dialMember(t *testing.T, addr string) *groupConn {
	t.Helper()
	sc := sarama.NewConfig()
	sc.Version = sarama.V3_0_0_0
	sc.Net.ReadTimeout = 4 * time.Second
	b := sarama.NewBroker(addr)
	if err := b.Open(sc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &groupConn{t: t, b: b}
}

// join sends JoinGroup (twice for a new member, which is first given its
// id) and returns the answer, or the error of the round trip.
func (g *groupConn) join() (*sarama.JoinGroupResponse, error) {
	for {
		req := &sarama.JoinGroupRequest{Version: 5, GroupId: "g", SessionTimeout: 1000, RebalanceTimeout: 5000, MemberId: g.id, ProtocolType: "consumer"}
		if err := req.AddGroupProtocolMetadata("range", &sarama.ConsumerGroupMemberMetadata{Topics: []string{"t"}}); err != nil {
			g.t.Fatal(err)
		}
		resp, err := g.b.JoinGroup(req)
		if err != nil {
			return nil, err
		}
		g.id = resp.MemberId
		if resp.Err != sarama.ErrMemberIdRequired {
			return resp, nil
		}
	}
}

func (g *groupConn) sync(gen int32, members ...string) {
	g.t.Helper()
	req := &sarama.SyncGroupRequest{Version: 3, GroupId: "g", GenerationId: gen, MemberId: g.id}
	for _, m := range members {
		req.AddGroupAssignmentMember(m, &sarama.ConsumerGroupMemberAssignment{})
	}
	resp, err := g.b.SyncGroup(req)
	if err != nil || resp.Err != sarama.ErrNoError {
		g.t.Fatalf("sync of %s: %v %v", g.id, err, resp)
	}
}

func (g *groupConn) heartbeat(gen int32) sarama.KError {
	g.t.Helper()
	resp, err := g.b.Heartbeat(&sarama.HeartbeatRequest{Version: 2, GroupId: "g", GenerationId: gen, MemberId: g.id})
	if err != nil {
		g.t.Fatal(err)
	}
	return resp.Err
}

// TestJoiningMemberKeptAlive: a member that rejoins while the group waits
// for a member that died must be answered once the dead one's session
// runs out, even when that is past its own session timeout: it does not
// heartbeat while its join is held. kfake alone drops it unanswered.
func TestJoiningMemberKeptAlive(t *testing.T) {
	c, err := broker.Start(broker.Config{Topics: []string{"t"}}, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	a, b := dialMember(t, addr), dialMember(t, addr)

	first, err := a.join()
	if err != nil || first.Err != sarama.ErrNoError {
		t.Fatalf("first join: %v %v", err, first)
	}
	a.sync(first.GenerationId, a.id)
	bJoined := make(chan *sarama.JoinGroupResponse, 1)
	go func() {
		r, err := b.join()
		if err != nil {
			t.Error(err)
		}
		bJoined <- r
	}()
	for a.heartbeat(first.GenerationId) != sarama.ErrRebalanceInProgress {
		time.Sleep(20 * time.Millisecond)
	}
	second, err := a.join()
	if err != nil || second.Err != sarama.ErrNoError {
		t.Fatalf("second join: %v %v", err, second)
	}
	rb := <-bJoined
	gen := second.GenerationId
	a.sync(gen, a.id, b.id)
	b.sync(gen)

	// a heartbeats last and rejoins; b heartbeats once more and dies. a's
	// session runs out first.
	if e := a.heartbeat(gen); e != sarama.ErrNoError {
		t.Fatalf("heartbeat: %v (b joined with %v)", e, rb.Err)
	}
	rejoined := make(chan error, 1)
	var third *sarama.JoinGroupResponse
	start := time.Now()
	go func() {
		var err error
		third, err = a.join()
		rejoined <- err
	}()
	time.Sleep(300 * time.Millisecond)
	b.heartbeat(gen)
	if err := <-rejoined; err != nil {
		t.Fatalf("the rejoin was not answered (%v after it was sent): %v", time.Since(start).Round(time.Millisecond), err)
	}
	if third.Err != sarama.ErrNoError || len(third.Members) != 1 || third.Members[0].MemberId != a.id {
		t.Fatalf("rejoin: %v, members %v: want a alone", third.Err, third.Members)
	}
	t.Logf("rejoin answered after %v", time.Since(start).Round(time.Millisecond))
}
