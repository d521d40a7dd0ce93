package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/bertstream/bertstream/pipeline/broker"
)

func init() {
	register(&command{name: "broker", summary: "run the embedded Kafka-protocol broker until SIGTERM", run: runBroker})
}

func runBroker(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("broker", "broker [--listen HOST:PORT] [--data-dir DIR] [flags]", stderr)
	var bc broker.Config
	fs.StringVar(&bc.Listen, "listen", "127.0.0.1:9092", "address to serve the Kafka protocol on (port 0: any free port)")
	fs.StringVar(&bc.Advertise, "advertise", "", "HOST:PORT clients are told to connect to (default: the listening address)")
	fs.StringVar(&bc.DataDir, "data-dir", "", "directory to keep topics, offsets and groups in across restarts (default: memory only)")
	fs.IntVar(&bc.Partitions, "partitions", 3, "partitions of each topic created on first use")
	topics := fs.String("topics", "", "comma-separated topics to create at start")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := envFlags(fs); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if bc.Partitions < 1 {
		return errors.New("--partitions must be at least 1")
	}
	if *topics != "" {
		bc.Topics = strings.Split(*topics, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	c, err := broker.Start(bc)
	if err != nil {
		return err
	}
	defer c.Close()
	// The address line is what a script (or a test) waits for; with port
	// 0 it is the only way to learn the port.
	if bc.Advertise != "" {
		fmt.Fprintf(stdout, "broker listening on %s, advertised as %s\n", bc.Listen, bc.Advertise)
	} else {
		fmt.Fprintf(stdout, "broker listening on %s\n", c.ListenAddrs()[0])
	}
	<-ctx.Done()
	fmt.Fprintln(stdout, "broker stopped")
	return nil
}
