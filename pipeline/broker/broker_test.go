package broker_test

import (
	"net"
	"strconv"
	"testing"

	"github.com/IBM/sarama"

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
