// Package pipeline serves a task.Predictor from Kafka: a Worker is one
// member of a consumer group that reads requests from an input topic,
// batches them (by count, tokens and wait), has the predictor answer them
// and produces the answers to an output topic, and what cannot be answered,
// with its reason in the headers, to a dead-letter topic. It also holds the
// message schema (ParseRequest, Response) and the worker's operations
// endpoints and metrics.
//
// Delivery is at least once: an offset is committed only when the answer or
// dead letter of its message and of every message before it in its
// partition has been acknowledged by the brokers, so a crash makes at most
// Config.MaxInFlight requests answered twice. With Config.ExactlyOnce each
// batch's answers and offsets are one Kafka transaction instead.
//
// The model is wired in by the caller (cmd/bertstream passes a
// bert.Predictor); this package knows the model only through the task
// contract.
package pipeline
